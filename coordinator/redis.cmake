# Redis job protocol: protobuf codec, Result JSON, connection helpers, Lua scripts, server queue.
# Built as its own small library so the clients (glm4v-submit, glm4v-sweep) and the protocol tests
# do not pull in the tokenizer and image stacks; glm4v_coordinator links it, so the serve side sees
# these sources as part of the coordinator exactly as if they were in GLM4V_COORDINATOR_SOURCES.
add_library(glm4v_redis STATIC
  ${CMAKE_CURRENT_LIST_DIR}/job_codec.c
  ${CMAKE_CURRENT_LIST_DIR}/result_codec.c
  ${CMAKE_CURRENT_LIST_DIR}/result_json.c
  ${CMAKE_CURRENT_LIST_DIR}/redis_conn.c
  ${CMAKE_CURRENT_LIST_DIR}/redis_scripts.c
  ${CMAKE_CURRENT_LIST_DIR}/redis_queue.c)
target_link_libraries(glm4v_redis PUBLIC glm4v_common glm4v_proto PkgConfig::HIREDIS
  PkgConfig::CJSON m)
# glm4v_coordinator is created after this file is included, so the link is deferred to the end of
# this directory.
function(_glm4v_link_redis_into_coordinator)
  if(TARGET glm4v_coordinator)
    target_link_libraries(glm4v_coordinator PUBLIC glm4v_redis)
  endif()
endfunction()
cmake_language(DEFER CALL _glm4v_link_redis_into_coordinator)
