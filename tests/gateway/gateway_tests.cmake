# glm4v-gateway: unit tests of its pieces, and end to end against real redis-server and
# glm4v-serve replicas on CPU ranks with the tiny model (the openai npm client drives one of them;
# scripts/setup.sh installs it with npm ci into tests/gateway/node).
set(_gw ${CMAKE_CURRENT_LIST_DIR})
if(NOT TARGET glm4v_gateway)
  # configured without libcurl: say so in the test run instead of dropping the tests silently
  add_test(NAME gateway_not_built COMMAND sh -c
           "echo 'glm4v-gateway was not built: libcurl missing (scripts/setup.sh)' >&2; exit 1")
  set_tests_properties(gateway_not_built PROPERTIES LABELS gateway)
  return()
endif()
glm4v_add_test(test_gw_follow SOURCES ${_gw}/test_gw_follow.c LIBS glm4v_gateway LABELS gateway)
glm4v_add_test(test_gw_request SOURCES ${_gw}/test_gw_request.c LIBS glm4v_gateway LABELS gateway)
glm4v_add_test(test_gw_openai SOURCES ${_gw}/test_gw_openai.c LIBS glm4v_gateway LABELS gateway)
# a server older than the gateway, played by test_gateway_review.sh (a tool, not a test)
add_executable(gw_old_server ${_gw}/gw_old_server.c)
target_link_libraries(gw_old_server PRIVATE glm4v_gateway)
foreach(t openai errors failover review fixes)
  add_test(NAME gateway_${t}
           COMMAND bash ${_gw}/test_gateway_${t}.sh ${CMAKE_BINARY_DIR}/bin ${GLM4V_TESTDATA})
  set_tests_properties(gateway_${t} PROPERTIES TIMEOUT 120 LABELS "gateway;e2e" RUN_SERIAL TRUE)
endforeach()
