#!/usr/bin/env bash
# Crash attribution and cancellation, end to end (docs/DEPLOY.md "Crash attribution",
# "Cancellation and stale work"):
#  1. one job that crashes its replica inside the model step (the test hook
#     GLM4V_TEST_CRASH_ON_PROMPT) among nine innocent ones, all in the first batch, with a
#     supervisor restarting the replica: only the crashing job is dead-lettered (POISON), every
#     innocent job is answered exactly once;
#  2. a client that gives up (--timeout, then SIGINT) cancels its job: the server ends it early with
#     a CANCELLED Result and the cancelled metric counts it.
# usage: test_serve_attribution.sh BIN_DIR TESTDATA
source "$(dirname "$0")/serve_lib.sh"
e2e_setup "$1" "$2"
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }
p="Describe the picture in detail."

# 1. the jobs are queued first, so the replica's first read takes all ten into one batch
for i in 0 1 2 3 4 5 6 7 8 9; do
    prompt="$p innocent $i"
    [ "$i" = 4 ] && prompt="$p BOOM"
    e2e_submit --id blame-$i --prompt "$prompt" --max-new-tokens 8 --ignore-eos --timeout 90 \
        >"$E2E_DIR/blame-$i.json" 2>/dev/null &
    pids+=($!)
done
for _ in $(seq 100); do [ "$(rcli XLEN "$PREFIX:jobs")" -ge 10 ] && break; sleep 0.05; done
supervise() { # restarts a crashing replica, like systemd's Restart=on-failure
    for k in 1 2 3 4 5 6; do
        GLM4V_TEST_CRASH_ON_PROMPT=BOOM mpirun --bind-to none -np 1 "$BIN/glm4v-serve" --tp 1 \
            --model "$MODEL" --redis "$REDIS_URL" --prefix "$PREFIX" --server-id "life$k" \
            --visibility-timeout-ms 800 --max-deliveries 2 --max-batch 16 \
            >>"$E2E_DIR/lives.log" 2>&1 </dev/null
        [ -e "$E2E_DIR/stop-supervisor" ] && return
    done
}
supervise &
sup=$!
wait "${pids[@]}"
pids=()
e2e_check "attribution: the crashing job is POISON" \
    [ "$(e2e_json "$E2E_DIR/blame-4.json" "d['error']['code']" 2>/dev/null)" = POISON ]
e2e_check "attribution: only it is dead-lettered" [ "$(rcli XLEN "$PREFIX:dead")" = 1 ]
e2e_check "attribution: the dead entry is the crashing job" \
    rcli --raw XRANGE "$PREFIX:dead" - + | grep -qx blame-4
ok=0
for i in 0 1 2 3 5 6 7 8 9; do
    [ "$(e2e_json "$E2E_DIR/blame-$i.json" "(d['error'], len(d['token_ids']))" 2>/dev/null)" = "(None, 8)" ] &&
        [ "$(e2e_result_count blame-$i)" = 1 ] && ok=$((ok + 1))
done
e2e_check "attribution: every innocent job answered exactly once ($ok/9)" [ $ok -eq 9 ]
e2e_check "attribution: the replica crashed in a step (first batch: everyone blamed)" \
    grep -q "GLM4V_TEST_CRASH_ON_PROMPT: aborting in a step" "$E2E_DIR/lives.log"
e2e_check "attribution: re-delivered jobs ran quarantined" grep -q "quarantined" "$E2E_DIR/lives.log"
touch "$E2E_DIR/stop-supervisor"
pkill -9 -f -- "--prefix $PREFIX --server-id life" 2>/dev/null
wait $sup 2>/dev/null

# 2. cancellation by a client that gives up
METRICS_PORT=$(e2e_free_port)
e2e_start_replica c 1 --metrics-port "$METRICS_PORT" || exit 1
e2e_submit --id give-up-1 --prompt "$p" --max-new-tokens 1900 --ignore-eos --timeout 1 \
    >/dev/null 2>"$E2E_DIR/give-up.err"
e2e_check "cancel: the client timed out (exit 3)" [ $? -eq 3 ]
e2e_check "cancel: and said it cancelled" grep -q "cancelled job give-up-1" "$E2E_DIR/give-up.err"
for _ in $(seq 100); do [ "$(e2e_result_count give-up-1)" = 1 ] && break; sleep 0.05; done
e2e_check "cancel: a CANCELLED Result" \
    bash -c "redis-cli -p $REDIS_PORT --raw XREVRANGE $PREFIX:out:give-up-1 + - COUNT 1 | grep -qa 'cancelled by its client'"
e2e_check "cancel: ended early" grep -q "job=give-up-1 rejected: CANCELLED: cancelled by its client" "$E2E_DIR/c.log"
# the binary itself in the background (a backgrounded function would be a subshell that ignores
# SIGINT); glm4v-submit installs its own handler
"$BIN/glm4v-submit" --redis "$REDIS_URL" --prefix "$PREFIX" --id give-up-2 --prompt "$p" \
    --max-new-tokens 1900 --ignore-eos --timeout 60 >/dev/null 2>&1 &
client=$!
for _ in $(seq 200); do [ "$(rcli XLEN "$PREFIX:out:give-up-2")" -ge 5 ] && break; sleep 0.02; done
kill -INT $client
wait $client
e2e_check "cancel: SIGINT exits 130" [ $? -eq 130 ]
for _ in $(seq 100); do [ "$(e2e_result_count give-up-2)" = 1 ] && break; sleep 0.05; done
e2e_check "cancel: SIGINT cancels too" grep -q "job=give-up-2 rejected: CANCELLED" "$E2E_DIR/c.log"
cancelled=$(/usr/bin/python3 "$(dirname "$0")/sweep/check.py" metric "$METRICS_PORT" \
    'glm4v_jobs_total{outcome="cancelled"}')
e2e_check "cancel: the cancelled metric counts both ($cancelled)" [ "$cancelled" = 2 ]

e2e_finish serve_attribution
