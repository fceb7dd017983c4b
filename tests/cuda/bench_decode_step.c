/* Full-size GLM-4V-9B decode step time (random weights, one GPU), with and without the decode
 * CUDA graphs of worker/decoder.c. Not part of ctest; built and run by hand on the GPU machine:
 *   bench_decode_step [config dir] [ctx]   (default configs/glm-4v-9b, 1024)
 * Prints the median wall time of glm_model_step (logits kept on the device, as the server does)
 * followed by a stream synchronize, for batch 1, 8, 32, 64, graphs off and on. The KV cache is
 * not prefilled: attention reads whatever the cache holds (timing only). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/ops.h"
#include "worker/comm.h"
#include "worker/config.h"
#include "worker/model.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

#define DIE(...) do { fprintf(stderr, __VA_ARGS__); fprintf(stderr, "\n"); exit(1); } while (0)

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "configs/glm-4v-9b";
    int ctx = argc > 2 ? atoi(argv[2]) : 1024;
    glm_error err;
    glm_model_config cfg;
    if (glm_config_load(dir, &cfg, &err)) DIE("config: %s", err.msg);
    glm_backend *be;
    if (glm_backend_cuda_create(0, &be, &err)) DIE("cuda: %s", err.msg);
    glm_comm *comm;
    if (glm_comm_local_create(be, &comm, &err)) DIE("comm: %s", err.msg);
    int batches[] = {1, 8, 32, 64}, nb = 4, max_b = 64;
    glm_model_options opt;
    glm_model_options_default(&opt);
    opt.max_seqs = max_b;
    opt.max_step_tokens = 256;
    opt.max_images = 1;
    opt.image_pool_slots = 1;
    opt.use_random_weights = 1;
    opt.random_seed = 7;
    int bs = 16, per_seq = (ctx + 64 + bs - 1) / bs;
    opt.kv_block_size = bs;
    opt.kv_blocks = max_b * per_seq + 1;
    glm_model *m;
    double t0 = now_ms();
    if (glm_model_create(&cfg, &opt, NULL, be, comm, &m, &err)) DIE("model: %s", err.msg);
    be->ops->synchronize(be);
    char desc[256];
    glm_model_describe_memory(m, desc, sizeof(desc));
    printf("model created in %.0f ms: %s\n", now_ms() - t0, desc);
    int mbps = glm_model_max_blocks_per_seq(m);
    printf("ctx %d, max_blocks_per_seq %d (graph capacity %d keys)\n", ctx, mbps, mbps * bs);
    for (int bi = 0; bi < nb; bi++) {
        int B = batches[bi];
        glm_step_plan plan = {0};
        int32_t *arr = calloc((size_t)8 * (B + 1) + (size_t)B * mbps, sizeof(int32_t));
        plan.token_ids = arr, plan.positions = arr + B, plan.slots = arr + 2 * B;
        plan.image_rows = arr + 3 * B, plan.q_start = arr + 4 * B, plan.ctx_len = arr + 5 * B + 1;
        plan.logit_rows = arr + 6 * B + 1, plan.block_table = arr + 8 * (B + 1);
        plan.n_seqs = B, plan.n_tokens = B, plan.n_logit_rows = B, plan.n_images = 0;
        plan.max_blocks_per_seq = mbps;
        plan.q_start[0] = 0;
        for (int s = 0; s < B; s++) {
            plan.token_ids[s] = 100 + s;
            plan.positions[s] = ctx - 1;
            plan.image_rows[s] = -1;
            plan.q_start[s + 1] = s + 1;
            plan.ctx_len[s] = ctx;
            plan.logit_rows[s] = s;
            for (int b = 0; b < mbps; b++)
                plan.block_table[(size_t)s * mbps + b] = b < per_seq ? s * per_seq + b : 0;
            int j = ctx - 1;
            plan.slots[s] = plan.block_table[(size_t)s * mbps + j / bs] * bs + j % bs;
        }
        for (int graphs = 0; graphs < 2; graphs++) {
            setenv("GLM4V_NO_GRAPHS", graphs ? "0" : "1", 1);
            double t[30];
            for (int i = 0; i < 5; i++)
                if (glm_model_step(m, &plan, NULL, &err)) DIE("step: %s", err.msg);
            be->ops->synchronize(be);
            for (int i = 0; i < 30; i++) {
                double a = now_ms();
                if (glm_model_step(m, &plan, NULL, &err)) DIE("step: %s", err.msg);
                be->ops->synchronize(be);
                t[i] = now_ms() - a;
            }
            qsort(t, 30, sizeof(double), cmp_d);
            printf("decode step batch %3d ctx %d graphs %-3s: median %.3f ms (min %.3f), %.0f tokens/s\n",
                   B, ctx, graphs ? "on" : "off", t[15], t[0], B * 1e3 / t[15]);
        }
        /* graphs and the direct path compute the same logits */
        glm_sample_params sp = {.temperature = 0.f, .top_k = 0, .top_p = 1.f, .seed = 1};
        glm_sample_params *sps = malloc(sizeof(*sps) * B);
        int32_t *ids0 = malloc(4 * B), *ids1 = malloc(4 * B);
        for (int s = 0; s < B; s++) sps[s] = sp;
        setenv("GLM4V_NO_GRAPHS", "1", 1);
        glm_step_output out0 = {.sample = sps, .ids_host = ids0};
        glm_step_output out1 = {.sample = sps, .ids_host = ids1};
        if (glm_model_step(m, &plan, &out0, &err)) DIE("check: %s", err.msg);
        setenv("GLM4V_NO_GRAPHS", "0", 1);
        if (glm_model_step(m, &plan, &out1, &err)) DIE("check: %s", err.msg);
        int same = 0;
        for (int s = 0; s < B; s++) same += ids0[s] == ids1[s];
        printf("  greedy ids equal with and without graphs: %d / %d\n", same, B);
        free(sps), free(ids0), free(ids1);
        free(arr);
    }
    glm_model_destroy(m);
    comm->ops->destroy(comm);
    glm_backend_destroy(be);
    return 0;
}
