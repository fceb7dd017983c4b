# Several images in one conversation (issue 22): the golden-multi-image cases through glm4v-run's
# path at TP 1 and 2 (logits within 1e-3 of the float64 goldens at every position, greedy ids
# equal, prefill chunks cutting inside and between images).
add_executable(test_golden_multi test_golden_multi.c model_test_frame.c golden_util.c)
target_link_libraries(test_golden_multi PRIVATE glm4v_testutil glm4v_coordinator glm4v_worker)
foreach(model a b)
  add_test(NAME golden_multi_tiny_${model}
           COMMAND test_golden_multi ${GLM4V_TESTDATA}/glm4v-tiny-${model})
  add_test(NAME tp2_golden_multi_tiny_${model}
           COMMAND ${MPIEXEC_EXECUTABLE} --oversubscribe --bind-to none -np 2
                   $<TARGET_FILE:test_golden_multi> ${GLM4V_TESTDATA}/glm4v-tiny-${model})
  set_tests_properties(golden_multi_tiny_${model} tp2_golden_multi_tiny_${model} PROPERTIES
    ENVIRONMENT "${GLM4V_MPI_ENV};OMP_NUM_THREADS=1" TIMEOUT 120 LABELS multi_image)
endforeach()
# and under valgrind (no leak, no invalid access of ours), as the one-image goldens
find_program(VALGRIND valgrind)
if(VALGRIND)
  add_test(NAME memcheck_golden_multi_tiny_a
           COMMAND ${VALGRIND} --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=9
                   --suppressions=${CMAKE_SOURCE_DIR}/tests/valgrind-mpi.supp
                   $<TARGET_FILE:test_golden_multi> ${GLM4V_TESTDATA}/glm4v-tiny-a)
  set_tests_properties(memcheck_golden_multi_tiny_a PROPERTIES LABELS "memcheck;multi_image"
    TIMEOUT 300)
endif()
# glm4v-run's several-image flags: --pixels [n,...] and repeated, --messages, their errors, TP 2
add_test(NAME run_multi_image_cli
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_run_multi_cli.sh $<TARGET_FILE:glm4v-run>
                 ${GLM4V_TESTDATA}/glm4v-tiny-a "${MPIEXEC_EXECUTABLE}")
set_tests_properties(run_multi_image_cli PROPERTIES ENVIRONMENT "${GLM4V_MPI_ENV};OMP_NUM_THREADS=1"
  TIMEOUT 120 LABELS multi_image)
