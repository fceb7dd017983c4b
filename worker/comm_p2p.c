/* Setup and teardown of the peer-to-peer all-reduce (see comm_p2p.h): one IPC-shared region per
 * rank, exchanged over MPI, plus the per-block epoch counters and the host-mapped failure record
 * of kernels/cuda/allreduce_p2p.cu.
 *
 * Every step that may fail on one rank alone (a CUDA call) is followed by an agreement over MPI,
 * so that all ranks end with the same answer: p2p on everywhere, or off everywhere with the
 * failing rank's reason. A CUDA failure here is never an error: NCCL still works. */
#include "worker/comm_p2p.h"

#include "kernels/allreduce_p2p.h"
#include "worker/mpi_check.h"

#include <cuda_runtime.h>
#include <mpi.h>

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BUS_ID_LEN 32
/* regions are whole 2 MiB pages, so that the IPC handle of a region maps exactly that region */
#define REGION_ALIGN ((size_t)2 << 20)
#define MAX_BYTES_LIMIT ((size_t)64 << 20)

struct glm_p2p {
    MPI_Comm comm;     /* private duplicate, for the agreements and the teardown barrier */
    glm_p2p_args args; /* what every launch passes to the kernel */
    void *own_region;  /* args.regions[rank], allocated here */
    glm_p2p_failure *failure_host;
    double timeout_s;
    int failed; /* a kernel gave up on a peer: no more launches, no teardown barrier */
};

/* Records a failed setup call as the reason p2p is off, and clears CUDA's last error so that no
 * later cudaGetLastError() (the backend's launch checks) blames a kernel for it. */
static bool cuda_setup_ok(cudaError_t e, const char *call, int rank, glm_error *why)
{
    if (e == cudaSuccess) return true;
    cudaGetLastError();
    glm_fail(why, GLM_ERR_COMM, "rank %d: %s: %s", rank, call, cudaGetErrorString(e));
    return false;
}

/* Collective: *all_ok = every rank's ok. When some rank failed, every rank's why receives the
 * reason of the lowest failed rank, so all ranks report the same thing. */
static glm_status agree(MPI_Comm mc, bool ok, glm_error *why, int *all_ok, glm_error *err)
{
    int mine = ok ? INT_MAX : 0, first_failed = INT_MAX, rank = 0;
    GLM_MPI_CHECK(err, MPI_Comm_rank(mc, &rank));
    if (!ok) mine = rank;
    GLM_MPI_CHECK(err, MPI_Allreduce(&mine, &first_failed, 1, MPI_INT, MPI_MIN, mc));
    *all_ok = first_failed == INT_MAX;
    if (*all_ok) return GLM_OK;
    GLM_MPI_CHECK(err, MPI_Bcast(why->msg, (int)sizeof(why->msg), MPI_CHAR, first_failed, mc));
    why->status = GLM_ERR_COMM;
    return GLM_OK;
}

/* This rank's view of eligibility (every rank calls it: it holds collectives). */
static glm_status check_eligible(MPI_Comm mc, int rank, int size, bool *ok, glm_error *why,
                                 glm_error *err)
{
    *ok = false;
    MPI_Comm node;
    int node_size = 0;
    GLM_MPI_CHECK(err, MPI_Comm_split_type(mc, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node));
    int rc = MPI_Comm_size(node, &node_size);
    MPI_Comm_free(&node);
    GLM_MPI_CHECK(err, rc);
    if (size < 2 || size > GLM_P2P_MAX_RANKS) {
        glm_fail(why, GLM_ERR_UNSUPPORTED, "%d ranks (the p2p path takes 2 to %d)", size,
                 GLM_P2P_MAX_RANKS);
        return GLM_OK; /* the same on every rank, so no rank enters the all-gather below */
    }

    /* GPUs are named by PCI bus id: device ordinals differ between processes */
    int dev = -1;
    char bus[BUS_ID_LEN] = "";
    if (!cuda_setup_ok(cudaGetDevice(&dev), "cudaGetDevice", rank, why) ||
        !cuda_setup_ok(cudaDeviceGetPCIBusId(bus, BUS_ID_LEN, dev), "cudaDeviceGetPCIBusId", rank,
                       why))
        bus[0] = '\0';
    char buses[GLM_P2P_MAX_RANKS][BUS_ID_LEN];
    GLM_MPI_CHECK(err, MPI_Allgather(bus, BUS_ID_LEN, MPI_CHAR, buses, BUS_ID_LEN, MPI_CHAR, mc));

    const char *env = getenv("GLM4V_P2P_ALLREDUCE");
    if (env && strcmp(env, "0") == 0) {
        glm_fail(why, GLM_ERR_UNSUPPORTED, "GLM4V_P2P_ALLREDUCE=0 on rank %d", rank);
        return GLM_OK;
    }
    if (node_size != size) {
        glm_fail(why, GLM_ERR_UNSUPPORTED, "the %d ranks span more than one node", size);
        return GLM_OK;
    }
    if (!bus[0]) return GLM_OK; /* why already says which call failed */
    for (int p = 0; p < size; p++) {
        if (p == rank) continue;
        int peer_dev = -1, can = 0;
        buses[p][BUS_ID_LEN - 1] = '\0';
        if (!cuda_setup_ok(cudaDeviceGetByPCIBusId(&peer_dev, buses[p]),
                           "cudaDeviceGetByPCIBusId (a peer's GPU is not visible)", rank, why))
            return GLM_OK;
        if (peer_dev == dev) {
            /* two processes time-slice one GPU: a block spinning on a flag would wait for a
             * kernel that cannot run beside it */
            glm_fail(why, GLM_ERR_UNSUPPORTED, "ranks %d and %d share GPU %s", rank, p, bus);
            return GLM_OK;
        }
        if (!cuda_setup_ok(cudaDeviceCanAccessPeer(&can, dev, peer_dev), "cudaDeviceCanAccessPeer",
                           rank, why))
            return GLM_OK;
        if (!can) {
            glm_fail(why, GLM_ERR_UNSUPPORTED, "GPU %s (rank %d) has no peer access to GPU %s", bus,
                     rank, buses[p]);
            return GLM_OK;
        }
    }
    *ok = true;
    return GLM_OK;
}

/* $GLM4V_P2P_MAX_BYTES rounded up to 16 bytes, capped; the default when unset or unreadable. */
static size_t max_bytes_from_env(void)
{
    const char *env = getenv("GLM4V_P2P_MAX_BYTES");
    if (!env || !*env) return GLM_P2P_DEFAULT_MAX_BYTES;
    char *end = NULL;
    unsigned long long v = strtoull(env, &end, 10);
    if (*end != '\0') return GLM_P2P_DEFAULT_MAX_BYTES;
    if (v > MAX_BYTES_LIMIT) v = MAX_BYTES_LIMIT;
    return ((size_t)v + 15) & ~(size_t)15;
}

/* Allocates and zeroes this rank's region, epochs and failure record, and exports the region. */
static bool setup_local(glm_p2p *p2p, cudaIpcMemHandle_t *handle, glm_error *why)
{
    glm_p2p_args *a = &p2p->args;
    size_t bytes = glm_p2p_region_bytes(a->size, a->max_bytes);
    bytes = (bytes + REGION_ALIGN - 1) / REGION_ALIGN * REGION_ALIGN;
    const size_t epoch_bytes = GLM_P2P_BLOCKS * sizeof(uint32_t);
    const int r = a->rank;
    bool ok = cuda_setup_ok(cudaMalloc(&p2p->own_region, bytes), "cudaMalloc", r, why);
    ok = ok && cuda_setup_ok(cudaMemset(p2p->own_region, 0, bytes), "cudaMemset", r, why);
    ok = ok && cuda_setup_ok(cudaMalloc((void **)&a->epochs, epoch_bytes), "cudaMalloc", r, why);
    ok = ok && cuda_setup_ok(cudaMemset(a->epochs, 0, epoch_bytes), "cudaMemset", r, why);
    ok = ok && cuda_setup_ok(cudaHostAlloc((void **)&p2p->failure_host, sizeof(glm_p2p_failure),
                                           cudaHostAllocMapped),
                             "cudaHostAlloc", r, why);
    if (ok) memset((void *)p2p->failure_host, 0, sizeof(glm_p2p_failure));
    ok = ok && cuda_setup_ok(cudaHostGetDevicePointer((void **)&a->failure, p2p->failure_host, 0),
                             "cudaHostGetDevicePointer", r, why);
    ok = ok &&
         cuda_setup_ok(cudaIpcGetMemHandle(handle, p2p->own_region), "cudaIpcGetMemHandle", r, why);
    /* zeroed before any peer may write: the agreement after this is the barrier */
    ok = ok && cuda_setup_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize", r, why);
    a->regions[r] = p2p->own_region;
    return ok;
}

static bool open_peers(glm_p2p *p2p, cudaIpcMemHandle_t *handles, glm_error *why)
{
    glm_p2p_args *a = &p2p->args;
    for (int p = 0; p < a->size; p++) {
        if (p == a->rank) continue;
        /* the lazy flag enables peer access to that GPU as the mapping needs it (and tolerates it
         * being enabled already), so no cudaDeviceEnablePeerAccess of our own is needed */
        if (!cuda_setup_ok(
                cudaIpcOpenMemHandle(&a->regions[p], handles[p], cudaIpcMemLazyEnablePeerAccess),
                "cudaIpcOpenMemHandle", a->rank, why)) {
            a->regions[p] = NULL;
            return false;
        }
    }
    return true;
}

/* Collective part of the creation once the group is eligible. */
static glm_status setup_shared(glm_p2p *p2p, glm_error *why, int *all_ok, glm_error *err)
{
    cudaIpcMemHandle_t handles[GLM_P2P_MAX_RANKS];
    memset(handles, 0, sizeof(handles));
    bool ok = setup_local(p2p, &handles[p2p->args.rank], why);
    glm_status st = agree(p2p->comm, ok, why, all_ok, err);
    if (st != GLM_OK || !*all_ok) return st;
    GLM_MPI_CHECK(err, MPI_Allgather(MPI_IN_PLACE, 0, MPI_BYTE, handles, (int)sizeof(handles[0]),
                                     MPI_BYTE, p2p->comm));
    ok = open_peers(p2p, handles, why);
    return agree(p2p->comm, ok, why, all_ok, err);
}

glm_status glm_p2p_create(const void *mpi_comm, double timeout_s, glm_p2p **out, glm_error *why_off,
                          glm_error *err)
{
    *out = NULL;
    memset(why_off, 0, sizeof(*why_off));
    MPI_Comm mc = *(const MPI_Comm *)mpi_comm;
    int rank = 0, size = 1, all_ok = 0;
    GLM_MPI_CHECK(err, MPI_Comm_rank(mc, &rank));
    GLM_MPI_CHECK(err, MPI_Comm_size(mc, &size));
    bool ok = false;
    glm_status st = check_eligible(mc, rank, size, &ok, why_off, err);
    if (st == GLM_OK) st = agree(mc, ok, why_off, &all_ok, err);
    if (st != GLM_OK || !all_ok) return st;

    /* every rank must take the same path for the same message: the smallest limit wins */
    unsigned long long mine = max_bytes_from_env(), limit = 0;
    GLM_MPI_CHECK(err, MPI_Allreduce(&mine, &limit, 1, MPI_UNSIGNED_LONG_LONG, MPI_MIN, mc));
    if (limit == 0) {
        glm_fail(why_off, GLM_ERR_UNSUPPORTED, "GLM4V_P2P_MAX_BYTES=0");
        return GLM_OK;
    }

    glm_p2p *p2p = calloc(1, sizeof(*p2p));
    ok = p2p != NULL;
    if (!ok) glm_fail(why_off, GLM_ERR_NOMEM, "rank %d: out of host memory", rank);
    st = agree(mc, ok, why_off, &all_ok, err);
    if (st != GLM_OK || !all_ok) {
        free(p2p);
        return st;
    }
    p2p->comm = MPI_COMM_NULL;
    p2p->timeout_s = timeout_s;
    p2p->args.rank = rank;
    p2p->args.size = size;
    p2p->args.max_bytes = (size_t)limit;
    p2p->args.timeout_ns = (uint64_t)(timeout_s * 1e9);
    if (MPI_Comm_dup(mc, &p2p->comm) != MPI_SUCCESS) {
        free(p2p);
        return glm_fail(err, GLM_ERR_COMM, "p2p all-reduce: MPI_Comm_dup failed");
    }
    st = setup_shared(p2p, why_off, &all_ok, err);
    if (st != GLM_OK || !all_ok) {
        glm_p2p_destroy(p2p, st == GLM_OK);
        return st;
    }
    *out = p2p;
    return GLM_OK;
}

bool glm_p2p_takes(const glm_p2p *p2p, size_t count, glm_dtype dtype)
{
    if (!p2p || (dtype != GLM_BF16 && dtype != GLM_F16 && dtype != GLM_F32)) return false;
    return count <= p2p->args.max_bytes / glm_dtype_size(dtype);
}

size_t glm_p2p_max_bytes(const glm_p2p *p2p)
{
    return p2p ? p2p->args.max_bytes : 0;
}

glm_status glm_p2p_check(glm_p2p *p2p, glm_error *err)
{
    if (p2p->failure_host->failed) {
        p2p->failed = 1;
        return glm_fail(err, GLM_ERR_COMM,
                        "p2p all-reduce on rank %d: peer %u gave no data in %.0f s", p2p->args.rank,
                        (unsigned)p2p->failure_host->peer, p2p->timeout_s);
    }
    return GLM_OK;
}

glm_status glm_p2p_allreduce(glm_p2p *p2p, void *data, size_t count, glm_dtype dtype, void *stream,
                             glm_error *err)
{
    glm_status st = glm_p2p_check(p2p, err);
    if (st != GLM_OK || count == 0) return st;
    if (!glm_p2p_takes(p2p, count, dtype))
        return glm_fail(err, GLM_ERR_INVALID_ARG, "p2p all-reduce: %zu x %s is not for this path",
                        count, glm_dtype_name(dtype));
    return glm_p2p_allreduce_launch(&p2p->args, data, count, dtype, stream, err);
}

/* A barrier that gives up after timeout_s, so a dead peer cannot hang the teardown. */
static bool barrier_within(MPI_Comm mc, double timeout_s)
{
    MPI_Request req;
    if (MPI_Ibarrier(mc, &req) != MPI_SUCCESS) return false;
    struct timespec pause = {0, 100 * 1000};
    for (double waited = 0; waited < timeout_s; waited += 1e-4) {
        int done = 0;
        if (MPI_Test(&req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) return false;
        if (done) return true;
        nanosleep(&pause, NULL);
    }
    return false; /* the request stays pending: harmless, the process is shutting down */
}

void glm_p2p_destroy(glm_p2p *p2p, bool peers_ok)
{
    if (!p2p) return;
    glm_p2p_args *a = &p2p->args;
    cudaDeviceSynchronize(); /* no kernel of ours still reads a mapping */
    for (int p = 0; p < a->size; p++)
        if (p != a->rank && a->regions[p]) cudaIpcCloseMemHandle(a->regions[p]);
    /* freeing our region while a peer still maps it is undefined behaviour: wait until every
     * peer has closed its mapping; if one cannot say so (dead, or failed), leak the region */
    bool unmapped = peers_ok && !p2p->failed && p2p->comm != MPI_COMM_NULL &&
                    barrier_within(p2p->comm, p2p->timeout_s);
    if (unmapped && p2p->own_region) cudaFree(p2p->own_region);
    if (a->epochs) cudaFree(a->epochs);
    if (p2p->failure_host) cudaFreeHost((void *)p2p->failure_host);
    cudaGetLastError(); /* a failed release must not be blamed on a later kernel */
    if (p2p->comm != MPI_COMM_NULL) MPI_Comm_free(&p2p->comm);
    free(p2p);
}
