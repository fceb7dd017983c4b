#!/usr/bin/env bash
# glm4v-gateway: five gaps a review found, each case failing before its fix; only redis-server
# (prefixes nobody serves, --no-require-server, so jobs wait in the queue) and, for the Redis
# connection faults, tests/gateway/redis_proxy.py between the gateway and Redis:
#  - a client that leaves while the Redis connection its request holds has died silently (read its
#    last reply, closed since): the cancel is sent again on a fresh connection and reaches Redis
#    (it was logged as failed and the job ran on for nobody);
#  - an XADD whose reply is lost (the connection drops after sending): the job id is cancelled
#    before the 502, so the SDKs' automatic retry cannot run the job twice; when even the cancel
#    cannot reach Redis, the 502 says x-should-retry: false (it was a plain 502, job left queued);
#  - SIGHUP reloads --api-key-file: new keys in, old ones out, a stream in flight goes on; an
#    empty or missing file keeps the keys in force (SIGHUP ended the gateway);
#  - --cors-origin: preflight OPTIONS answered 204 with the Access-Control-* headers for an allowed
#    origin, without a key; Access-Control-Allow-Origin on answers, errors and streams; nothing
#    for other origins; without the flag OPTIONS stays 405 and no CORS header is sent.
# (Line-broken base64 in data URIs is covered by test_gw_request and test_base64.)
# usage: test_gateway_fixes.sh BIN_DIR TESTDATA
source "$(dirname "$0")/gateway_lib.sh"
gw_setup "$1" "$2"
here=$(cd "$(dirname "$0")" && pwd)

/usr/bin/python3 "$here/redis_proxy.py" "$REDIS_PORT" "$E2E_DIR/proxy.ports" 2>"$E2E_DIR/proxy.log" &
proxy_pid=$!
trap 'kill $proxy_pid 2>/dev/null; gw_cleanup' EXIT
for _ in $(seq 100); do [ -s "$E2E_DIR/proxy.ports" ] && break; sleep 0.05; done
read -r PROXY CONTROL <"$E2E_DIR/proxy.ports"
proxy() { # proxy COMMAND: tells the proxy what to lose next
    local answer
    answer=$(/usr/bin/python3 -c 'import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall((sys.argv[2] + "\n").encode())
print(s.makefile().readline().strip())' "$CONTROL" "$1")
    [ "$answer" = ok ] || echo "proxy $1: $answer" >&2
}
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }
body='{"model":"glm-4v-9b","max_tokens":4,"messages":[{"role":"user","content":"hi"}]}'
stream_body="${body%\}}"',"stream":true}'

# ---- 1. a cancel on a connection that died silently goes again on a fresh one ----------------------
gw_start cancel --redis "redis://127.0.0.1:$PROXY" --prefix cx --no-require-server --keepalive 0.5 \
    --timeout 30 || exit 1
curl -s -N -o "$E2E_DIR/cx.out" --max-time 30 "$GW_URL/v1/chat/completions" -d "$stream_body" &
cx_client=$!
for _ in $(seq 100); do grep -q '^data:' "$E2E_DIR/cx.out" 2>/dev/null && break; sleep 0.05; done
e2e_check "the stream started" grep -q '^data:' "$E2E_DIR/cx.out"
proxy hold # the gateway's XREAD gets no reply now; Redis's is kept
kill "$cx_client"
wait "$cx_client" 2>/dev/null
sleep 1
proxy sever # the kept reply arrives, then the connection is closed
for _ in $(seq 100); do [ -n "$(rcli --scan --pattern 'cx:cancel:*')" ] && break; sleep 0.05; done
e2e_check "the client left while its connection died: the cancel reached Redis anyway ($(grep cancel "$E2E_DIR/gw-cancel.log" | head -2))" \
    [ "$(rcli --scan --pattern 'cx:cancel:*' | wc -l)" = 1 ]
e2e_check "the first try's failure is logged, and the retry" \
    grep -q 'once more on a fresh connection' "$E2E_DIR/gw-cancel.log"
gw_call "$GW_PORT" GET /metrics >/dev/null
e2e_check "metrics: one cancel, no failure" grep -q '^glm4v_gateway_cancels_total 1$' "$E2E_DIR/body" \
    --and grep -q '^glm4v_gateway_cancel_failures_total 0$' "$E2E_DIR/body"

# ---- 2. an XADD whose reply is lost: cancelled before the 502 --------------------------------------
gw_start xadd --redis "redis://127.0.0.1:$PROXY" --prefix xa --no-require-server --timeout 5 || exit 1
XA=$GW_PORT
proxy lose-xadd
gw_expect "XADD reply lost: 502" 502 redis_unavailable "$XA" "$body"
e2e_check "it says the job was cancelled and a retry is safe ($(head -c 300 "$E2E_DIR/body"))" \
    grep -q 'cancelled, so a retry is safe' "$E2E_DIR/body"
e2e_check "and lets the SDKs retry (no x-should-retry: false)" \
    bash -c "! grep -qi '^x-should-retry' '$E2E_DIR/headers'"
e2e_check "the XADD had landed: one job queued" [ "$(rcli XLEN xa:jobs)" = 1 ]
lost_id=$(rcli --scan --pattern 'xa:cancel:*' | sed 's/^xa:cancel://')
e2e_check "the queued job's id is the one cancelled ($lost_id)" [ -n "$lost_id" ] --and \
    bash -c "redis-cli -p $REDIS_PORT --raw XRANGE xa:jobs - + | grep -aqx -- '$lost_id'"
proxy lose-xadd-down # the reply is lost and Redis stays out of reach: the cancel cannot go
gw_expect "XADD reply lost, Redis gone: 502" 502 redis_unavailable "$XA" "$body"
e2e_check "it says the job may still run ($(head -c 300 "$E2E_DIR/body"))" \
    grep -q 'could not cancel it' "$E2E_DIR/body"
e2e_check "and tells the SDKs not to retry (x-should-retry: false)" \
    grep -qi '^x-should-retry: false' "$E2E_DIR/headers"
proxy up
e2e_check "the second job is queued, not cancelled" [ "$(rcli XLEN xa:jobs)" = 2 ] --and \
    [ "$(rcli --scan --pattern 'xa:cancel:*' | wc -l)" = 1 ]
gw_call "$XA" GET /metrics >/dev/null
e2e_check "metrics: the failed cancel is counted" \
    grep -q '^glm4v_gateway_cancel_failures_total 1$' "$E2E_DIR/body"

# ---- 3. SIGHUP reloads the API keys; streams go on ---------------------------------------------------
printf 'sk-old\n' >"$E2E_DIR/keys"
gw_start keys --api-key-file "$E2E_DIR/keys" --prefix hup --no-require-server --keepalive 0.5 \
    --timeout 3 || exit 1
KP=$GW_PORT
keys_pid=$GW_PID
e2e_check "the first key works" [ "$(gw_call "$KP" GET /v1/models -H 'Authorization: Bearer sk-old')" = 200 ]
curl -s -N -o "$E2E_DIR/hup.out" --max-time 20 -H 'Authorization: Bearer sk-old' \
    "http://127.0.0.1:$KP/v1/chat/completions" -d "$stream_body" &
hup_client=$!
for _ in $(seq 100); do grep -q '^data:' "$E2E_DIR/hup.out" 2>/dev/null && break; sleep 0.05; done
printf '# rotated\nsk-new\nsk-other\n' >"$E2E_DIR/keys.next"
mv "$E2E_DIR/keys.next" "$E2E_DIR/keys"
kill -HUP "$keys_pid"
for _ in $(seq 100); do grep -q 'reloaded 2 API keys' "$E2E_DIR/gw-keys.log" && break; sleep 0.05; done
e2e_check "SIGHUP: the gateway lives on and says so ($(tail -1 "$E2E_DIR/gw-keys.log"))" \
    kill -0 "$keys_pid" --and grep -q 'reloaded 2 API keys' "$E2E_DIR/gw-keys.log"
e2e_check "a new key works" [ "$(gw_call "$KP" GET /v1/models -H 'Authorization: Bearer sk-new')" = 200 ]
e2e_check "the old key is refused" [ "$(gw_call "$KP" GET /v1/models -H 'Authorization: Bearer sk-old')" = 401 ]
: >"$E2E_DIR/keys"
kill -HUP "$keys_pid"
for _ in $(seq 100); do grep -q 'keeping the API keys' "$E2E_DIR/gw-keys.log" && break; sleep 0.05; done
rm "$E2E_DIR/keys"
kill -HUP "$keys_pid"
for _ in $(seq 100); do [ "$(grep -c 'keeping the API keys' "$E2E_DIR/gw-keys.log")" = 2 ] && break; sleep 0.05; done
e2e_check "an empty, then a missing key file: the keys stay, and the log says why" \
    grep -q 'keeping the API keys in force: API key file .* holds no key' "$E2E_DIR/gw-keys.log" \
    --and grep -q 'keeping the API keys in force: cannot read' "$E2E_DIR/gw-keys.log"
e2e_check "the keys in force still work" \
    [ "$(gw_call "$KP" GET /v1/models -H 'Authorization: Bearer sk-other')" = 200 ]
e2e_check "and no key opens it" [ "$(gw_call "$KP" GET /v1/models)" = 401 ]
wait "$hup_client"
e2e_check "the stream started with the old key went on through the reloads to its end (timeout, [DONE])" \
    grep -q '"code":"timeout"' "$E2E_DIR/hup.out" --and \
    [ "$(grep -v '^$' "$E2E_DIR/hup.out" | tail -1)" = "data: [DONE]" ]

# ---- 5. CORS --------------------------------------------------------------------------------------------
printf 'sk-cors\n' >"$E2E_DIR/cors-keys"
gw_start cors --api-key-file "$E2E_DIR/cors-keys" --prefix cors --no-require-server --keepalive 0.5 \
    --timeout 1 --cors-origin https://app.example --cors-origin http://localhost:3000 || exit 1
CP=$GW_PORT
CK=(-H 'Authorization: Bearer sk-cors')
pre=(-H 'Origin: https://app.example' -H 'Access-Control-Request-Method: POST'
    -H 'Access-Control-Request-Headers: authorization, content-type, x-stainless-os')
hdr() { grep -i "^$1:" "$E2E_DIR/headers" | head -1 | cut -d: -f2- | tr -d '\r' | sed 's/^ //'; }
e2e_check "preflight from an allowed origin, without a key: 204" \
    [ "$(gw_call "$CP" OPTIONS /v1/chat/completions "${pre[@]}")" = 204 ]
e2e_check "preflight: Allow-Origin is the origin ($(hdr Access-Control-Allow-Origin))" \
    [ "$(hdr Access-Control-Allow-Origin)" = https://app.example ] --and \
    grep -qi '^Vary: Origin' "$E2E_DIR/headers"
e2e_check "preflight: POST allowed ($(hdr Access-Control-Allow-Methods))" \
    bash -c "grep -i '^Access-Control-Allow-Methods:' '$E2E_DIR/headers' | grep -q POST"
for h in Authorization Content-Type OpenAI-Organization X-Stainless-OS; do
    e2e_check "preflight: header $h allowed" \
        bash -c "grep -i '^Access-Control-Allow-Headers:' '$E2E_DIR/headers' | grep -qi '[ :]$h\\(,\\|\$\\|\\r\\)'"
done
e2e_check "preflight: Max-Age ($(hdr Access-Control-Max-Age))" [ "$(hdr Access-Control-Max-Age)" -gt 0 ]
e2e_check "the other listed origin too" \
    [ "$(gw_call "$CP" OPTIONS /v1/models -H 'Origin: http://localhost:3000')" = 204 ] --and \
    [ "$(hdr Access-Control-Allow-Origin)" = http://localhost:3000 ]
code=$(gw_call "$CP" OPTIONS /v1/chat/completions -H 'Origin: https://evil.example' -H 'Access-Control-Request-Method: POST')
e2e_check "preflight from another origin: not allowed ($code), no CORS header" [ "$code" != 204 ] --and \
    bash -c "! grep -qi '^Access-Control-' '$E2E_DIR/headers'"
e2e_check "GET with an allowed Origin: 200 with Allow-Origin" \
    [ "$(gw_call "$CP" GET /v1/models "${CK[@]}" -H 'Origin: https://app.example')" = 200 ] --and \
    [ "$(hdr Access-Control-Allow-Origin)" = https://app.example ]
e2e_check "an error (401) carries it too, so the page can read why" \
    [ "$(gw_call "$CP" GET /v1/models -H 'Origin: https://app.example')" = 401 ] --and \
    [ "$(hdr Access-Control-Allow-Origin)" = https://app.example ]
e2e_check "GET from another origin: no Allow-Origin" \
    [ "$(gw_call "$CP" GET /v1/models "${CK[@]}" -H 'Origin: https://evil.example')" = 200 ] --and \
    bash -c "! grep -qi '^Access-Control-Allow-Origin' '$E2E_DIR/headers'"
code=$(gw_chat "$CP" "$stream_body" "${CK[@]}" -H 'Origin: https://app.example')
e2e_check "a stream carries it ($code, $(hdr Content-Type))" [ "$code" = 200 ] --and \
    [ "$(hdr Access-Control-Allow-Origin)" = https://app.example ] --and \
    grep -qi '^Content-Type: text/event-stream' "$E2E_DIR/headers"
gw_call "$CP" GET /metrics >/dev/null
e2e_check "metrics count the preflights as 204" \
    grep -q '^glm4v_gateway_requests_total{code="204"} 2$' "$E2E_DIR/body"
gw_start any --prefix cors --no-require-server --cors-origin '*' || exit 1
e2e_check "--cors-origin '*': any origin's preflight, Allow-Origin *" \
    [ "$(gw_call "$GW_PORT" OPTIONS /v1/chat/completions -H 'Origin: https://x.example')" = 204 ] --and \
    [ "$(hdr Access-Control-Allow-Origin)" = '*' ]
gw_start plain --prefix cors --no-require-server || exit 1
e2e_check "without --cors-origin: OPTIONS stays 405, no CORS header" \
    [ "$(gw_call "$GW_PORT" OPTIONS /v1/chat/completions "${pre[@]}")" = 405 ] --and \
    bash -c "! grep -qi '^Access-Control-' '$E2E_DIR/headers'"
e2e_check "without --cors-origin: a GET with an Origin gets no CORS header" \
    [ "$(gw_call "$GW_PORT" GET /v1/models -H 'Origin: https://app.example')" = 200 ] --and \
    bash -c "! grep -qi '^Access-Control-' '$E2E_DIR/headers'"
"$BIN/glm4v-gateway" --redis "$REDIS_URL" --cors-origin https://app.example/ >/dev/null 2>&1
e2e_check "--cors-origin with a path (never matches): refused at start, exit 2" [ $? -eq 2 ]
e2e_finish test_gateway_fixes
