/* The backend registry: every backend of this build, with what it can do, in one table
 * (kernels/backend.c). Callers find a backend by its --device word and then ask its capabilities
 * (glm_backend_caps, also in every created backend as be->caps), never compare names.
 *
 * Adding a backend: fill a glm_backend_ops table in kernels/<name>/ (one file per op family, as
 * cpu/ and cuda/ do); write its constructor and, beside it, its glm_backend_entry with honest caps
 * (test_kernels_backend_registry checks them against the ops you filled); list the entry in
 * backend.c's table. --device <name> then works in glm4v-run and glm4v-serve. Its collectives
 * bits choose the communicator (worker/comm.h): host memory pairs with MPI, device memory needs a
 * communicator of its own kind, registered the same way in worker/comm.c. */
#ifndef GLM4V_BACKEND_REGISTRY_H
#define GLM4V_BACKEND_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>

#include "kernels/ops.h"

/* What a backend is created with. */
typedef struct glm_backend_params {
    int device_index; /* the GPU (the rank's MPI local rank); ignored by CPU backends */
    int n_threads;    /* CPU threads, 0: OpenMP's default; ignored by GPU backends */
} glm_backend_params;

/* One registered backend. caps are what the build offers; a created backend's be->caps may drop
 * some at run time (GLM4V_NO_GRAPHS=1, no GPU of the right kind). */
typedef struct glm_backend_entry {
    const char *name;    /* the --device word */
    const char *summary; /* one line for --help and error messages */
    glm_status (*create)(const glm_backend_params *params, glm_backend **out, glm_error *err);
    glm_backend_caps caps;
} glm_backend_entry;

/* Every backend of this build, NULL-terminated. */
const glm_backend_entry *const *glm_backend_registry(void);
/* The backend registered as name, or NULL. */
const glm_backend_entry *glm_backend_find(const char *name);
/* Writes "cpu, cpu-bf16, cuda" (the registered names, for messages) into buf; returns buf. */
const char *glm_backend_names(char *buf, size_t cap);
glm_status glm_backend_create_from(const glm_backend_entry *entry, const glm_backend_params *params,
                                   glm_backend **out, glm_error *err);

/* Each backend's entry, defined beside its constructor. */
extern const glm_backend_entry glm_backend_cpu_entry;
extern const glm_backend_entry glm_backend_cpu_bf16_entry;
extern const glm_backend_entry glm_backend_cuda_entry;

#endif
