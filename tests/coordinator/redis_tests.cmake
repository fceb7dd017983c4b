# redis tests: the job codec needs nothing; the queue tests start their own redis-server
# (Debian's, on 127.0.0.1, a free port, a temp dir) and stop it, even when they fail.
set(_redis_dir ${CMAKE_CURRENT_LIST_DIR})
add_library(glm4v_redis_fixture STATIC ${_redis_dir}/redis_fixture.c)
target_link_libraries(glm4v_redis_fixture PUBLIC glm4v_testutil PkgConfig::HIREDIS)
# The queue and client steps the queue tests share (submit, finish, read the out stream).
add_library(glm4v_redis_jobs STATIC ${_redis_dir}/redis_jobs.c)
target_link_libraries(glm4v_redis_jobs PUBLIC glm4v_redis_fixture glm4v_client)

glm4v_add_test(test_job_codec SOURCES ${_redis_dir}/test_job_codec.c LIBS glm4v_queue
  LABELS redis TIMEOUT 30)
glm4v_add_test(test_redis_queue SOURCES ${_redis_dir}/test_redis_queue.c
  LIBS glm4v_client glm4v_redis_jobs LABELS redis TIMEOUT 30)
glm4v_add_test(test_redis_restart SOURCES ${_redis_dir}/test_redis_restart.c
  LIBS glm4v_client glm4v_redis_jobs LABELS redis TIMEOUT 30)
glm4v_add_test(test_redis_submit SOURCES ${_redis_dir}/test_redis_submit.c
  LIBS glm4v_client glm4v_redis_fixture ARGS $<TARGET_FILE:glm4v-submit> LABELS redis TIMEOUT 30)
add_dependencies(test_redis_submit glm4v-submit)
glm4v_add_test(test_redis_identity SOURCES ${_redis_dir}/test_redis_identity.c
  LIBS glm4v_client glm4v_redis_jobs LABELS redis TIMEOUT 30)
glm4v_add_test(test_redis_pressure SOURCES ${_redis_dir}/test_redis_pressure.c
  LIBS glm4v_client glm4v_redis_jobs Threads::Threads LABELS redis TIMEOUT 30)
# the serve side of a stream entry's id field: a Job naming another id is refused (no Redis needed)
glm4v_add_test(test_redis_entry_id SOURCES ${_redis_dir}/test_redis_entry_id.c LIBS glm4v_coordinator
  TIMEOUT 30)
# a held entry's lifecycle: a stale replica's touch, id-less entries, jobs a read could not return
glm4v_add_test(test_redis_lifecycle SOURCES ${_redis_dir}/test_redis_lifecycle.c
  LIBS glm4v_client glm4v_redis_jobs LABELS redis TIMEOUT 30)
# out of memory on demand inside the queue (the test's __wrap_malloc)
target_link_options(test_redis_lifecycle PRIVATE -Wl,--wrap=malloc)
