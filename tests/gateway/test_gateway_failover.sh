#!/usr/bin/env bash
# glm4v-gateway when things go away:
#  - kill -9 of the replica running a streamed job, a second replica running: the stream follows
#    the job's new attempt on the survivor and completes with exactly glm4v-submit's greedy ids
#    (nothing sent twice), or ends with an error event; it never hangs;
#  - a client that disconnects mid-stream cancels its job (<prefix>:cancel:<id>, with a TTL);
#  - Redis restarts mid-stream (AOF on): the gateway reconnects, the stream completes;
#  - SIGTERM drains the gateway: the stream in flight completes, new connections are refused, it
#    exits 0. usage: test_gateway_failover.sh BIN_DIR TESTDATA
source "$(dirname "$0")/gateway_lib.sh"
gw_setup "$1" "$2"
here=$(cd "$(dirname "$0")" && pwd)

e2e_start_replica a 1 --visibility-timeout-ms 1000 || exit 1
pid_a=$REPLICA_PID
e2e_start_replica b 1 --visibility-timeout-ms 1000 || exit 1
pid_b=$REPLICA_PID
gw_start main || exit 1
prompt="Tell me a story about it."
n=1000
body() { # body MAX_TOKENS
    printf '{"model":"glm-4v-9b","messages":[{"role":"user","content":"%s"}],"max_tokens":%d,"temperature":0,"ignore_eos":true,"logprobs":true,"stream":true}' "$prompt" "$1"
}
stream_to() { # stream_to FILE MAX_TOKENS: curl in the background, its pid in CURL_PID
    curl -sN --max-time 60 "$GW_URL/v1/chat/completions" -d "$(body "$2")" >"$1" 2>/dev/null &
    CURL_PID=$!
}
wait_events() { # wait_events FILE N: until FILE holds N content events (5 s at most)
    for _ in $(seq 500); do
        local got
        got=$(grep -c '"content":"[^"]' "$1" 2>/dev/null)
        [ "${got:-0}" -ge "$2" ] && return 0
        sleep 0.01
    done
    return 1
}
summary() { /usr/bin/python3 "$here/stream_check.py" "$1"; }

e2e_submit --id ref --prompt "$prompt" --max-new-tokens $n --temperature 0 --ignore-eos \
    --logprobs 0 --timeout 60 >"$E2E_DIR/ref.json"

# ---- 1. kill -9 of the replica running the job ---------------------------------------------------
stream_to "$E2E_DIR/kill.sse" $n
e2e_check "stream started" wait_events "$E2E_DIR/kill.sse" 3
holder=$(redis-cli -p "$REDIS_PORT" --raw XPENDING "$PREFIX:jobs" "$PREFIX:servers" - + 10 | sed -n 2p)
case $holder in
a) e2e_kill_replica a "$pid_a" ;;
b) e2e_kill_replica b "$pid_b" ;;
*) echo "no replica holds the job (holder '$holder'): it ended before the kill" >&2 ;;
esac
t0=$SECONDS
wait "$CURL_PID"
curl_rc=$?
e2e_check "the stream ended (curl rc $curl_rc, $((SECONDS - t0)) s after the kill)" [ $curl_rc -eq 0 ]
summary "$E2E_DIR/kill.sse" >"$E2E_DIR/kill.json"
ok=$(/usr/bin/python3 -c "
import json
s = json.load(open('$E2E_DIR/kill.json')); r = json.load(open('$E2E_DIR/ref.json'))
if not s['done']: print('no [DONE]')
elif s['error']: print('error event: ' + s['error']['message'])
elif s['ids'] != r['token_ids']: print(f\"ids differ: {len(s['ids'])} vs {len(r['token_ids'])}\")
elif s['text'] != r['text']: print('text differs')
elif s['finish_reason'] != 'length': print('finish_reason', s['finish_reason'])
else: print('completed')")
echo "kill -9 mid-stream: $ok"
ended=no
[ "$ok" = completed ] || [[ $ok == "error event"* ]] && ended=yes
e2e_check "kill -9 mid-stream: completed with glm4v-submit's ids and text, or an error event ($ok)" \
    [ $ended = yes ]
e2e_check "kill -9 mid-stream: the stream failed over to the survivor ($ok)" [ "$ok" = completed ]
gw_call "$GW_PORT" GET /metrics >/dev/null
e2e_check "metrics: a failover was followed" grep -q '^glm4v_gateway_failovers_total [1-9]' "$E2E_DIR/body"

# ---- 2. a client that goes away cancels its job ---------------------------------------------------
stream_to "$E2E_DIR/gone.sse" 1500
wait_events "$E2E_DIR/gone.sse" 2
kill "$CURL_PID" 2>/dev/null
wait "$CURL_PID" 2>/dev/null
job=$(grep -o '"id":"chatcmpl-[^"]*' "$E2E_DIR/gone.sse" | head -1 | sed 's/.*chatcmpl-//')
cancelled=no
for _ in $(seq 60); do
    [ "$(redis-cli -p "$REDIS_PORT" EXISTS "$PREFIX:cancel:$job")" = 1 ] && { cancelled=yes; break; }
    sleep 0.05
done
e2e_check "client gone: its job $job is cancelled" [ $cancelled = yes ]
ttl=$(redis-cli -p "$REDIS_PORT" TTL "$PREFIX:cancel:$job")
e2e_check "the cancel key expires (TTL $ttl)" [ "$ttl" -gt 3000 ] 2>/dev/null

# ---- 3. Redis restarts mid-stream (AOF on): the gateway reconnects and the stream completes ------
stream_to "$E2E_DIR/redis.sse" 1500
wait_events "$E2E_DIR/redis.sse" 2
e2e_redis_stop
sleep 1
e2e_redis_start
wait "$CURL_PID"
summary "$E2E_DIR/redis.sse" >"$E2E_DIR/redis.json"
ok=$(/usr/bin/python3 -c "
import json
s = json.load(open('$E2E_DIR/redis.json')); r = json.load(open('$E2E_DIR/ref.json'))
print('yes' if s['done'] and not s['error'] and len(s['ids']) == 1500
      and s['ids'][:$n] == r['token_ids'] else f\"no: {len(s['ids'])} ids, error {s['error']}\")")
e2e_check "Redis restart mid-stream: the stream completes with the right ids ($ok)" [ "$ok" = yes ]
e2e_check "the gateway reconnected" grep -q reconnecting "$E2E_DIR/gw-main.log"

# ---- 4. SIGTERM drains the gateway ------------------------------------------------------------------
stream_to "$E2E_DIR/drain.sse" 600
wait_events "$E2E_DIR/drain.sse" 2
kill -TERM "$GW_PID"
sleep 0.2
refused=no
curl -s --max-time 5 "$GW_URL/health" >/dev/null 2>&1 || refused=yes
e2e_check "draining: new connections are refused" [ $refused = yes ]
wait "$CURL_PID"
summary "$E2E_DIR/drain.sse" >"$E2E_DIR/drain.json"
e2e_check "draining: the stream in flight completed" \
    [ "$(e2e_json "$E2E_DIR/drain.json" "d['done'] and not d['error'] and len(d['ids'])")" = 600 ]
wait "$GW_PID"
e2e_check "draining: the gateway exited 0" [ $? -eq 0 ]
e2e_finish test_gateway_failover
