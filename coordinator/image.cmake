# Image preprocessing: decode (JPEG, PNG, WebP) -> RGB -> Pillow bicubic resize -> CLIP normalize.
list(APPEND GLM4V_COORDINATOR_SOURCES
  image_decode.c
  image_decode_jpeg.c
  image_decode_png.c
  image_decode_webp.c
  image_resize.c
  image_preprocess.c)
