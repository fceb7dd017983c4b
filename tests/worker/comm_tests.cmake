# The communicators under mpirun (test_comm.c): the MPI one on CPU ranks here, at TP 2 and 4.
# With GLM4V_CUDA the same program also runs `--device cuda` (NCCL and its p2p all-reduce, with a
# timing table); that needs 2 or more GPUs, so scripts/gpu-model-test.sh runs it, not ctest.
set(_comm_sources test_comm.c)
if(GLM4V_CUDA)
  list(APPEND _comm_sources test_comm_cuda.c)
endif()
add_executable(test_comm ${_comm_sources})
target_link_libraries(test_comm PRIVATE glm4v_testutil glm4v_worker)
foreach(np 2 4)
  add_test(NAME tp${np}_comm
           COMMAND ${MPIEXEC_EXECUTABLE} --oversubscribe --bind-to none -np ${np}
                   $<TARGET_FILE:test_comm> --device cpu)
  set_tests_properties(tp${np}_comm PROPERTIES
    ENVIRONMENT "${GLM4V_MPI_ENV};OMP_NUM_THREADS=1" TIMEOUT 120 LABELS comm)
endforeach()

# The step watchdog on CPU ranks: deadlines, the peer named in the report, keepalives, the
# registries (test_comm_watchdog.c); a few seconds, most of it the stalls it provokes.
add_executable(test_comm_watchdog test_comm_watchdog.c)
target_link_libraries(test_comm_watchdog PRIVATE glm4v_testutil glm4v_worker)
# At TP 4 the report also says where the live peers are.
foreach(np 2 4)
  add_test(NAME tp${np}_comm_watchdog
           COMMAND ${MPIEXEC_EXECUTABLE} --oversubscribe --bind-to none -np ${np}
                   $<TARGET_FILE:test_comm_watchdog>)
  # RUN_SERIAL: its deadlines are timed, so it runs alone
  set_tests_properties(tp${np}_comm_watchdog PROPERTIES
    ENVIRONMENT "${GLM4V_MPI_ENV};OMP_NUM_THREADS=1" TIMEOUT 60 LABELS comm RUN_SERIAL TRUE)
endforeach()

# A worker that cannot run a plan breaks its group, so its replica ends at once (test_worker_loop.c).
add_executable(test_worker_loop test_worker_loop.c)
target_link_libraries(test_worker_loop PRIVATE glm4v_testutil glm4v_worker)
add_test(NAME tp2_worker_loop
         COMMAND ${MPIEXEC_EXECUTABLE} --oversubscribe --bind-to none -np 2
                 $<TARGET_FILE:test_worker_loop> ${GLM4V_TESTDATA}/glm4v-tiny-a)
set_tests_properties(tp2_worker_loop PROPERTIES
  ENVIRONMENT "${GLM4V_MPI_ENV};OMP_NUM_THREADS=1" TIMEOUT 60 LABELS comm)

# The watchdog's peer questions as the NCCL communicator uses them (answers from a polling loop,
# reports from both sides at once, a silent peer), on CPU ranks: the part of the NCCL watchdog
# that runs without GPUs (test_watchdog_answers.c); about 3 s.
add_executable(test_watchdog_answers test_watchdog_answers.c)
target_link_libraries(test_watchdog_answers PRIVATE glm4v_testutil glm4v_worker)
add_test(NAME tp2_watchdog_answers
         COMMAND ${MPIEXEC_EXECUTABLE} --oversubscribe --bind-to none -np 2
                 $<TARGET_FILE:test_watchdog_answers>)
set_tests_properties(tp2_watchdog_answers PROPERTIES
  ENVIRONMENT "${GLM4V_MPI_ENV};OMP_NUM_THREADS=1" TIMEOUT 60 LABELS comm RUN_SERIAL TRUE)
