# Golden tests (one rank and tensor-parallel over CPU ranks) and glm4v-run's input checks.
set(_tiny_a ${GLM4V_TESTDATA}/glm4v-tiny-a)
set(_tiny_b ${GLM4V_TESTDATA}/glm4v-tiny-b)
set(_mpirun ${MPIEXEC_EXECUTABLE} --oversubscribe --bind-to none)

add_executable(test_golden test_golden.c)
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

add_test(NAME unit_kv_cache COMMAND test_kv_cache)
add_executable(test_kv_cache test_kv_cache.c)
target_link_libraries(test_kv_cache PRIVATE glm4v_testutil glm4v_coordinator glm4v_worker)

# glm4v-run rejects bad flags and inputs with a message and exit code 2; an impossible
# tensor-parallel split is refused before anything is loaded.
add_test(NAME run_cli_errors
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_run_cli.sh $<TARGET_FILE:glm4v-run>
                 ${_tiny_a} ${_tiny_b} "${MPIEXEC_EXECUTABLE}")
set_tests_properties(run_cli_errors PROPERTIES ENVIRONMENT "${GLM4V_MPI_ENV}" TIMEOUT 120)
