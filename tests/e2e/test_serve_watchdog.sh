#!/usr/bin/env bash
# The step watchdog, end to end (glm4v-serve --step-timeout-ms, worker/comm_watchdog.c):
#  - an idle TP 2 replica stays up well past its deadline (rank 0's keepalives) and still serves;
#  - SIGSTOP of rank 1 mid-job: rank 0 reports the operation and the silent peer at the deadline,
#    the replica aborts as a whole (no process of it is left), and a spare replica started after
#    the fault finishes the job exactly once;
#  - SIGSTOP of rank 0 mid-job: rank 1 gives up the same way;
#  - kill -9 of rank 1 mid-job: the rest of its replica is gone within seconds.
# Set E2E_MPI_BTL (e.g. tcp,self) to run the replicas over that Open MPI transport, and
# E2E_WATCHDOG_QUICK=1 to stop after the first fault (the idle replica and SIGSTOP of rank 1).
# usage: test_serve_watchdog.sh BIN_DIR TESTDATA
source "$(dirname "$0")/serve_lib.sh"
e2e_setup "$1" "$2"
[ -n "${E2E_MPI_BTL:-}" ] && export OMPI_MCA_btl=$E2E_MPI_BTL
DEADLINE_MS=3000
LONG=1500 # tokens of a long job
p="Describe the picture in detail."

rank_pid() { # rank_pid SERVER_ID RANK: the pid of that rank of that replica
    local pid
    for pid in $(pgrep -f -- "--server-id $1( |$)"); do
        tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2" &&
            echo "$pid" && return 0
    done
    return 1
}

gone_within() { # gone_within SERVER_ID SECONDS: every process of the replica exits in time
    local deadline=$((SECONDS + $2))
    while [ $SECONDS -lt $deadline ]; do
        pgrep -f -- "--server-id $1( |$)" >/dev/null || return 0
        sleep 0.2
    done
    echo "still running after $2 s: $(pgrep -af -- "--server-id $1( |$)")" >&2
    return 1
}

# Starts a long job on the only replica running and waits until it has run some steps of it
# (past the first-step allowance, so the plain deadline applies); the job takes about a second on
# the tiny model, so the fault comes mid-job.
start_long_job() { # start_long_job ID REPLICA_LOG
    e2e_submit --id "$1" --prompt "$p" --max-new-tokens $LONG --temperature 0 --ignore-eos \
        --timeout 120 >"$E2E_DIR/$1.json" 2>/dev/null &
    pids+=($!)
    for _ in $(seq 200); do grep -q "accepted" "$2" 2>/dev/null && break; sleep 0.05; done
    sleep 0.1
}

fault_run() { # fault_run NAME SIGNAL RANK: a TP 2 replica, a long job, the signal to one rank
    local name=$1 sig=$2 rank=$3 pid t0
    e2e_start_replica "$name" 2 --step-timeout-ms $DEADLINE_MS --visibility-timeout-ms 4000 || return 1
    start_long_job "$name-job" "$E2E_DIR/$name.log"
    pid=$(rank_pid "$name" "$rank")
    e2e_check "$name: found rank $rank" [ -n "$pid" ]
    t0=$SECONDS
    kill "-$sig" "$pid"
    # the replica that takes the job over once the broken one's claim on it expires (started only
    # now, so that the job went to the replica under test)
    e2e_start_replica "spare-$name" 1 --visibility-timeout-ms 4000 || return 1
    local spare=$REPLICA_PID
    e2e_check "$name: the replica is gone within the deadline + 10 s" gone_within "$name" $((DEADLINE_MS / 1000 + 10))
    echo "$name: SIG$sig to rank $rank, replica gone after $((SECONDS - t0)) s" >&2
    wait "${pids[@]}"
    pids=()
    bash "$(dirname "$0")/../../deploy/common/glm4v-drain.sh" --mpirun-pid "$spare" --timeout 60 \
        >/dev/null
    e2e_check "$name: the job was finished once, by the other replica" \
        [ "$(e2e_result_count "$name-job")" = 1 ]
    e2e_check "$name: its client got the whole answer" \
        [ "$(e2e_json "$E2E_DIR/$name-job.json" "len(d['token_ids'])" 2>/dev/null)" = $LONG ]
    e2e_check "$name: it was not finished by the replica that broke" \
        [ "$(e2e_json "$E2E_DIR/$name-job.json" "d['server_id']" 2>/dev/null)" = "spare-$name" ]
}

# 1. idle for 3 deadlines: the keepalives hold the group together, and it still serves
e2e_start_replica idle 2 --step-timeout-ms $DEADLINE_MS || exit 1
sleep $((3 * DEADLINE_MS / 1000))
e2e_check "idle: still running after 3 deadlines" kill -0 "$REPLICA_PID"
e2e_check "idle: no watchdog report" bash -c "! grep -q 'step watchdog' '$E2E_DIR/idle.log'"
e2e_submit --id idle-0 --prompt "$p" --max-new-tokens 8 --temperature 0 --timeout 60 \
    >"$E2E_DIR/idle-0.json" 2>/dev/null
e2e_check "idle: a job after the idle time is answered" \
    [ "$(e2e_json "$E2E_DIR/idle-0.json" "len(d['token_ids'])" 2>/dev/null)" = 8 ]
bash "$(dirname "$0")/../../deploy/common/glm4v-drain.sh" --mpirun-pid "$REPLICA_PID" --timeout 60
e2e_check "idle: drains and exits 0" [ $? -eq 0 ]

# 2. rank 1 stopped: rank 0 names the operation and the peer, the replica aborts
fault_run stop1 STOP 1
e2e_check "stop1: rank 0 reported the silent peer" \
    grep -q "step watchdog: rank 0: .*rank 1 did not answer" "$E2E_DIR/stop1.log"
e2e_check "stop1: and aborted the replica" grep -q "aborting the replica" "$E2E_DIR/stop1.log"

[ -n "${E2E_WATCHDOG_QUICK:-}" ] && e2e_finish serve_watchdog && exit 0

# 3. rank 0 stopped: rank 1 gives up waiting on it
fault_run stop0 STOP 0
e2e_check "stop0: rank 1 reported the silent rank 0" \
    grep -q "step watchdog: rank 1: .*rank 0 did not answer" "$E2E_DIR/stop0.log"

# 4. rank 1 killed: the rest of the replica goes within seconds (mpirun or the watchdog ends it)
fault_run kill1 KILL 1
grep -h -E "step watchdog|exited on signal|aborting" "$E2E_DIR"/{stop1,stop0,kill1}.log >&2

e2e_finish serve_watchdog
