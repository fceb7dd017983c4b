#!/usr/bin/env bash
# The queue under misuse and pressure, end to end (docs/DEPLOY.md "The queue under misuse and
# pressure"), each cause with its own case:
#  1. a replica started 5 s before Redis waits for it (and says so), then serves;
#  2. a reused id with another prompt: ID_CONFLICT (exit 1), never the first job's answer, and the
#     first job's stream keeps its single Result; the same job again is still idempotent;
#  3. two concurrent duplicates of one job: computed once, both clients get the one answer;
#  4. Redis refusing writes (maxmemory + noeviction) for 10 s while a job finishes: its Result,
#     held in the outbox, arrives once writes are accepted again, with attempts 1, although a second
#     replica with a short visibility timeout was ready to reclaim it;
#  5. a stale replica (SIGSTOP past its lease, SIGCONT after another replica wrote the Result) writes
#     no chunk after the Result and stops working on the job;
#  6. one resumed while the other replica still computes the job leaves it to that one and stops.
# usage: test_serve_misuse.sh BIN_DIR TESTDATA
source "$(dirname "$0")/serve_lib.sh"
e2e_setup "$1" "$2"
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }
p="Describe the picture in detail."
# case 5 must stop a replica in the middle of its job: the tiny model writes 1500 tokens in a few
# hundred ms on an idle machine, faster than the signal lands on a busy one, so that job's steps are
# paced (5 ms each, about 7.5 s for the job) by the serve test hook
export GLM4V_TEST_SLOW_PROMPT=PACED-STALE-JOB

# 1. replica first, Redis 5 s later
e2e_redis_stop
(sleep 5 && e2e_redis_start) &
starter=$!
t0=$SECONDS
METRICS_PORT=$(e2e_free_port)
e2e_start_replica a 1 --visibility-timeout-ms 1500 --metrics-port "$METRICS_PORT" || exit 1
wait $starter
e2e_check "start before redis: the replica waited (>= 4 s)" [ $((SECONDS - t0)) -ge 4 ]
e2e_check "start before redis: it said so" grep -q "redis not reachable yet" "$E2E_DIR/a.log"
e2e_submit --id early-0 --prompt "$p" --max-new-tokens 4 --timeout 30 >"$E2E_DIR/early.json" 2>/dev/null
e2e_check "start before redis: then it serves" [ "$(e2e_result_count early-0)" = 1 ]

# 2. a reused id with another prompt
e2e_submit --id reuse-1 --prompt "first question" --max-new-tokens 12 --temperature 0 --timeout 30 \
    >"$E2E_DIR/reuse-a.json" 2>/dev/null
e2e_check "reused id: the first job is answered" [ $? -eq 0 ]
e2e_submit --id reuse-1 --prompt "a different question" --max-new-tokens 12 --temperature 0 \
    --timeout 30 >"$E2E_DIR/reuse-b.json" 2>"$E2E_DIR/reuse-b.err"
e2e_check "reused id: exit 1" [ $? -eq 1 ]
e2e_check "reused id: ID_CONFLICT naming the id" [ "$(e2e_json "$E2E_DIR/reuse-b.json" \
    "d['error']['code'] + ('' if 'reuse-1' in d['error']['message'] else ' unnamed')")" = ID_CONFLICT ]
e2e_check "reused id: not the first job's text" [ "$(e2e_json "$E2E_DIR/reuse-b.json" "d['text']")" = "" ]
e2e_check "reused id: the first job's stream keeps one Result" [ "$(e2e_result_count reuse-1)" = 1 ]
e2e_check "reused id: the server did not run it" grep -q "job=reuse-1 ID_CONFLICT" "$E2E_DIR/a.log"
e2e_submit --id reuse-1 --prompt "first question" --max-new-tokens 12 --temperature 0 --timeout 30 \
    >"$E2E_DIR/reuse-c.json" 2>/dev/null
e2e_check "reused id: the same job again is answered (idempotent)" [ "$(e2e_json "$E2E_DIR/reuse-c.json" \
    "d['token_ids']")" = "$(e2e_json "$E2E_DIR/reuse-a.json" "d['token_ids']")" ]

# 3. two concurrent duplicates
for k in 1 2; do
    e2e_submit --id twin-1 --prompt "$p" --max-new-tokens 400 --ignore-eos --temperature 0 \
        --timeout 60 >"$E2E_DIR/twin-$k.json" 2>/dev/null &
    pids+=($!)
done
wait "${pids[@]}"
pids=()
e2e_check "duplicates: one Result" [ "$(e2e_result_count twin-1)" = 1 ]
chunks=$(rcli --raw XRANGE "$PREFIX:out:twin-1" - + | grep -cx chunk)
e2e_check "duplicates: computed once ($chunks chunks for 400 tokens)" [ "$chunks" -le 400 ]
e2e_check "duplicates: both clients got the answer" [ "$(e2e_json "$E2E_DIR/twin-1.json" "len(d['token_ids'])")" = 400 ] \
    --and [ "$(e2e_json "$E2E_DIR/twin-1.json" "d['token_ids']")" = "$(e2e_json "$E2E_DIR/twin-2.json" "d['token_ids']")" ]
e2e_check "duplicates: the second joined the first" grep -q "job=twin-1 entry .* is a duplicate" "$E2E_DIR/a.log"

# 4. Redis refuses writes for 10 s while a job runs and finishes
e2e_start_replica b 1 --visibility-timeout-ms 1500 || exit 1
e2e_submit --id oom-1 --prompt "$p" --max-new-tokens 1500 --ignore-eos --temperature 0 --timeout 90 \
    >"$E2E_DIR/oom.json" 2>/dev/null &
oom_client=$!
for _ in $(seq 200); do [ "$(rcli XLEN "$PREFIX:out:oom-1")" -ge 20 ] && break; sleep 0.02; done
rcli CONFIG SET maxmemory-policy noeviction >/dev/null
rcli CONFIG SET maxmemory 1 >/dev/null
sleep 10
# on a slow machine the job may still be running: refuse until its Result waits in an outbox
for _ in $(seq 500); do
    grep -q "job=oom-1 result held in the outbox" "$E2E_DIR/a.log" "$E2E_DIR/b.log" && break
    sleep 0.1
done
rcli CONFIG SET maxmemory 0 >/dev/null
wait $oom_client
e2e_check "redis refusing: the client got the answer" [ $? -eq 0 ]
e2e_check "redis refusing: the first computation's Result (attempts 1)" \
    [ "$(e2e_json "$E2E_DIR/oom.json" "(d['attempts'], len(d['token_ids']))")" = "(1, 1500)" ]
e2e_check "redis refusing: one Result" [ "$(e2e_result_count oom-1)" = 1 ]
e2e_check "redis refusing: told apart from a lost connection" \
    grep -q "refuses commands (OOM" "$E2E_DIR/a.log" "$E2E_DIR/b.log"
refused=$(/usr/bin/python3 "$(dirname "$0")/sweep/check.py" metric "$METRICS_PORT" \
    'glm4v_redis_refusals_total{kind="OOM"}')
e2e_check "redis refusing: counted by the metric ($refused)" [ "${refused:-0}" -gt 0 ]
e2e_check "redis refusing: the Result waited in the outbox" \
    grep -q "job=oom-1 result held in the outbox" "$E2E_DIR/a.log" "$E2E_DIR/b.log"

# 5. a stale replica: stopped past its lease, resumed after the other replica answered
e2e_submit --id stale-1 --prompt "$p PACED-STALE-JOB" --max-new-tokens 1500 --ignore-eos --temperature 0 \
    --timeout 90 >"$E2E_DIR/stale.json" 2>/dev/null &
stale_client=$!
for _ in $(seq 200); do [ "$(rcli XLEN "$PREFIX:out:stale-1")" -ge 20 ] && break; sleep 0.02; done
owner=a
grep -q "job=stale-1 accepted" "$E2E_DIR/b.log" && owner=b
stopped=$(pgrep -f -- "--prefix $PREFIX --server-id $owner( |\$)" | tr '\n' ' ')
# shellcheck disable=SC2086
kill -STOP $stopped
wait $stale_client
e2e_check "stale: the other replica answered" [ "$(e2e_json "$E2E_DIR/stale.json" "len(d['token_ids'])")" = 1500 ]
last_before=$(rcli XREVRANGE "$PREFIX:out:stale-1" + - COUNT 1 | head -1)
# shellcheck disable=SC2086
kill -CONT $stopped
sleep 3
e2e_check "stale: nothing after the Result" \
    [ "$(rcli XREVRANGE "$PREFIX:out:stale-1" + - COUNT 1 | head -1)" = "$last_before" ]
e2e_check "stale: one Result" [ "$(e2e_result_count stale-1)" = 1 ]
e2e_check "stale: the resumed replica noticed" grep -q "job=stale-1 its Result exists" "$E2E_DIR/$owner.log"
e2e_check "stale: and stopped working on it" \
    grep -q "job=stale-1 stopped: its Result was written by another replica" "$E2E_DIR/$owner.log"
e2e_check "stale: without finishing it" bash -c "! grep -q 'job=stale-1 done' '$E2E_DIR/$owner.log'"

# 6. a stale replica resumed while the job's new owner still computes it: it leaves the job to that
#    one and stops (its lease refresh took the job back before, and both computed it to its end)
e2e_submit --id stale-2 --prompt "$p PACED-STALE-JOB" --max-new-tokens 1500 --ignore-eos --temperature 0 \
    --timeout 90 >"$E2E_DIR/stale2.json" 2>/dev/null &
stale_client=$!
for _ in $(seq 200); do [ "$(rcli XLEN "$PREFIX:out:stale-2")" -ge 20 ] && break; sleep 0.02; done
owner=a other=b
grep -q "job=stale-2 accepted" "$E2E_DIR/b.log" && owner=b other=a
stopped=$(pgrep -f -- "--prefix $PREFIX --server-id $owner( |\$)" | tr '\n' ' ')
# shellcheck disable=SC2086
kill -STOP $stopped
for _ in $(seq 400); do grep -q "job=stale-2 reclaimed" "$E2E_DIR/$other.log" && break; sleep 0.025; done
# shellcheck disable=SC2086
kill -CONT $stopped
wait $stale_client
e2e_check "stale, resumed early: the new owner answered" \
    [ "$(e2e_json "$E2E_DIR/stale2.json" "(d['attempts'], len(d['token_ids']))")" = "(2, 1500)" ]
e2e_check "stale, resumed early: one Result" [ "$(e2e_result_count stale-2)" = 1 ]
e2e_check "stale, resumed early: the resumed replica saw the job was no longer its own" \
    grep -q "job=stale-2 entry .* is no longer this replica's" "$E2E_DIR/$owner.log"
e2e_check "stale, resumed early: and stopped without finishing it" \
    grep -q "job=stale-2 stopped: another replica reclaimed it" "$E2E_DIR/$owner.log" \
    --and bash -c "! grep -q 'job=stale-2 done' '$E2E_DIR/$owner.log'"
e2e_check "stale, resumed early: the new owner kept it to its end" \
    grep -q "job=stale-2 done: 1500 tokens" "$E2E_DIR/$other.log"

e2e_finish serve_misuse
