# The step watchdog end to end (test_serve_watchdog.sh): an idle TP 2 replica stays up, a
# SIGSTOPped or killed rank ends its replica within the deadline and a spare replica finishes the
# job; about 35 s. The tcp variant runs the idle case and the first fault (about 20 s) over Open
# MPI's TCP transport, as ranks on two hosts do.
set(_e2e ${CMAKE_CURRENT_LIST_DIR})
add_test(NAME e2e_serve_watchdog
         COMMAND bash ${_e2e}/test_serve_watchdog.sh ${CMAKE_BINARY_DIR}/bin ${GLM4V_TESTDATA})
add_test(NAME e2e_serve_watchdog_tcp
         COMMAND bash ${_e2e}/test_serve_watchdog.sh ${CMAKE_BINARY_DIR}/bin ${GLM4V_TESTDATA})
set_tests_properties(e2e_serve_watchdog e2e_serve_watchdog_tcp PROPERTIES
  TIMEOUT 300 LABELS "e2e;watchdog" RUN_SERIAL TRUE)
set_tests_properties(e2e_serve_watchdog_tcp PROPERTIES
  ENVIRONMENT "E2E_MPI_BTL=tcp,self;E2E_WATCHDOG_QUICK=1")
