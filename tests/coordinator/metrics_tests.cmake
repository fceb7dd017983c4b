# Prometheus metrics: exposition text, tokens/s window, and the HTTP endpoint scraped over a real
# socket on 127.0.0.1 (ports picked by the kernel, so tests can run in parallel).
glm4v_add_test(test_metrics SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_metrics.c
  LIBS glm4v_coordinator Threads::Threads LABELS metrics TIMEOUT 60)
# Watchdog aborts recorded in Redis (a throwaway redis-server) and the time bound of a write.
glm4v_add_test(test_abort_record SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_abort_record.c
  LIBS glm4v_coordinator glm4v_redis_fixture LABELS "metrics;redis" TIMEOUT 30)
