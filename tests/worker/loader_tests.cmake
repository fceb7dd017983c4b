# loader tests: config.json, safetensors files, checkpoint folders.
glm4v_add_test(test_config SOURCES test_config.c LIBS glm4v_worker TIMEOUT 20 LABELS loader)
glm4v_add_test(test_safetensors SOURCES test_safetensors.c LIBS glm4v_worker TIMEOUT 20
               LABELS loader)
glm4v_add_test(test_checkpoint SOURCES test_checkpoint.c LIBS glm4v_worker TIMEOUT 20
               LABELS loader)

# The libFuzzer builds of tests/fuzz/fuzz_{safetensors,config}.c live in tests/fuzz (GLM4V_FUZZ=ON,
# scripts/fuzz.sh). Here the same harnesses get a small driver main that replays the golden files
# and deterministic mutations of them, so every ctest run exercises them.
foreach(_fuzz fuzz_safetensors fuzz_config)
  glm4v_add_test(${_fuzz}_replay SOURCES ${CMAKE_SOURCE_DIR}/tests/fuzz/${_fuzz}.c
                 LIBS glm4v_worker TIMEOUT 20 LABELS loader)
  target_compile_definitions(${_fuzz}_replay PRIVATE GLM4V_FUZZ_REPLAY_MAIN=1)
endforeach()

# Load-speed benchmark (not a test): scripts/bench-load.sh runs it.
add_executable(bench_load bench_load.c)
target_link_libraries(bench_load PRIVATE glm4v_worker)
