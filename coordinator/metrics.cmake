# Prometheus metrics registry and its HTTP endpoint (libmicrohttpd). glm4v_coordinator must link
# PkgConfig::MICROHTTPD (found in the root CMakeLists.txt) and Threads::Threads.
list(APPEND GLM4V_COORDINATOR_SOURCES ${CMAKE_CURRENT_LIST_DIR}/metrics.c)
