# glm4v-submit's attempt follower (client/stream_follow.c): unit test, also under valgrind.
glm4v_add_test(test_stream_follow SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_stream_follow.c
  LIBS glm4v_client)
find_program(VALGRIND valgrind)
if(VALGRIND)
  add_test(NAME memcheck_test_stream_follow
           COMMAND ${VALGRIND} --leak-check=full --errors-for-leak-kinds=definite
                   --error-exitcode=9 $<TARGET_FILE:test_stream_follow>)
  set_tests_properties(memcheck_test_stream_follow PROPERTIES LABELS memcheck TIMEOUT 120)
endif()
