glm4v_add_test(test_scheduler SOURCES test_scheduler.c LIBS glm4v_coordinator)
glm4v_add_test(test_prep_pool SOURCES test_prep_pool.c LIBS glm4v_coordinator)
find_program(VALGRIND valgrind)
if(VALGRIND)
  add_test(NAME memcheck_test_prep_pool
           COMMAND ${VALGRIND} --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=9
                   $<TARGET_FILE:test_prep_pool>)
  set_tests_properties(memcheck_test_prep_pool PROPERTIES LABELS memcheck TIMEOUT 300
                       ENVIRONMENT "GLM4V_TESTDATA=${GLM4V_TESTDATA}")
endif()
glm4v_add_test(test_scheduler_prefix SOURCES test_scheduler_prefix.c LIBS glm4v_coordinator)
glm4v_add_test(test_scheduler_random SOURCES test_scheduler_random.c LIBS glm4v_coordinator)
glm4v_add_test(test_scheduler_limits SOURCES test_scheduler_limits.c LIBS glm4v_coordinator)
