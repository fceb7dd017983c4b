/* The backend registry (kernels/backend_registry.h): every entry is complete and found by its
 * name, an unknown name fails with the list of what there is, and each backend this machine can
 * create carries its entry's capabilities, which agree with the ops it fills (a capability a
 * caller relies on must never be missing its op, and an op must not hide behind a false one). */
#include <string.h>

#include "kernels/backend_registry.h"
#include "tests/testutil.h"

static void check_caps_match_ops(const glm_backend_entry *e, const glm_backend *be)
{
    const glm_backend_ops *ops = be->ops;
    bool has_graphs = ops->graph_begin && ops->graph_end && ops->graph_replay;
    CHECK_MSG(!be->caps.graphs || has_graphs, "%s: graphs without graph ops", e->name);
    CHECK_MSG(e->caps.graphs == has_graphs, "%s: entry graphs %d, ops %d", e->name, e->caps.graphs,
              has_graphs);
    CHECK_MSG(be->caps.device_sampler == (ops->sample != NULL), "%s: device sampler", e->name);
    CHECK_MSG((be->caps.storage_types != 0) == (ops->set_storage != NULL), "%s: storage types",
              e->name);
    CHECK_MSG(be->caps.weight_formats & GLM_WEIGHT_FORMATS_16BIT, "%s: 16-bit weights", e->name);
    CHECK_MSG(be->caps.collectives & GLM_COLLECTIVE_LOCAL, "%s: one rank", e->name);
    /* host memory pairs with MPI, device memory with NCCL */
    if (be->host_memory)
        CHECK_MSG(be->caps.collectives & GLM_COLLECTIVE_MPI, "%s: host memory, no MPI", e->name);
    else
        CHECK_MSG(be->caps.collectives & GLM_COLLECTIVE_NCCL, "%s: device memory, no NCCL",
                  e->name);
    CHECK_MSG(be->caps.storage_types == e->caps.storage_types &&
                  be->caps.device_sampler == e->caps.device_sampler &&
                  be->caps.collectives == e->caps.collectives,
              "%s: the created backend's caps differ from its entry's", e->name);
}

static void check_storage(const glm_backend_entry *e, glm_backend *be)
{
    glm_error err = {0};
    glm_status want = (be->caps.storage_types & (1u << GLM_F16)) ? GLM_OK : GLM_ERR_UNSUPPORTED;
    glm_status st = glm_backend_set_storage(be, GLM_F16, &err);
    CHECK_MSG(st == want, "%s: set_storage f16 gave %s", e->name, glm_status_name(st));
    CHECK(glm_backend_set_storage(be, GLM_F32, &err) == GLM_ERR_INVALID_ARG);
}

int main(void)
{
    const glm_backend_entry *const *all = glm_backend_registry();
    int n = 0, created = 0;
    for (; all[n]; n++) {
        const glm_backend_entry *e = all[n];
        CHECK(e->name && e->summary && e->create);
        CHECK(glm_backend_find(e->name) == e);
        glm_backend *be = NULL;
        glm_error err = {0};
        glm_backend_params params = {.device_index = 0, .n_threads = 1};
        if (glm_backend_create_from(e, &params, &be, &err) != GLM_OK) {
            /* a GPU backend on a machine without that GPU: a clear message, no backend */
            CHECK_MSG(be == NULL && err.msg[0], "%s: failed without a message", e->name);
            printf("%s: not on this machine: %s\n", e->name, err.msg);
            continue;
        }
        created++;
        CHECK(strcmp(be->name, e->name) == 0);
        check_caps_match_ops(e, be);
        check_storage(e, be);
        glm_backend_destroy(be);
    }
    CHECK(n >= 2 && created >= 2); /* cpu and cpu-bf16 always */
    CHECK(glm_backend_find("cpu") && glm_backend_find("cpu-bf16"));
    CHECK(glm_backend_find("tpu") == NULL && glm_backend_find(NULL) == NULL);

    glm_backend *be = (glm_backend *)1;
    glm_error err = {0};
    CHECK(glm_backend_create("tpu", 0, &be, &err) == GLM_ERR_INVALID_ARG && be == NULL);
    CHECK_MSG(strstr(err.msg, "'tpu'") && strstr(err.msg, "cpu, cpu-bf16"), "'%s'", err.msg);
    char names[8];
    CHECK(strlen(glm_backend_names(names, sizeof(names))) < sizeof(names));
    return test_finish("test_kernels_backend_registry");
}
