#!/usr/bin/env bash
# Shared pieces of the multi-host tests: fake hosts from scripts/netns-hosts.sh (network
# namespaces on one bridge), a redis-server on one of them, replicas whose ranks are spread over
# hosts by mpirun through the netns agent, and a trap that removes all of it even when a check
# fails. Source it, then call mh_setup BIN_DIR TESTDATA N_HOSTS.
#
# The tests use their own prefix and subnet (glm4vt, 198.18.77.0/24), so a set of hosts that a
# person has up by hand (glm4v-h*) is never touched. ctest runs them one at a time (RESOURCE_LOCK).
set -u
# shellcheck source=tests/e2e/serve_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../serve_lib.sh" # e2e_check, e2e_json, e2e_wait_ready, e2e_finish
# shellcheck source=deploy/common/glm4v-mca.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../../deploy/common/glm4v-mca.sh" # glm4v_mca_keepalive

MH_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
MH_KIT=(bash "$MH_REPO/scripts/netns-hosts.sh" --prefix glm4vt --net 77)
MH_NET=198.18.77
MH_REPLICAS=()
MH_T0=$SECONDS

mh_log() { echo "[$((SECONDS - MH_T0))s] $*"; }

# Exits 77 (ctest: skipped) where namespaces cannot be made: not root, or a sandbox without them.
# In CI (CI=true, root) that is a failure instead, since these tests must run there.
mh_require_netns() {
    local why=""
    if [ "$(id -u)" -ne 0 ]; then
        why="not root"
    elif ! command -v ip >/dev/null || ! command -v unshare >/dev/null; then
        why="ip (iproute2) or unshare (util-linux) missing"
    elif ! ip netns add glm4vt-probe 2>/dev/null; then
        why="ip netns add is not permitted here"
    else
        ip netns del glm4vt-probe
        return 0
    fi
    if [ "${CI:-}" = true ]; then
        echo "FAIL: network namespaces are needed in CI: $why" >&2
        exit 1
    fi
    echo "SKIP: cannot create network namespaces ($why)" >&2
    exit 77
}

mh_cleanup() {
    local pid
    for pid in ${MH_REPLICAS[@]+"${MH_REPLICAS[@]}"}; do
        kill -9 -- "-$pid" 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
    done
    "${MH_KIT[@]}" down >/dev/null 2>&1 || true
    if [ -n "${E2E_KEEP:-}" ]; then echo "kept $E2E_DIR" >&2; else rm -rf "$E2E_DIR"; fi
}

mh_setup() { # mh_setup BIN_DIR TESTDATA N_HOSTS
    BIN=$1
    MODEL=$2/glm4v-tiny-b
    mh_require_netns
    E2E_DIR=$(mktemp -d)
    PREFIX=mh$$
    trap mh_cleanup EXIT
    trap 'exit 1' INT TERM
    "${MH_KIT[@]}" down >/dev/null 2>&1 || true # a run killed before its trap ran
    "${MH_KIT[@]}" up "$3" || exit 1
    eval "$("${MH_KIT[@]}" env)"
    export OMPI_MCA_plm_rsh_agent OMPI_MCA_oob_tcp_if_include OMPI_MCA_btl_tcp_if_include
}

mh_addr() { echo "$MH_NET.${1#h}"; }  # mh_addr h3 -> 198.18.77.3
mh_ns() { echo "glm4vt-$1"; }          # mh_ns h3 -> glm4vt-h3
mh_exec() { "${MH_KIT[@]}" exec "$@"; } # mh_exec h3 CMD...

# rx + tx bytes of host h's veth, read on the root side of the pair.
mh_veth_bytes() {
    local d=/sys/class/net/glm4vt-v${1#h}/statistics
    echo $(($(cat "$d/rx_bytes") + $(cat "$d/tx_bytes")))
}

# mh_redis_start HOST: redis-server on that host's address, AOF on; sets REDIS_URL, REDIS_HOST.
mh_redis_start() {
    REDIS_HOST=$(mh_addr "$1")
    REDIS_PORT=6379
    REDIS_URL=redis://$REDIS_HOST:$REDIS_PORT
    mkdir -p "$E2E_DIR/redis"
    # protected mode off: the clients come from other hosts, on a subnet that exists only inside
    # this machine's namespaces, so no password is needed here.
    mh_exec "$1" redis-server --port "$REDIS_PORT" --bind "$REDIS_HOST" --protected-mode no \
        --dir "$E2E_DIR/redis" \
        --appendonly yes --save "" --daemonize yes --logfile "$E2E_DIR/redis.log" \
        --pidfile "$E2E_DIR/redis.pid" >/dev/null || return 1
    for _ in $(seq 100); do
        redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "redis-server did not start on $1" >&2
    return 1
}

mh_redis() { redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" "$@"; }

# mh_start_replica NAME "h1 h2" [glm4v-serve args...]: one rank per listed host (rank 0 on the
# first), TCP between them, Open MPI's OOB keepalive set from the step deadline as the launch
# scripts set it (deploy/common/glm4v-mca.sh); waits until it says ready. Its mpirun pid:
# REPLICA_PID.
mh_start_replica() {
    local name=$1 hosts=$2 h
    shift 2
    glm4v_mca_keepalive "$(glm4v_step_timeout_of "$@")" || return 1
    local -a spec=()
    for h in $hosts; do spec+=("$h:1"); done
    "${MH_KIT[@]}" hostfile "${spec[@]}" >"$E2E_DIR/hostfile-$name"
    local np=${#spec[@]}
    setsid mpirun --bind-to none -np "$np" --hostfile "$E2E_DIR/hostfile-$name" --map-by node \
        --mca btl tcp,self -x OMP_NUM_THREADS=1 -x OMPI_MCA_mpi_yield_when_idle=1 \
        "$BIN/glm4v-serve" --tp "$np" --model "$MODEL" --redis "$REDIS_URL" --prefix "$PREFIX" \
        --server-id "$name" "$@" >"$E2E_DIR/$name.log" 2>&1 </dev/null &
    REPLICA_PID=$!
    MH_REPLICAS+=("$REPLICA_PID")
    e2e_wait_ready "$name" 60
}

# Processes named NAME (default glm4v-serve) running in host h's namespace, one pid per line;
# zombies (ended, not yet reaped) are not running and not listed.
mh_serve_pids() {
    local p name=${2:-glm4v-serve}
    for p in $(ip netns pids "$(mh_ns "$1")" 2>/dev/null); do
        [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$name" ] || continue
        [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" = Z ] && continue
        echo "$p"
    done
    return 0
}

# What is left of a replica on hosts "h1 h2 ..." with mpirun pid P: one word per running process
# (mpirun, h1:orted, h2:glm4v-serve, ...); empty once all of it is gone.
mh_replica_left() {
    local hosts=$1 pid=$2 h p
    if kill -0 "$pid" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]; then
        echo mpirun
    fi
    for h in $hosts; do
        for p in $(mh_serve_pids "$h" glm4v-serve) $(mh_serve_pids "$h" orted); do
            echo "$h:$(cat "/proc/$p/comm" 2>/dev/null)"
        done
    done
}

mh_submit() { # mh_submit args... (prints the Result JSON)
    "$BIN/glm4v-submit" --redis "$REDIS_URL" --prefix "$PREFIX" --json "$@"
}

# Number of final Results in a job's result stream.
mh_result_count() {
    mh_redis --raw XRANGE "$PREFIX:out:$1" - + 2>/dev/null | grep -cx result
}
