#!/usr/bin/env bash
# What the deploy/slurm tests (test_slurm.sh, test_slurm_nodes.sh) share around the cluster of
# slurm_cluster.sh. The end-to-end kit (tests/e2e/serve_lib.sh) gives them the MPI environment,
# e2e_check and the count; this adds their arguments, the skip-or-fail rule when this machine
# cannot run a Slurm, and the summary at the end.
#
# Source it, then:
#   slurm_test_init BIN_DIR TESTDATA REPO   sets bin, model (glm4v-tiny-b) and repo
#   why=$(slurm_test_missing TOOL...)        "" when root with every TOOL, else why not
#   slurm_test_skip_if WHY NEED              exits 77 (skip), or 1 in CI, when WHY is not ""
#   slurm_test_finish NAME LINES FILE...     on failures the last LINES of each FILE; the counts;
#                                            its status is the test's (call it last; the times it
#                                            prints count from the test's t0)

# shellcheck source=tests/e2e/serve_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../e2e/serve_lib.sh" # e2e_check, e2e_finish

# shellcheck disable=SC2034 # bin, model and repo are for the test that sources this file
slurm_test_init() {
    bin=$(cd "$1" && pwd)
    model=$(cd "$2" && pwd)/glm4v-tiny-b
    repo=$(cd "$3" && pwd)
}

slurm_test_missing() {
    local tool missing=""
    for tool in "$@"; do
        command -v "$tool" >/dev/null || missing="$missing $tool"
    done
    if [ "$(id -u)" -ne 0 ]; then
        echo "not root"
    elif [ -n "$missing" ]; then
        echo "missing:$missing (scripts/setup.sh installs slurm-wlm and munge)"
    fi
}

# CI must run these tests, so there a machine that cannot is a failure, not a skip.
slurm_test_skip_if() {
    [ -n "$1" ] || return 0
    if [ "${CI:-}" = true ]; then
        echo "FAIL: $2 is needed in CI: $1" >&2
        exit 1
    fi
    echo "SKIP: $1" >&2
    exit 77
}

slurm_test_finish() {
    local name=$1 lines=$2 f
    shift 2
    if [ "$E2E_FAILED" -gt 0 ]; then
        for f in "$@"; do
            echo "---- $f" >&2
            tail -n "$lines" "$f" >&2
        done
    fi
    # shellcheck disable=SC2154 # t0: set by the test once its cluster is up
    echo "[$((SECONDS - t0))s] done"
    e2e_finish "$name"
}
