# Golden tests (one rank and tensor-parallel over CPU ranks) and glm4v-run's input checks.
set(_tiny_a ${GLM4V_TESTDATA}/glm4v-tiny-a)
set(_tiny_b ${GLM4V_TESTDATA}/glm4v-tiny-b)
set(_mpirun ${MPIEXEC_EXECUTABLE} --oversubscribe --bind-to none)

add_executable(test_golden test_golden.c model_test_frame.c golden_util.c)
target_link_libraries(test_golden PRIVATE glm4v_testutil glm4v_coordinator glm4v_worker)

foreach(model a b)
  add_test(NAME golden_tiny_${model} COMMAND test_golden ${_tiny_${model}})
  foreach(np 2 4)
    add_test(NAME tp${np}_golden_tiny_${model}
             COMMAND ${_mpirun} -np ${np} $<TARGET_FILE:test_golden> ${_tiny_${model}})
    set_tests_properties(tp${np}_golden_tiny_${model} PROPERTIES
      ENVIRONMENT "${GLM4V_MPI_ENV};OMP_NUM_THREADS=1" TIMEOUT 120)
  endforeach()
endforeach()

# The bf16 design's accuracy without a GPU: the model on the cpu-bf16 backend (the CUDA path's
# rounding) against fp32, with the GPU test's bounds (logits and vision rel L2 < 1e-2, greedy ids
# where the margin is clear), at TP 1 and 2. On a GPU the same program runs with --device cuda
# (tests/cuda, scripts/gpu-model-test.sh).
add_executable(test_model_backend test_model_backend.c model_test_frame.c)
target_link_libraries(test_model_backend PRIVATE glm4v_testutil glm4v_coordinator glm4v_worker)
foreach(model a b)
  add_test(NAME bf16_model_tiny_${model}
           COMMAND test_model_backend ${_tiny_${model}} --device cpu-bf16)
  add_test(NAME tp2_bf16_model_tiny_${model}
           COMMAND ${_mpirun} -np 2 $<TARGET_FILE:test_model_backend> ${_tiny_${model}}
                   --device cpu-bf16)
  # the fp16 storage option (--dtype f16) through the same path: 3 more significand bits
  add_test(NAME f16_model_tiny_${model}
           COMMAND test_model_backend ${_tiny_${model}} --device cpu-bf16 --dtype f16)
  set_tests_properties(bf16_model_tiny_${model} tp2_bf16_model_tiny_${model}
    f16_model_tiny_${model} PROPERTIES
    ENVIRONMENT "${GLM4V_MPI_ENV};OMP_NUM_THREADS=1" TIMEOUT 120)
endforeach()

add_test(NAME unit_kv_cache COMMAND test_kv_cache)
add_executable(test_kv_cache test_kv_cache.c)
target_link_libraries(test_kv_cache PRIVATE glm4v_testutil glm4v_coordinator glm4v_worker)

# glm4v-run rejects bad flags and inputs with a message and exit code 2; an impossible
# tensor-parallel split is refused before anything is loaded.
add_test(NAME run_cli_errors
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_run_cli.sh $<TARGET_FILE:glm4v-run>
                 ${_tiny_a} ${_tiny_b} "${MPIEXEC_EXECUTABLE}")
set_tests_properties(run_cli_errors PROPERTIES ENVIRONMENT "${GLM4V_MPI_ENV}" TIMEOUT 120)

# Memory: the golden tests and the loader tests under valgrind (no leak, no invalid access of
# ours; Open MPI's own start-up allocations are suppressed by tests/valgrind-mpi.supp).
find_program(VALGRIND valgrind)
if(VALGRIND)
  set(_vg ${VALGRIND} --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=9
      --suppressions=${CMAKE_SOURCE_DIR}/tests/valgrind-mpi.supp)
  foreach(model a b)
    add_test(NAME memcheck_golden_tiny_${model}
             COMMAND ${_vg} $<TARGET_FILE:test_golden> ${_tiny_${model}})
  endforeach()
  foreach(t test_config test_safetensors test_checkpoint test_kv_cache)
    add_test(NAME memcheck_${t} COMMAND ${_vg} $<TARGET_FILE:${t}>)
  endforeach()
  set_tests_properties(memcheck_golden_tiny_a memcheck_golden_tiny_b memcheck_test_config
    memcheck_test_safetensors memcheck_test_checkpoint memcheck_test_kv_cache PROPERTIES
    LABELS memcheck TIMEOUT 300 ENVIRONMENT "GLM4V_TESTDATA=${GLM4V_TESTDATA}")
else()
  message(WARNING "valgrind not found: the memcheck tests are not registered (scripts/setup.sh installs it)")
endif()
