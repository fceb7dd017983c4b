# Image preprocessing: decode (JPEG, PNG, WebP) -> RGB -> Pillow bicubic resize -> CLIP normalize.
list(APPEND GLM4V_COORDINATOR_SOURCES
  image_decode.c
  image_decode_jpeg.c
  image_decode_png.c
  image_decode_webp.c
  image_resize.c
  image_preprocess.c)
# The resize passes split rows over OpenMP threads when OpenMP is there. glm4v_coordinator is
# created after this file is included, so the link is deferred to the end of this directory.
if(OpenMP_C_FOUND)
  cmake_language(DEFER CALL target_link_libraries glm4v_coordinator PUBLIC OpenMP::OpenMP_C)
endif()
