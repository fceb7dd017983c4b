#include "coordinator/serve/server_version.h"

/* The version string servers publish in their liveness key and results. */
const char *glm4v_version(void)
{
    return "glm4v-cluster 0.1.0";
}
