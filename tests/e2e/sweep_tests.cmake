# glm4v-sweep: unit tests of its input parser and resume reader, and the end-to-end sweep test
# (real redis-server, mpirun glm4v-serve on the CPU backend, the tiny model).
# Included from tests/CMakeLists.txt: include(e2e/sweep_tests.cmake)
set(_sweep_tests ${CMAKE_CURRENT_LIST_DIR}/../client)
glm4v_add_test(test_sweep_input SOURCES ${_sweep_tests}/test_sweep_input.c LIBS glm4v_sweep)
glm4v_add_test(test_sweep_resume SOURCES ${_sweep_tests}/test_sweep_resume.c LIBS glm4v_sweep)

add_test(NAME e2e_sweep
         COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/test_sweep.sh ${CMAKE_BINARY_DIR}/bin
                 ${GLM4V_TESTDATA})
set_tests_properties(e2e_sweep PROPERTIES TIMEOUT 600 LABELS e2e RUN_SERIAL TRUE)
