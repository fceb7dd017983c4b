# The tensor-parallel tests again over Open MPI's TCP transport (--mca btl tcp,self), which ranks
# on two hosts use: the shared-memory transport forgives what TCP does not (a NULL send buffer
# once hung every TCP run at exit, see the step plan's shutdown). About a second each.
set(_tcp_env "${GLM4V_MPI_ENV};OMP_NUM_THREADS=1;OMPI_MCA_btl=tcp,self")
set(_tcp_mpirun ${MPIEXEC_EXECUTABLE} --oversubscribe --bind-to none)
set(_tcp_tests)
foreach(model a b)
  set(_dir ${GLM4V_TESTDATA}/glm4v-tiny-${model})
  foreach(np 2 4)
    add_test(NAME tp${np}_golden_tiny_${model}_tcp
             COMMAND ${_tcp_mpirun} -np ${np} $<TARGET_FILE:test_golden> ${_dir})
    list(APPEND _tcp_tests tp${np}_golden_tiny_${model}_tcp)
  endforeach()
  add_test(NAME tp2_bf16_model_tiny_${model}_tcp
           COMMAND ${_tcp_mpirun} -np 2 $<TARGET_FILE:test_model_backend> ${_dir} --device cpu-bf16)
  list(APPEND _tcp_tests tp2_bf16_model_tiny_${model}_tcp)
endforeach()
add_test(NAME tp2_comm_tcp COMMAND ${_tcp_mpirun} -np 2 $<TARGET_FILE:test_comm> --device cpu)
add_test(NAME tp2_comm_watchdog_tcp COMMAND ${_tcp_mpirun} -np 2 $<TARGET_FILE:test_comm_watchdog>)
# glm4v-run end to end: the answer, then every rank exits 0 (the hang this guards against)
add_test(NAME tp2_run_tcp
         COMMAND ${_tcp_mpirun} -np 2 $<TARGET_FILE:glm4v-run> --device cpu --tp 2
                 --model ${GLM4V_TESTDATA}/glm4v-tiny-b --input-ids 452,454,457,10,68,458
                 --max-new-tokens 4)
list(APPEND _tcp_tests tp2_comm_tcp tp2_comm_watchdog_tcp tp2_run_tcp)
set_tests_properties(${_tcp_tests} PROPERTIES ENVIRONMENT "${_tcp_env}" TIMEOUT 60 LABELS tcp)
set_tests_properties(tp2_comm_watchdog_tcp PROPERTIES RUN_SERIAL TRUE) # timed deadlines
