# Codec tests of coordinator/queue/ that need no Redis. test_result_text plays an old reader and
# writer of Chunk and Result (glm4v_text_v1.proto: text as `string`, generated here at build time)
# against today's codec (text as `bytes`).
set(_queue_dir ${CMAKE_CURRENT_LIST_DIR})
set(_v1_gen ${CMAKE_CURRENT_BINARY_DIR}/gen)
set(_v1_c ${_v1_gen}/tests/coordinator/queue/glm4v_text_v1.pb-c.c)
set(_v1_h ${_v1_gen}/tests/coordinator/queue/glm4v_text_v1.pb-c.h)
add_custom_command(
  OUTPUT ${_v1_c} ${_v1_h}
  COMMAND ${CMAKE_COMMAND} -E make_directory ${_v1_gen}
  COMMAND ${PROTOC_C} --proto_path=${CMAKE_SOURCE_DIR} --c_out=${_v1_gen}
          ${_queue_dir}/glm4v_text_v1.proto
  DEPENDS ${_queue_dir}/glm4v_text_v1.proto
  COMMENT "protoc-c tests/coordinator/queue/glm4v_text_v1.proto"
  VERBATIM)
glm4v_add_test(test_result_text SOURCES ${_queue_dir}/test_result_text.c ${_v1_c}
  LIBS glm4v_queue LABELS redis TIMEOUT 30)
target_include_directories(test_result_text PRIVATE ${_v1_gen})
