#!/usr/bin/env bash
# Faults, end to end:
#  - kill -9 of one of two replicas while it holds running jobs: every job completes exactly once;
#  - redis-server restarted (AOF on) mid-run: the server reconnects and every job finishes;
#  - a poison job that crashes its server on every delivery ends in the dead-letter stream;
#  - SIGTERM drains: running jobs finish, the replica exits 0, nothing is lost;
#  - a job still running when the grace ends is handed back, not blamed (attempts 1);
#  - jobs whose preparation outlasts the lease are not reclaimed and computed twice.
# usage: test_serve_faults.sh BIN_DIR TESTDATA
source "$(dirname "$0")/serve_lib.sh"
e2e_setup "$1" "$2"
root=$(cd "$(dirname "$0")/../.." && pwd)
p="Describe the picture in detail."
wait_results() { # wait_results PREFIX-OF-IDS COUNT TIMEOUT_S
    local deadline=$((SECONDS + $3)) n
    while [ $SECONDS -lt $deadline ]; do
        n=0
        for i in $(seq 0 $(($2 - 1))); do [ "$(e2e_result_count "$1-$i")" -ge 1 ] && n=$((n + 1)); done
        [ $n -eq "$2" ] && return 0
        sleep 0.5
    done
    return 1
}
exactly_once() { # exactly_once PREFIX COUNT
    for i in $(seq 0 $(($2 - 1))); do
        [ "$(e2e_result_count "$1-$i")" = 1 ] || { echo "job $1-$i has $(e2e_result_count "$1-$i") results" >&2; return 1; }
    done
}

# 1. kill -9 of a replica holding running jobs
e2e_start_replica a 1 --visibility-timeout-ms 2000 --max-batch 4 || exit 1
victim=$REPLICA_PID
e2e_start_replica b 1 --visibility-timeout-ms 2000 --max-batch 4 || exit 1
for i in $(seq 0 23); do
    e2e_submit --id kill-$i --prompt "$p $i" --max-new-tokens 300 --temperature 0 --ignore-eos \
        --timeout 240 >"$E2E_DIR/kill-$i.json" 2>/dev/null &
    pids+=($!)
done
for _ in $(seq 200); do grep -q "accepted" "$E2E_DIR/a.log" && break; sleep 0.05; done
e2e_kill_replica a "$victim"
wait "${pids[@]}"
pids=()
e2e_check "kill -9: all 24 jobs answered" wait_results kill 24 60
e2e_check "kill -9: each exactly once" exactly_once kill 24
e2e_check "kill -9: the survivor reclaimed jobs" grep -q "reclaimed" "$E2E_DIR/b.log"
ok=0
for i in $(seq 0 23); do
    [ "$(e2e_json "$E2E_DIR/kill-$i.json" "len(d['token_ids'])" 2>/dev/null)" = 300 ] && ok=$((ok + 1))
done
e2e_check "kill -9: every client got its full answer ($ok/24)" [ $ok -eq 24 ]

# 2. redis-server restart mid-run (the jobs are in the AOF)
for i in $(seq 0 7); do
    e2e_submit --id rr-$i --prompt "$p" --max-new-tokens 30 --temperature 0 --timeout 5 \
        >/dev/null 2>&1 &
    pids+=($!)
done
sleep 1
e2e_redis_stop
sleep 1
e2e_redis_start
wait "${pids[@]}"
pids=()
e2e_check "redis restart: all 8 jobs answered" wait_results rr 8 90
e2e_check "redis restart: each exactly once" exactly_once rr 8

# 3. poison job: crashes its server on every delivery until it is dead-lettered
e2e_kill_replica b "$REPLICA_PID"
supervise() { # restarts a crashing replica, like systemd's Restart=on-failure
    for k in 1 2 3 4 5; do
        mpirun --bind-to none -np 1 "$BIN/glm4v-serve" --tp 1 --model "$MODEL" --redis "$REDIS_URL" \
            --prefix "$PREFIX" --server-id "poison$k" --crash-on-prompt POISON \
            --visibility-timeout-ms 500 --max-deliveries 2 >>"$E2E_DIR/poison.log" 2>&1 </dev/null
        [ -e "$E2E_DIR/stop-supervisor" ] && return
    done
}
supervise &
sup=$!
e2e_submit --id poison-0 --prompt "POISON pill" --max-new-tokens 4 --timeout 60 >"$E2E_DIR/poison.json" 2>/dev/null
e2e_check "poison: error result POISON" [ "$(e2e_json "$E2E_DIR/poison.json" "d['error']['code']" 2>/dev/null)" = POISON ]
e2e_check "poison: in the dead-letter stream" [ "$(redis-cli -p "$REDIS_PORT" XLEN "$PREFIX:dead")" -ge 1 ]
e2e_submit --id after-poison-0 --prompt "$p" --max-new-tokens 4 --timeout 60 >/dev/null 2>&1
e2e_check "poison: the next job is served" [ "$(e2e_result_count after-poison-0)" = 1 ]
touch "$E2E_DIR/stop-supervisor"
pkill -9 -f -- "--server-id poison" 2>/dev/null
wait $sup 2>/dev/null

# 4. SIGTERM drain: rank 0 gets the signal (deploy/common/glm4v-drain.sh), running jobs finish
e2e_start_replica d 2 --grace-ms 60000 || exit 1
for i in $(seq 0 5); do
    e2e_submit --id drain-$i --prompt "$p" --max-new-tokens 30 --temperature 0 --ignore-eos \
        --timeout 120 >"$E2E_DIR/drain-$i.json" 2>/dev/null &
    pids+=($!)
done
for _ in $(seq 200); do [ "$(grep -c accepted "$E2E_DIR/d.log")" -ge 6 ] && break; sleep 0.05; done
bash "$root/deploy/common/glm4v-drain.sh" --mpirun-pid "$REPLICA_PID" --timeout 120
e2e_check "drain: the replica exited cleanly" [ $? -eq 0 ]
wait "${pids[@]}"
e2e_check "drain: all 6 running jobs finished" wait_results drain 6 5
e2e_check "drain: logged" grep -q "draining" "$E2E_DIR/d.log"

# 5. a drain whose grace ends before its job does: the job is handed back and the next replica
#    runs it as the same delivery (a hand-back is not blamed on the job: no quarantine, and rolling
#    restarts never bring it to the dead letters). Its steps are paced (5 ms each, >= 4 s for 800
#    tokens) so it is still running when the 300 ms grace ends, however busy the machine.
export GLM4V_TEST_SLOW_PROMPT=PACED-HANDBACK
e2e_start_replica h1 1 --grace-ms 300 || exit 1
first=$REPLICA_PID
e2e_submit --id handback-0 --prompt "PACED-HANDBACK $p" --max-new-tokens 800 --temperature 0 \
    --ignore-eos --timeout 120 >"$E2E_DIR/handback.json" 2>/dev/null &
sub=$!
for _ in $(seq 200); do grep -q "accepted" "$E2E_DIR/h1.log" && break; sleep 0.05; done
bash "$root/deploy/common/glm4v-drain.sh" --mpirun-pid "$first" --timeout 60
e2e_check "hand-back: the draining replica handed its job back" \
    grep -q "handed back for another replica" "$E2E_DIR/h1.log"
e2e_start_replica h2 1 || exit 1
unset GLM4V_TEST_SLOW_PROMPT
wait $sub
e2e_check "hand-back: exactly one Result" [ "$(e2e_result_count handback-0)" = 1 ]
e2e_check "hand-back: the full answer with attempts 1" \
    [ "$(e2e_json "$E2E_DIR/handback.json" "(d['attempts'], len(d['token_ids']))" 2>/dev/null)" = "(1, 800)" ]
e2e_check "hand-back: taken over as delivery 1, not quarantined" \
    grep -q "reclaimed (delivery 1)" "$E2E_DIR/h2.log"

# 6. preparations that outlast the lease: a job still in the preparation pool has its lease
#    refreshed like a running one, so neither this replica nor another reclaims it and computes it
#    twice. Every preparation lasts 3 s (GLM4V_TEST_SLOW_PREP_MS) against a 1.5 s lease, and the
#    second job waits behind the first for the one preparation thread (6 s in the pool in all).
export GLM4V_TEST_SLOW_PREP_MS=3000
e2e_start_replica p1 1 --visibility-timeout-ms 1500 --prep-threads 1 || exit 1
unset GLM4V_TEST_SLOW_PREP_MS
for i in 0 1; do
    e2e_submit --id slowprep-$i --prompt "$p" --max-new-tokens 4 --timeout 60 \
        >"$E2E_DIR/slowprep-$i.json" 2>/dev/null &
    pids+=($!)
done
wait "${pids[@]}"
pids=()
e2e_check "slow preparation: both answered once" exactly_once slowprep 2
e2e_check "slow preparation: never reclaimed" bash -c "! grep 'reclaimed (delivery' $E2E_DIR/p1.log"
e2e_check "slow preparation: first attempts" \
    [ "$(e2e_json "$E2E_DIR/slowprep-0.json" "d['attempts']" 2>/dev/null)" = 1 ] \
    --and [ "$(e2e_json "$E2E_DIR/slowprep-1.json" "d['attempts']" 2>/dev/null)" = 1 ]

e2e_finish serve_faults
