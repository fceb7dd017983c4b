# Multi-host tests: fake hosts in network namespaces (scripts/netns-hosts.sh), ranks launched through
# the netns agent, TCP between them; needs root (CI runs as root; elsewhere they skip with 77).
# One at a time: they share the kit's test prefix and subnet.
set(_mh ${CMAKE_CURRENT_LIST_DIR})
foreach(t netns_kit tp_hosts)
  add_test(NAME multihost_${t}
           COMMAND bash ${_mh}/test_${t}.sh ${CMAKE_BINARY_DIR}/bin ${GLM4V_TESTDATA})
  set_tests_properties(multihost_${t} PROPERTIES TIMEOUT 180 LABELS "e2e;multihost"
                       RUN_SERIAL TRUE RESOURCE_LOCK glm4v_netns SKIP_RETURN_CODE 77)
endforeach()
# One fault per test (kill, linkdown, rediscut, sigstop, hang): 15 to 40 s each.
foreach(f kill linkdown rediscut sigstop hang)
  add_test(NAME multihost_fault_${f}
           COMMAND bash ${_mh}/test_faults.sh ${f} ${CMAKE_BINARY_DIR}/bin ${GLM4V_TESTDATA})
  set_tests_properties(multihost_fault_${f} PROPERTIES TIMEOUT 180 LABELS "e2e;multihost"
                       RUN_SERIAL TRUE RESOURCE_LOCK glm4v_netns SKIP_RETURN_CODE 77)
endforeach()
