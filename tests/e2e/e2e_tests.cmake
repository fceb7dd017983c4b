# End to end: real redis-server on a free loopback port, real mpirun, the CPU backend, the tiny
# model; every test starts and stops its own servers.
set(_e2e ${CMAKE_CURRENT_LIST_DIR})
foreach(t serve_batching serve_faults serve_bad_input serve_overflow serve_load serve_misuse
    serve_attribution sweep_misuse serve_prefix serve_multi_image serve_wire)
  add_test(NAME e2e_${t}
           COMMAND bash ${_e2e}/test_${t}.sh ${CMAKE_BINARY_DIR}/bin ${GLM4V_TESTDATA})
  set_tests_properties(e2e_${t} PROPERTIES TIMEOUT 600 LABELS e2e RUN_SERIAL TRUE)
endforeach()
include(${_e2e}/multihost/multihost_tests.cmake)
include(${_e2e}/../client/stream_follow_tests.cmake)
