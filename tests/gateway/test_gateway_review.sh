#!/usr/bin/env bash
# glm4v-gateway cases found in review, each failing before its fix; only redis-server, no replica
# (a prefix nobody serves, --no-require-server, so jobs wait in the queue):
#  - GET /v1/models/<id> (the openai SDKs' models.retrieve): 200 with the model object for the
#    served model, 404 model_not_found for another, 401 without a key;
#  - the API key is checked from the headers, before the body is read: a wrong key with a body
#    over the limit is a 401 (it was a 413), and a wrong key whose body never comes is answered at
#    once (it waited for the body until the idle timeout);
#  - SIGTERM past --drain-timeout: requests still waiting get the documented 503 shutting_down
#    and their jobs are cancelled (the connections were cut without an answer);
#  - Redis restarts between requests: the connections the gateway pooled are dead; a request that
#    draws one gets a fresh connection (each drew a 502 until the pool was used up);
#  - a READONLY refusal (a failover demoted the Redis behind the URL) drops that connection, so the
#    next request connects to whatever the URL leads to now (it went back to the pool for ever).
#  - a stream whose job waits in the queue longer than --keepalive starts anyway (200, keep-alive
#    comments, a later error as an event), so a proxy's read timeout does not cut it (the headers
#    waited for the first event, however long);
#  - a server older than the gateway (tests/gateway/gw_old_server.c) cannot decode the Job and
#    answers UNKNOWN_FIELD stamped with the raw bytes' fingerprint: the client gets that error (it
#    got 500 ID_CONFLICT, 'the job id was used by another job').
# usage: test_gateway_review.sh BIN_DIR TESTDATA
source "$(dirname "$0")/gateway_lib.sh"
gw_setup "$1" "$2"

printf 'sk-review\n' >"$E2E_DIR/keys"
K=(-H "Authorization: Bearer sk-review")
gw_start a --api-key-file "$E2E_DIR/keys" --no-require-server --max-body-bytes 2000 \
    --timeout 30 --drain-timeout 0.5 || exit 1
A=$GW_PORT
pid_a=$GW_PID

# ---- GET /v1/models/<id> ----------------------------------------------------------------------------
e2e_check "GET /v1/models/glm-4v-9b: 200" [ "$(gw_call $A GET /v1/models/glm-4v-9b "${K[@]}")" = 200 ]
e2e_check "GET /v1/models/glm-4v-9b: the model object ($(head -c 200 "$E2E_DIR/body"))" \
    [ "$(e2e_json "$E2E_DIR/body" "d['id'] + ' ' + d['object']" 2>/dev/null)" = "glm-4v-9b model" ]
e2e_check "GET /v1/models/gpt-4o: 404" [ "$(gw_call $A GET /v1/models/gpt-4o "${K[@]}")" = 404 ]
e2e_check "GET /v1/models/gpt-4o: model_not_found" \
    [ "$(e2e_json "$E2E_DIR/body" "d['error']['code']" 2>/dev/null)" = model_not_found ]
e2e_check "GET /v1/models/glm-4v-9b without a key: 401" [ "$(gw_call $A GET /v1/models/glm-4v-9b)" = 401 ]
e2e_check "POST /v1/models/glm-4v-9b: 405" [ "$(gw_call $A POST /v1/models/glm-4v-9b "${K[@]}")" = 405 ]

# ---- the key before the body ------------------------------------------------------------------------
head -c 5000 /dev/zero | tr '\0' 'a' >"$E2E_DIR/long.txt"
printf '{"model":"glm-4v-9b","messages":[{"role":"user","content":"%s"}]}' "$(cat "$E2E_DIR/long.txt")" >"$E2E_DIR/big.json"
gw_expect "wrong key, body over the limit: 401" 401 invalid_api_key $A "@$E2E_DIR/big.json" \
    -H "Authorization: Bearer sk-wrong"
gw_expect "right key, body over the limit: 413" 413 request_too_large $A "@$E2E_DIR/big.json" "${K[@]}"
# headers that announce a body which never comes: answered from the headers alone
first_line=$(/usr/bin/python3 - "$A" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.settimeout(5)
s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-wrong\r\n"
          b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
try:
    print(s.recv(4096).split(b"\r\n")[0].decode())
except socket.timeout:
    print("no answer within 5 s")
PY
)
e2e_check "wrong key, body not sent: answered at once ($first_line)" \
    [ "${first_line#HTTP/1.1 401}" != "$first_line" ]

# ---- SIGTERM past --drain-timeout: 503 for what still waits ---------------------------------------
body='{"model":"glm-4v-9b","max_tokens":4,"messages":[{"role":"user","content":"hi"}]}'
curl -s -o "$E2E_DIR/drain1.out" -w '%{http_code}' --max-time 20 "${K[@]}" \
    "http://127.0.0.1:$A/v1/chat/completions" -d "$body" >"$E2E_DIR/drain1.code" 2>/dev/null &
c1=$!
curl -s -o "$E2E_DIR/drain2.out" -w '%{http_code}' --max-time 20 "${K[@]}" \
    "http://127.0.0.1:$A/v1/chat/completions" -d "${body%\}},\"stream\":true}" >"$E2E_DIR/drain2.code" 2>/dev/null &
c2=$!
for _ in $(seq 200); do
    [ "$(redis-cli -p "$REDIS_PORT" XLEN "$PREFIX:jobs")" = 2 ] && break
    sleep 0.05
done
e2e_check "two jobs queued before SIGTERM" [ "$(redis-cli -p "$REDIS_PORT" XLEN "$PREFIX:jobs")" = 2 ]
kill -TERM "$pid_a"
wait "$c1" "$c2"
for i in 1 2; do
    code=$(cat "$E2E_DIR/drain$i.code")
    err=$(e2e_json "$E2E_DIR/drain$i.out" "d['error']['code']" 2>/dev/null)
    e2e_check "past the drain timeout, request $i: 503 shutting_down (HTTP $code, $err)" \
        [ "$code" = 503 ] --and [ "$err" = shutting_down ]
done
wait "$pid_a"
e2e_check "the drained gateway exited 0" [ $? -eq 0 ]
cancels=$(redis-cli -p "$REDIS_PORT" --scan --pattern "$PREFIX:cancel:*" | wc -l)
e2e_check "both waiting jobs cancelled ($cancels cancel keys)" [ "$cancels" = 2 ]
# ---- Redis restarts between requests: pooled connections are stale, not errors -------------------
gw_start b --no-require-server --timeout 0.5 || exit 1
B=$GW_PORT
pool_pids=()
for i in 1 2 3; do # three at once: three connections go back to the pool
    curl -s -o /dev/null -w '%{http_code}' --max-time 20 "http://127.0.0.1:$B/v1/chat/completions" \
        -d "$body" >"$E2E_DIR/pool$i.code" 2>/dev/null &
    pool_pids+=($!)
done
wait "${pool_pids[@]}"
e2e_check "before the restart: 504 (queued, nobody serves) x3 ($(cat "$E2E_DIR"/pool?.code | tr '\n' ' '))" \
    [ "$(cat "$E2E_DIR"/pool?.code | tr -d '\n')" = 504504504 ]
e2e_redis_stop
e2e_redis_start || exit 1
codes=""
for i in 1 2 3 4; do codes="$codes$(gw_chat $B "$body") "; done
e2e_check "after a Redis restart: every request reaches the queue (504, not 502: $codes)" \
    [ "$codes" = "504 504 504 504 " ]
e2e_check "after a Redis restart: /health 200" [ "$(gw_call $B GET /health)" = 200 ]
# ---- a READONLY refusal (the Redis behind the URL was demoted by a failover) drops the connection --
conns() { redis-cli -p "$REDIS_PORT" INFO stats | sed -n 's/^total_connections_received:\([0-9]*\).*/\1/p'; }
gw_chat $B "$body" >/dev/null # one healthy connection in the pool
dead_port=$(e2e_free_port)
redis-cli -p "$REDIS_PORT" REPLICAOF 127.0.0.1 "$dead_port" >/dev/null
gw_expect "Redis demoted to a replica: 503" 503 queue_refused $B "$body"
redis-cli -p "$REDIS_PORT" REPLICAOF NO ONE >/dev/null
n0=$(conns)
e2e_check "after the failover: a request reaches the queue" [ "$(gw_chat $B "$body")" = 504 ]
n1=$(conns)
# (redis-cli's own INFO connection is one of them)
e2e_check "the refused connection was not pooled: the next request connected anew ($n0 -> $n1)" \
    [ $((n1 - n0)) -ge 2 ]
# ---- a server older than the gateway answers UNKNOWN_FIELD, stamped with the raw bytes' fingerprint --
gw_start c --prefix oldsrv --no-require-server --timeout 20 || exit 1
curl -s -o "$E2E_DIR/old.out" -w '%{http_code}' --max-time 30 "http://127.0.0.1:$GW_PORT/v1/chat/completions" \
    -d "$body" >"$E2E_DIR/old.code" 2>/dev/null &
old_client=$!
"$BIN/gw_old_server" "$REDIS_PORT" oldsrv >"$E2E_DIR/old_server.log" 2>&1
e2e_check "the older server answered ($(cat "$E2E_DIR/old_server.log"))" [ $? -eq 0 ]
wait "$old_client"
e2e_check "its answer is the job's: 500 UNKNOWN_FIELD, not ID_CONFLICT ($(head -c 200 "$E2E_DIR/old.out"))" \
    [ "$(cat "$E2E_DIR/old.code")" = 500 ] --and \
    [ "$(e2e_json "$E2E_DIR/old.out" "d['error']['code']" 2>/dev/null)" = UNKNOWN_FIELD ]
# ---- a stream whose job waits in the queue: headers after --keepalive, comments, then the error --
gw_start d --prefix quiet --no-require-server --keepalive 1 --timeout 4 || exit 1
curl -s -N -o "$E2E_DIR/quiet.out" -w '%{http_code} %{time_starttransfer}' --max-time 20 \
    "http://127.0.0.1:$GW_PORT/v1/chat/completions" -d "${body%\}},\"stream\":true}" >"$E2E_DIR/quiet.code"
read -r quiet_code quiet_ttfb <"$E2E_DIR/quiet.code"
e2e_check "a queued stream starts after --keepalive: 200, first byte at ${quiet_ttfb}s (it was a 504 after --timeout)" \
    [ "$quiet_code" = 200 ] --and awk -v t="$quiet_ttfb" 'BEGIN { exit !(t >= 0.8 && t < 3.5) }'
e2e_check "the queued stream is held open by keep-alive comments" grep -q '^: keep-alive' "$E2E_DIR/quiet.out"
e2e_check "and ends with the timeout as an error event, then [DONE]" \
    grep -q '"code":"timeout"' "$E2E_DIR/quiet.out" --and \
    [ "$(grep -v '^$' "$E2E_DIR/quiet.out" | tail -1)" = "data: [DONE]" ]
e2e_check "its job was cancelled" [ "$(redis-cli -p "$REDIS_PORT" --scan --pattern 'quiet:cancel:*' | wc -l)" = 1 ]
e2e_finish test_gateway_review
