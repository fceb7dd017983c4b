# The tensor-parallel tests again over Open MPI's TCP transport (--mca btl tcp,self), which ranks
# on two hosts use: the shared-memory transport forgives what TCP does not (a NULL send buffer
# once hung every TCP run at exit, see the step plan's shutdown). Seconds each.
set(_tcp_env "${GLM4V_MPI_ENV};OMP_NUM_THREADS=1;OMPI_MCA_btl=tcp,self")
set(_tcp_mpirun ${MPIEXEC_EXECUTABLE} --oversubscribe --bind-to none)
add_test(NAME tp2_golden_tiny_b_tcp
         COMMAND ${_tcp_mpirun} -np 2 $<TARGET_FILE:test_golden> ${GLM4V_TESTDATA}/glm4v-tiny-b)
add_test(NAME tp4_golden_tiny_a_tcp
         COMMAND ${_tcp_mpirun} -np 4 $<TARGET_FILE:test_golden> ${GLM4V_TESTDATA}/glm4v-tiny-a)
add_test(NAME tp2_bf16_model_tiny_b_tcp
         COMMAND ${_tcp_mpirun} -np 2 $<TARGET_FILE:test_model_backend>
                 ${GLM4V_TESTDATA}/glm4v-tiny-b --device cpu-bf16)
add_test(NAME tp2_comm_tcp
         COMMAND ${_tcp_mpirun} -np 2 $<TARGET_FILE:test_comm> --device cpu)
add_test(NAME tp2_comm_watchdog_tcp
         COMMAND ${_tcp_mpirun} -np 2 $<TARGET_FILE:test_comm_watchdog>)
# glm4v-run end to end: the answer, then every rank exits 0 (the hang this guards against)
add_test(NAME tp2_run_tcp
         COMMAND ${_tcp_mpirun} -np 2 $<TARGET_FILE:glm4v-run> --device cpu --tp 2
                 --model ${GLM4V_TESTDATA}/glm4v-tiny-b --input-ids 452,454,457,10,68,458
                 --max-new-tokens 4)
set_tests_properties(tp2_golden_tiny_b_tcp tp4_golden_tiny_a_tcp tp2_bf16_model_tiny_b_tcp
  tp2_comm_tcp tp2_comm_watchdog_tcp tp2_run_tcp PROPERTIES
  ENVIRONMENT "${_tcp_env}" TIMEOUT 60 LABELS tcp)
