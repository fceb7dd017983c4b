/* The step watchdog (mpirun -np N test_comm_watchdog [--device cpu|cuda], N >= 2): deadlines of the
 * communicator's operations and of the step plan exchange, the peer named in the report, the
 * keepalive of an idle rank 0, and the communicator registry's choice. --device cpu (ctest) tests
 * the MPI communicator; --device cuda (2 GPUs, scripts/gpu-model-test.sh) the NCCL one.
 *
 * A "stalled" rank is one that sleeps outside every operation: it neither takes part nor answers
 * the watchdog's questions, as a SIGSTOPped process or a cut-off host would. Each case uses a
 * fresh communicator, since a timed-out one is failed for good. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kernels/backend_registry.h"
#include "tests/testutil.h"
#include "worker/comm.h"
#include "worker/step_plan.h"

/* wide enough that a loaded CI machine does not make a healthy operation miss the deadline */
#define DEADLINE_MS 1000
#define STALL_MS 3000

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static glm_comm *open_comm(glm_backend *be, int timeout_ms)
{
    MPI_Comm world = MPI_COMM_WORLD;
    glm_comm *c = NULL;
    glm_error err = {0};
    glm_comm_options opt = {.timeout_ms = timeout_ms, .first_timeout_ms = timeout_ms};
    int size = 0;
    MPI_Comm_size(world, &size);
    glm_status st = glm_comm_open(be, &world, size, &opt, &c, &err);
    CHECK_MSG(st == GLM_OK && c, "glm_comm_open: %s", err.msg);
    return c;
}

/* n floats of backend memory holding x (host or device alike). */
static void *to_backend(glm_backend *be, const float *x, size_t n)
{
    void *p = NULL;
    if (be->ops->alloc(be, n * sizeof(float), &p) != GLM_OK) return NULL;
    be->ops->upload(be, p, x, n * sizeof(float));
    return p;
}

/* All-reduce of x[n] through backend memory. */
static glm_status allreduce_host(glm_comm *c, float *x, size_t n)
{
    glm_backend *be = c->be;
    void *p = to_backend(be, x, n);
    if (!p) return GLM_ERR_NOMEM;
    glm_status st = c->ops->allreduce_sum(c, p, n, GLM_F32);
    if (st == GLM_OK) be->ops->download(be, x, p, n * sizeof(float));
    /* after a timeout the transport may still hold the buffer: leave it (the test ends soon) */
    if (st == GLM_OK) be->ops->free(be, p);
    return st;
}

/* A healthy group under a deadline: every operation completes and moves the right data. */
static void test_healthy(glm_backend *be, int rank)
{
    glm_comm *c = open_comm(be, DEADLINE_MS);
    if (!c) return;
    CHECK(c->caps.multi_rank);
    CHECK(c->caps.device_buffers == !be->host_memory);
    CHECK(c->caps.graph_capturable == !be->host_memory); /* NCCL: yes; MPI: no */
    float x[3] = {1.0f + rank, 2.0f, 3.0f};
    CHECK(allreduce_host(c, x, 3) == GLM_OK);
    float n = (float)c->size;
    CHECK(x[0] == n + n * (n - 1) / 2 && x[1] == 2 * n && x[2] == 3 * n);
    char msg[16] = "";
    if (rank == 0) snprintf(msg, sizeof(msg), "plan bytes");
    CHECK(c->ops->broadcast_host(c, msg, sizeof(msg), 0, "test") == GLM_OK);
    CHECK(strcmp(msg, "plan bytes") == 0);
    CHECK(c->ops->barrier(c) == GLM_OK && !c->failed);
    glm_comm_destroy(c);
}

/* The last rank stalls before an all-reduce: the others fail at the deadline, name the
 * all-reduce and the silent rank (and, with more than two ranks, say where the live ones are),
 * and every later operation fails at once. */
static void test_stalled_peer(glm_backend *be, int rank)
{
    glm_comm *c = open_comm(be, DEADLINE_MS);
    if (!c) return;
    float x[4] = {1, 1, 1, 1};
    int stalled = c->size - 1;
    char silent[48], live[48];
    snprintf(silent, sizeof(silent), "rank %d did not answer", stalled);
    snprintf(live, sizeof(live), "rank %d is in allreduce", rank == 1 ? 0 : 1);
    if (rank == stalled) {
        usleep(STALL_MS * 1000);
        /* its partner gave up: this one may complete against rank 0's pending request or time
         * out; either way it returns */
        (void)allreduce_host(c, x, 4);
    } else {
        double t0 = now_ms();
        glm_status st = allreduce_host(c, x, 4);
        double waited = now_ms() - t0;
        CHECK_MSG(st == GLM_ERR_TIMEOUT, "stalled peer: %s", glm_status_name(st));
        CHECK_MSG(waited >= DEADLINE_MS && waited < DEADLINE_MS + 2500,
                  "stalled peer: failed after %.0f ms", waited);
        CHECK_MSG(strstr(c->err.msg, "allreduce") && strstr(c->err.msg, silent),
                  "stalled peer: '%s'", c->err.msg);
        CHECK_MSG(c->size == 2 || strstr(c->err.msg, live), "live peer: '%s'", c->err.msg);
        CHECK(c->failed);
        if (rank == 0) printf("stalled peer reported as: %s\n", c->err.msg);
        t0 = now_ms();
        CHECK(c->ops->barrier(c) != GLM_OK);
        CHECK(now_ms() - t0 < 50);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    glm_comm_destroy(c);
}

/* A peer that is slow but arrives within the deadline fails nothing. */
static void test_slow_under_deadline(glm_backend *be, int rank)
{
    glm_comm *c = open_comm(be, DEADLINE_MS);
    if (!c) return;
    if (rank == 0) usleep(DEADLINE_MS * 1000 / 4);
    CHECK(c->ops->barrier(c) == GLM_OK);
    glm_comm_destroy(c);
}

/* The plan exchange: a worker waiting for a plan from a stalled rank 0 gives up at the deadline
 * naming rank 0; with keepalives from an idle rank 0 it waits as long as needed. */
static void test_plan_deadline(glm_backend *be, int rank)
{
    glm_error err = {0};
    glm_step_plan plan = {0};
    /* 1: idle rank 0 sending keepalives for 3 deadlines, then a real plan */
    glm_comm *c = open_comm(be, DEADLINE_MS);
    if (!c) return;
    if (rank == 0) {
        double t0 = now_ms();
        glm_status st = GLM_OK;
        while (!st && now_ms() - t0 < 3 * DEADLINE_MS) {
            st = glm_step_plan_keepalive(c, &err);
            usleep(5000);
        }
        CHECK_MSG(st == GLM_OK, "keepalive: %s", err.msg);
        CHECK(glm_step_plan_resize(&plan, 1, 2, 1, 1, 0, &err) == GLM_OK);
        for (int i = 0; i < 2; i++)
            plan.token_ids[i] = 40 + i, plan.positions[i] = i, plan.slots[i] = i,
            plan.image_rows[i] = -1;
        plan.q_start[0] = 0, plan.q_start[1] = 2, plan.ctx_len[0] = 2, plan.block_table[0] = 0;
        plan.logit_rows[0] = 1;
        CHECK(glm_step_plan_broadcast(&plan, 0, c, &err) == GLM_OK);
    } else {
        glm_status st = glm_step_plan_broadcast(&plan, 0, c, &err);
        CHECK_MSG(st == GLM_OK, "plan after keepalives: %s", err.msg);
        CHECK(plan.n_seqs == 1 && plan.n_tokens == 2 && plan.token_ids[1] == 41 &&
              plan.logit_rows[0] == 1 && !(plan.flags & GLM_STEP_KEEPALIVE));
    }
    glm_comm_destroy(c);
    MPI_Barrier(MPI_COMM_WORLD);

    /* 2: rank 0 stalls without keepalives: the worker gives up naming the plan and rank 0 */
    c = open_comm(be, DEADLINE_MS);
    if (!c) return;
    if (rank == 0) {
        usleep(STALL_MS * 1000);
    } else {
        double t0 = now_ms();
        glm_status st = glm_step_plan_broadcast(&plan, 0, c, &err);
        double waited = now_ms() - t0;
        CHECK_MSG(st == GLM_ERR_TIMEOUT, "stalled rank 0: %s", glm_status_name(st));
        CHECK_MSG(waited >= DEADLINE_MS && waited < DEADLINE_MS + 2500,
                  "stalled rank 0: failed after %.0f ms", waited);
        CHECK_MSG(strstr(err.msg, "step plan header") && strstr(err.msg, "rank 0 did not answer"),
                  "stalled rank 0: '%s'", err.msg);
        if (rank == 1) printf("stalled rank 0 reported as: %s\n", err.msg);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    glm_comm_destroy(c);
    glm_step_plan_free(&plan);
}

/* The registries: the CPU backends pair with local and MPI, one rank gets the local
 * communicator, and the entries' capabilities match what the created backends can do. */
static void test_registries(glm_backend *be)
{
    glm_error err = {0};
    glm_comm *one = NULL;
    MPI_Comm self = MPI_COMM_SELF;
    CHECK(glm_comm_open(be, &self, 1, NULL, &one, &err) == GLM_OK && one);
    if (one) {
        CHECK(!one->caps.multi_rank && one->caps.graph_capturable && one->size == 1);
        glm_comm_destroy(one);
    }
    const glm_comm_entry *const *comms = glm_comm_registry();
    int n = 0;
    for (; comms[n]; n++)
        CHECK(comms[n]->name && comms[n]->create && comms[n]->collective);
    CHECK(n >= 2);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank = 0, size = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    const char *device = argc == 3 && strcmp(argv[1], "--device") == 0 ? argv[2] : "cpu";
    if (size < 2 || (argc != 1 && argc != 3)) {
        if (rank == 0) fprintf(stderr, "usage: mpirun -np N>=2 test_comm_watchdog [--device D]\n");
        MPI_Finalize();
        return 2;
    }
    /* a p2p kernel left spinning by a timed-out all-reduce gives up after this long, so that the
     * test's teardown does not wait for the default 300 s */
    setenv("GLM4V_NCCL_TIMEOUT_S", "3", 0);
    glm_backend *be = NULL;
    glm_error err = {0};
    MPI_Comm node;
    int local_rank = 0;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &local_rank);
    MPI_Comm_free(&node);
    if (glm_backend_create(device, local_rank, &be, &err)) {
        fprintf(stderr, "rank %d: %s\n", rank, err.msg);
        MPI_Finalize();
        return 1;
    }
    test_registries(be);
    test_healthy(be, rank);
    test_slow_under_deadline(be, rank);
    test_stalled_peer(be, rank);
    test_plan_deadline(be, rank);
    glm_backend_destroy(be);

    int failures = test_failures, total = 0;
    MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    char suite[40];
    snprintf(suite, sizeof(suite), "comm watchdog (%s) rank %d", device, rank);
    int code = test_finish(suite);
    MPI_Finalize();
    return code || total ? 1 : 0;
}
