/* The communicator registry and what every implementation shares: choosing one by capability,
 * the watchdog's deadlines, the failed flag. */
#include "worker/comm.h"

#include <stdarg.h>
#include <stdio.h>

#include "kernels/backend_registry.h"

static const glm_comm_entry *const registry[] = {
    &glm_comm_local_entry,
    &glm_comm_mpi_entry,
#ifdef GLM4V_HAVE_CUDA
    &glm_comm_nccl_entry,
#endif
    NULL,
};

const glm_comm_entry *const *glm_comm_registry(void)
{
    return registry;
}

/* A communicator a group of size ranks on be can use: it serves that many ranks, the backend
 * pairs with it, and it takes the backend's memory. */
static bool fits(const glm_comm_entry *e, const glm_backend *be, int size)
{
    if (!(be->caps.collectives & e->collective)) return false;
    if (size > 1 && !e->caps.multi_rank) return false;
    if (size == 1 && e->caps.multi_rank) return false; /* one rank needs no transport at all */
    return be->host_memory || e->caps.device_buffers;
}

glm_status glm_comm_open(glm_backend *be, const void *mpi_comm, int size,
                         const glm_comm_options *opt, glm_comm **out, glm_error *err)
{
    *out = NULL;
    for (int i = 0; registry[i]; i++) {
        if (!fits(registry[i], be, size)) continue;
        glm_status st = registry[i]->create(be, mpi_comm, out, err);
        if (st == GLM_OK && opt) glm_comm_set_options(*out, opt);
        return st;
    }
    return glm_fail(err, GLM_ERR_UNSUPPORTED,
                    "no communicator in this build serves %d rank%s of the %s backend%s", size,
                    size == 1 ? "" : "s", be->name,
                    be->caps.collectives & GLM_COLLECTIVE_NCCL ? " (NCCL needs a CUDA build)" : "");
}

void glm_comm_set_options(glm_comm *comm, const glm_comm_options *opt)
{
    comm->opt = *opt;
    comm->working_plans = 0;
}

int glm_comm_timeout_ms(const glm_comm *comm)
{
    if (comm->working_plans < 2 && comm->opt.first_timeout_ms > 0)
        return comm->opt.first_timeout_ms;
    return comm->opt.timeout_ms;
}

void glm_comm_count_working_plan(glm_comm *comm)
{
    if (comm->working_plans < 2) comm->working_plans++;
}

glm_status glm_comm_fail(glm_comm *comm, glm_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(comm->err.msg, sizeof(comm->err.msg), fmt, ap);
    va_end(ap);
    comm->err.status = status;
    comm->failed = true;
    return status;
}

void glm_comm_destroy(glm_comm *comm)
{
    if (comm) comm->ops->destroy(comm);
}
