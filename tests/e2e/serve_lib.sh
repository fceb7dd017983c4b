#!/usr/bin/env bash
# Shared pieces of the end-to-end tests: a private redis-server on a free loopback port, replicas
# of `mpirun -np TP glm4v-serve` on the CPU backend, and a trap that stops all of it.
# Source it, then call e2e_setup BIN_DIR TESTDATA.
set -u

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_mpi_yield_when_idle=1 OMP_NUM_THREADS=1
E2E_PASSED=0
E2E_FAILED=0
E2E_REPLICAS=()
# pids of background client processes, waited for by the tests that source this file
# shellcheck disable=SC2034
pids=()

# e2e_check "what" command... [--and command...]...: one check, passed when every command succeeds.
# Join conditions with --and, never with &&: `e2e_check "x" [ a ] && [ b ]` is two shell commands,
# and the check would count only the first (the second's failure went unnoticed).
e2e_check() {
    local what=$1 ok=1 arg
    local -a cmd=()
    shift
    for arg in "$@" --and; do
        if [ "$arg" != --and ]; then
            cmd+=("$arg")
            continue
        fi
        if [ ${#cmd[@]} -eq 0 ] || ! "${cmd[@]}"; then ok=0; fi
        cmd=()
    done
    if [ $ok -eq 1 ]; then
        E2E_PASSED=$((E2E_PASSED + 1))
    else
        E2E_FAILED=$((E2E_FAILED + 1))
        echo "FAIL: $what" >&2
    fi
}

e2e_free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

e2e_redis_start() {
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$E2E_DIR" --appendonly yes \
        --appendfsync always --save "" --daemonize yes --logfile "$E2E_DIR/redis.log" \
        --pidfile "$E2E_DIR/redis.pid" >/dev/null
    for _ in $(seq 100); do
        redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "redis-server did not start" >&2
    return 1
}

e2e_redis_stop() {
    redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    for _ in $(seq 100); do
        redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 || return 0
        sleep 0.05
    done
}

# Kills a replica outright, like a node dying: its mpirun and every rank (Open MPI puts the ranks
# in process groups of their own, so killing mpirun's group alone leaves them running).
e2e_kill_replica() { # e2e_kill_replica NAME MPIRUN_PID
    kill -9 -- "-$2" 2>/dev/null || kill -9 "$2" 2>/dev/null
    pkill -9 -f -- "--prefix $PREFIX --server-id $1( |\$)" 2>/dev/null
    return 0
}

e2e_cleanup() {
    local pid
    for pid in "${E2E_REPLICAS[@]}"; do kill -9 -- "-$pid" 2>/dev/null || kill -9 "$pid" 2>/dev/null; done
    pkill -9 -f -- "--prefix $PREFIX " 2>/dev/null
    e2e_redis_stop
    [ -n "${E2E_KEEP:-}" ] && echo "kept $E2E_DIR" >&2 || rm -rf "$E2E_DIR"
}

e2e_setup() { # e2e_setup BIN_DIR TESTDATA
    BIN=$1
    MODEL=$2/glm4v-tiny-b
    E2E_DIR=$(mktemp -d)
    REDIS_PORT=$(e2e_free_port)
    REDIS_URL=redis://127.0.0.1:$REDIS_PORT
    PREFIX=e2e$$
    trap e2e_cleanup EXIT
    e2e_redis_start
}

# e2e_start_replica NAME NP [glm4v-serve args...]: starts a replica in its own process group and
# waits until it reports ready; its pid is REPLICA_PID and it is stopped by the trap.
e2e_start_replica() {
    local name=$1 np=$2
    shift 2
    setsid mpirun --bind-to none -np "$np" "$BIN/glm4v-serve" --tp "$np" --model "$MODEL" \
        --redis "$REDIS_URL" --prefix "$PREFIX" --server-id "$name" "$@" \
        >"$E2E_DIR/$name.log" 2>&1 </dev/null &
    REPLICA_PID=$!
    E2E_REPLICAS+=("$REPLICA_PID")
    e2e_wait_ready "$name" 30
}

# e2e_wait_ready NAME SECONDS: waits until replica NAME says ready in $E2E_DIR/NAME.log, for at
# most SECONDS and only while its mpirun (REPLICA_PID) lives; otherwise prints that log and fails.
e2e_wait_ready() {
    local name=$1
    for _ in $(seq $(($2 * 10))); do
        grep -q "ready" "$E2E_DIR/$name.log" 2>/dev/null && return 0
        kill -0 "$REPLICA_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "replica $name did not start:" >&2
    cat "$E2E_DIR/$name.log" >&2
    return 1
}

e2e_submit() { # e2e_submit args... (prints the Result JSON)
    "$BIN/glm4v-submit" --redis "$REDIS_URL" --prefix "$PREFIX" --json "$@"
}

# Number of final Results written to a job's result stream.
e2e_result_count() {
    redis-cli -p "$REDIS_PORT" --raw XRANGE "$PREFIX:out:$1" - + 2>/dev/null | grep -cx result
}

e2e_json() { # e2e_json FILE EXPR: evaluates a python expression over the JSON object d
    /usr/bin/python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"
}

e2e_finish() {
    echo "$1: $E2E_PASSED passed, $E2E_FAILED failed"
    [ "$E2E_FAILED" -eq 0 ]
}
