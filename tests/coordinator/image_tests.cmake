# image tests
glm4v_add_test(test_image_errors SOURCES test_image_errors.c LIBS glm4v_coordinator LABELS image)
glm4v_add_test(test_image_resize SOURCES test_image_resize.c LIBS glm4v_coordinator LABELS image)

# Pillow comparison: a Python driver (Debian's python3 with python3-pil and python3-numpy) makes
# the images and references and pipes the bytes through test_image_tool.
add_executable(test_image_tool test_image_tool.c)
target_link_libraries(test_image_tool PRIVATE glm4v_coordinator)
find_program(GLM4V_PILLOW_PYTHON NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)
if(GLM4V_PILLOW_PYTHON)
  add_test(NAME test_image_pillow
           COMMAND ${GLM4V_PILLOW_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/pillow/compare_pillow.py
                   --tool $<TARGET_FILE:test_image_tool> --count 200)
  set_tests_properties(test_image_pillow PROPERTIES LABELS image TIMEOUT 300)
endif()

# Benchmark helper for scripts/bench-image.sh (not a test).
add_executable(test_image_bench test_image_bench.c)
target_link_libraries(test_image_bench PRIVATE glm4v_coordinator glm4v_testutil)
