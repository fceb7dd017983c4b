# glm4v-sweep: unit tests of its input parser and resume reader (also under valgrind), and the
# end-to-end sweep test (real redis-server, mpirun glm4v-serve on the CPU backend, the tiny model).
# Included from tests/CMakeLists.txt: include(e2e/sweep_tests.cmake)
set(_sweep_tests ${CMAKE_CURRENT_LIST_DIR}/../client)
foreach(t test_sweep_input test_sweep_resume test_sweep_identity)
  glm4v_add_test(${t} SOURCES ${_sweep_tests}/${t}.c LIBS glm4v_sweep)
endforeach()

find_program(VALGRIND valgrind)
if(VALGRIND)
  foreach(t test_sweep_input test_sweep_resume)
    add_test(NAME memcheck_${t}
             COMMAND ${VALGRIND} --leak-check=full --errors-for-leak-kinds=definite
                     --error-exitcode=9 $<TARGET_FILE:${t}>)
    set_tests_properties(memcheck_${t} PROPERTIES LABELS memcheck TIMEOUT 300)
  endforeach()
endif()

add_test(NAME e2e_sweep
         COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/test_sweep.sh ${CMAKE_BINARY_DIR}/bin
                 ${GLM4V_TESTDATA})
set_tests_properties(e2e_sweep PROPERTIES TIMEOUT 600 LABELS e2e RUN_SERIAL TRUE)
