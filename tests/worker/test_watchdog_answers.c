/* The step watchdog's peer questions as the NCCL communicator uses them, on CPU ranks (mpirun -np
 * 2): a GPU rank never waits in glm_watchdog_wait, it polls a CUDA event or NCCL's async state and
 * calls glm_watchdog_answer between polls (comm_nccl.c, answer_peers); a rank past its deadline
 * calls glm_watchdog_report (comm_nccl.c, fail_late). No GPU can run that path here, so this drives
 * the same calls from a plain loop:
 *   - a peer waiting "on the GPU" while answering is reported alive, in its operation;
 *   - both ranks past their deadline at once (a cut link seen from both sides): the first one
 *     answered names the other's operation;
 *   - a peer that answers nothing (stopped) is reported silent after the grace, and a second
 *     report does not reuse the buffers MPI still holds;
 *   - the grace follows the deadline within its bounds. */
#include <mpi.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tests/testutil.h"
#include "worker/comm_watchdog.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* What comm_nccl.c does while a collective runs on the GPU: poll, answer the peers every
 * millisecond or so, for ms. */
static void gpu_style_wait(glm_watchdog *w, double ms)
{
    double end = now_ms() + ms;
    while (now_ms() < end) {
        glm_watchdog_answer(w);
        usleep(1000);
    }
}

/* A barrier on its own communicator that the peer joins late: rank 0's "operation". */
static glm_wait_result late_barrier(glm_watchdog *w, MPI_Comm c, int timeout_ms, MPI_Request *req)
{
    glm_error why = {0};
    MPI_Ibarrier(c, req);
    return glm_watchdog_wait(w, req, timeout_ms, &why);
}

static void test_gpu_waiter_answers(int rank)
{
    glm_watchdog *w = NULL;
    glm_error err = {0};
    CHECK(glm_watchdog_create(MPI_COMM_WORLD, &w, &err) == GLM_OK);
    MPI_Comm c;
    MPI_Comm_dup(MPI_COMM_WORLD, &c);
    if (rank == 1) {
        glm_watchdog_enter(w, "nccl allreduce");
        gpu_style_wait(w, 1200); /* the GPU is slow; the rank is alive and says where it is */
        MPI_Request req;         /* a nonblocking collective matches only its nonblocking kind */
        MPI_Ibarrier(c, &req);
        MPI_Wait(&req, MPI_STATUS_IGNORE);
    } else {
        glm_watchdog_enter(w, "allreduce");
        MPI_Request req;
        CHECK(late_barrier(w, c, 300, &req) == GLM_WAIT_TIMEOUT);
        char buf[512];
        glm_watchdog_report(w, 500, buf, sizeof(buf));
        CHECK_MSG(strstr(buf, "rank 1 is in nccl allreduce (op 1)"), "report: '%s'", buf);
        printf("a GPU-waiting peer: %s\n", buf);
        MPI_Wait(&req, MPI_STATUS_IGNORE);
    }
    MPI_Comm_free(&c);
    MPI_Barrier(MPI_COMM_WORLD);
    glm_watchdog_destroy(w);
}

static void test_both_past_deadline(int rank)
{
    glm_watchdog *w = NULL;
    glm_error err = {0};
    CHECK(glm_watchdog_create(MPI_COMM_WORLD, &w, &err) == GLM_OK);
    glm_watchdog_enter(w, rank == 0 ? "step plan" : "nccl allgather");
    /* both give up at the same moment and ask, each answering questions while it waits for its
     * own answers; the first one answered returns (and, in a replica, aborts), so the other may
     * find it gone: at least one of them names the other's operation, and each says something
     * about the other */
    MPI_Barrier(MPI_COMM_WORLD);
    char buf[512];
    glm_watchdog_report(w, 1000, buf, sizeof(buf));
    const char *named = rank == 0 ? "rank 1 is in nccl allgather (op 1)" : "rank 0 is in step plan";
    const char *silent = rank == 0 ? "rank 1 did not answer" : "rank 0 did not answer";
    CHECK_MSG(strstr(buf, named) || strstr(buf, silent), "rank %d report: '%s'", rank, buf);
    int mine = strstr(buf, named) != NULL, any = 0;
    MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    CHECK_MSG(any, "neither rank was answered: rank %d says '%s'", rank, buf);
    MPI_Barrier(MPI_COMM_WORLD);
    glm_watchdog_destroy(w);
}

static void test_silent_peer(int rank)
{
    glm_watchdog *w = NULL;
    glm_error err = {0};
    CHECK(glm_watchdog_create(MPI_COMM_WORLD, &w, &err) == GLM_OK);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 1) {
        usleep(800 * 1000); /* stopped: answers nothing */
        glm_watchdog_enter(w, "woken");
        gpu_style_wait(w, 200); /* the question still pending is answered now */
    } else {
        char buf[512];
        double t0 = now_ms();
        glm_watchdog_report(w, 250, buf, sizeof(buf));
        double took = now_ms() - t0;
        CHECK_MSG(strstr(buf, "rank 1 did not answer in 250 ms"), "report: '%s'", buf);
        CHECK_MSG(took >= 250 && took < 250 + 1000, "silent peer: report took %.0f ms", took);
        glm_watchdog_report(w, 250, buf, sizeof(buf));
        CHECK_MSG(strcmp(buf, "the peers were asked already") == 0, "second report: '%s'", buf);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    /* rank 0's report left requests in flight (answered late): destroy keeps their buffers */
    glm_watchdog_destroy(w);
}

static void test_grace(void)
{
    CHECK(glm_watchdog_grace_ms(100) == 200);    /* floor */
    CHECK(glm_watchdog_grace_ms(2000) == 500);   /* a quarter of the deadline */
    CHECK(glm_watchdog_grace_ms(6000) == 1500);  /* the multi-host fault tests' */
    CHECK(glm_watchdog_grace_ms(30000) == 2000); /* cap: the default deadline */
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank = 0, size = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size != 2) {
        if (rank == 0) fprintf(stderr, "run with mpirun -np 2\n");
        MPI_Finalize();
        return 2;
    }
    test_grace();
    test_gpu_waiter_answers(rank);
    test_both_past_deadline(rank);
    test_silent_peer(rank);
    int failures = test_failures, all = 0;
    MPI_Allreduce(&failures, &all, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    int rc = test_finish(rank == 0 ? "test_watchdog_answers (rank 0)"
                                   : "test_watchdog_answers (rank 1)");
    MPI_Finalize();
    return all ? 1 : rc;
}
