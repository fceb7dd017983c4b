# loader tests: config.json, safetensors files, checkpoint folders.
glm4v_add_test(test_config SOURCES test_config.c LIBS glm4v_worker TIMEOUT 20 LABELS loader)
glm4v_add_test(test_safetensors SOURCES test_safetensors.c LIBS glm4v_worker TIMEOUT 20
               LABELS loader)
glm4v_add_test(test_checkpoint SOURCES test_checkpoint.c LIBS glm4v_worker TIMEOUT 20
               LABELS loader)

# Fuzz harnesses. With clang and -DGLM4V_FUZZ=ON they link libFuzzer; otherwise each gets a small
# driver main that replays the golden files plus deterministic mutations of them, run as a ctest.
option(GLM4V_FUZZ "Build libFuzzer harnesses (needs clang)" OFF)
foreach(_fuzz fuzz_safetensors fuzz_config)
  if(GLM4V_FUZZ AND CMAKE_C_COMPILER_ID MATCHES "Clang")
    add_executable(${_fuzz} ${CMAKE_SOURCE_DIR}/tests/fuzz/${_fuzz}.c)
    target_compile_options(${_fuzz} PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_options(${_fuzz} PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_libraries(${_fuzz} PRIVATE glm4v_worker)
  else()
    glm4v_add_test(${_fuzz}_replay SOURCES ${CMAKE_SOURCE_DIR}/tests/fuzz/${_fuzz}.c
                   LIBS glm4v_worker TIMEOUT 20 LABELS loader)
    target_compile_definitions(${_fuzz}_replay PRIVATE GLM4V_FUZZ_REPLAY_MAIN=1)
  endif()
endforeach()

# Load-speed benchmark (not a test): scripts/bench-load.sh runs it.
add_executable(bench_load bench_load.c)
target_link_libraries(bench_load PRIVATE glm4v_worker)
