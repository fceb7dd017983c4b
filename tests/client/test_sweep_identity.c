/* glm4v-sweep's job-prefix derivation and image-root confinement (client/sweep_identity.h):
 * the prefix is stable for one sweep and differs between sweeps; image paths that leave the root
 * by "..", an absolute path, a symlink, or a sibling directory sharing the root's name as a
 * prefix are refused; paths inside (through symlinks that stay inside too) are resolved. */
#include "client/sweep_args.h"
#include "client/sweep_identity.h"
#include "tests/testutil.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <getopt.h>
#include <unistd.h>

static void touch(const char *path)
{
    FILE *f = fopen(path, "w");
    if (f) {
        fputs("x", f);
        fclose(f);
    }
}

static void test_prefix(const char *dir)
{
    char in1[PATH_MAX], in2[PATH_MAX];
    snprintf(in1, sizeof in1, "%s/a.jsonl", dir);
    snprintf(in2, sizeof in2, "%s/b.jsonl", dir);
    touch(in1);
    touch(in2);
    char *argv1[] = {"glm4v-sweep", "--in", in1, "--out", "o.jsonl", NULL};
    char *argv2[] = {"glm4v-sweep", "--in", in2, "--out", "o.jsonl", NULL};
    char *argv3[] = {"glm4v-sweep", "--in", in1, "--out", "o.jsonl", "--temperature", "0.7", NULL};
    sweep_args a1, a2, a3, a1b;
    optind = 0; /* getopt keeps its position between parses */
    CHECK(sweep_args_parse(5, argv1, &a1) == 0 && a1.job_prefix == NULL);
    optind = 0;
    CHECK(sweep_args_parse(5, argv2, &a2) == 0);
    optind = 0;
    CHECK(sweep_args_parse(7, argv3, &a3) == 0);
    optind = 0;
    CHECK(sweep_args_parse(5, argv1, &a1b) == 0);
    char p1[32], p2[32], p3[32], p1b[32];
    glm_error err = {0};
    CHECK(sweep_derive_job_prefix(&a1, p1, sizeof p1, &err) == GLM_OK);
    CHECK(sweep_derive_job_prefix(&a2, p2, sizeof p2, &err) == GLM_OK);
    CHECK(sweep_derive_job_prefix(&a3, p3, sizeof p3, &err) == GLM_OK);
    CHECK(sweep_derive_job_prefix(&a1b, p1b, sizeof p1b, &err) == GLM_OK);
    CHECK(strlen(p1) == SWEEP_DERIVED_PREFIX_LEN && p1[0] == 's' && p1[13] == ':');
    CHECK(strcmp(p1, p1b) == 0); /* the same sweep again: a resume finds its jobs */
    CHECK(strcmp(p1, p2) != 0);  /* another input */
    CHECK(strcmp(p1, p3) != 0);  /* other sampling */
    char missing[PATH_MAX];
    snprintf(missing, sizeof missing, "%s/none.jsonl", dir);
    a1b.in = missing;
    CHECK(sweep_derive_job_prefix(&a1b, p1b, sizeof p1b, &err) == GLM_ERR_IO);
}

static void test_confinement(const char *dir)
{
    char root[PATH_MAX], sibling[PATH_MAX], path[PATH_MAX], real_root[PATH_MAX];
    snprintf(root, sizeof root, "%s/img", dir);
    snprintf(sibling, sizeof sibling, "%s/img2", dir); /* shares "img" as a string prefix */
    mkdir(root, 0755);
    mkdir(sibling, 0755);
    snprintf(path, sizeof path, "%s/sub", root);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/sub/in.png", root);
    touch(path);
    snprintf(path, sizeof path, "%s/out.png", sibling);
    touch(path);
    snprintf(path, sizeof path, "%s/out-link.png", root);
    CHECK(symlink("../img2/out.png", path) == 0);
    snprintf(path, sizeof path, "%s/in-link.png", root);
    CHECK(symlink("sub/in.png", path) == 0);
    CHECK(realpath(root, real_root) != NULL);

    char resolved[PATH_MAX];
    glm_error err = {0};
    CHECK(sweep_image_resolve(real_root, root, "sub/in.png", resolved, sizeof resolved, &err) ==
          GLM_OK);
    CHECK(strstr(resolved, "/img/sub/in.png") != NULL);
    CHECK(sweep_image_resolve(real_root, root, "in-link.png", resolved, sizeof resolved, &err) ==
          GLM_OK);
    CHECK(sweep_image_resolve(real_root, root, "sub/../sub/in.png", resolved, sizeof resolved,
                              &err) == GLM_OK);
    char abs_in[PATH_MAX];
    snprintf(abs_in, sizeof abs_in, "%s/sub/in.png", real_root);
    CHECK(sweep_image_resolve(real_root, root, abs_in, resolved, sizeof resolved, &err) == GLM_OK);

    CHECK(sweep_image_resolve(real_root, root, "../img2/out.png", resolved, sizeof resolved,
                              &err) == GLM_ERR_INVALID_ARG);
    CHECK(strstr(err.msg, "outside --image-root") != NULL);
    CHECK(sweep_image_resolve(real_root, root, "out-link.png", resolved, sizeof resolved, &err) ==
          GLM_ERR_INVALID_ARG);
    snprintf(path, sizeof path, "%s/out.png", sibling);
    CHECK(sweep_image_resolve(real_root, root, path, resolved, sizeof resolved, &err) ==
          GLM_ERR_INVALID_ARG);
    CHECK(sweep_image_resolve(real_root, root, "/etc/passwd", resolved, sizeof resolved, &err) ==
          GLM_ERR_INVALID_ARG);
    CHECK(sweep_image_resolve(real_root, root, "missing.png", resolved, sizeof resolved, &err) ==
          GLM_ERR_IO);
}

int main(void)
{
    char *dir = test_mkdtemp();
    CHECK(dir != NULL);
    if (!dir) return test_finish("test_sweep_identity");
    test_prefix(dir);
    test_confinement(dir);
    test_rmtree(dir);
    free(dir);
    return test_finish("test_sweep_identity");
}
