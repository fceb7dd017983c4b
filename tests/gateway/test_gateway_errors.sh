#!/usr/bin/env bash
# glm4v-gateway's error answers, with curl, against real redis-server and glm4v-serve:
# 401 (keys), 404 (model, path), 405, 400 (the gateway's checks and the server's BAD_IMAGE, also
# when streaming), 413 (body, data-URI image, fetched image), 429 (queue depth, Retry-After), 502
# (no replica; Redis gone), 503 (Redis refuses writes), 504 (timeout, job cancelled), 500 (the
# server's INTERNAL error), and the image rules: data URIs (CRLF-wrapped too), allow-listed http
# hosts fetched (a same-host redirect followed), file://, paths, other hosts and redirects
# elsewhere refused without a request reaching them and without reading a local file.
# usage: test_gateway_errors.sh BIN TESTDATA
source "$(dirname "$0")/gateway_lib.sh"
gw_setup "$1" "$2"
here=$(cd "$(dirname "$0")" && pwd)

e2e_start_replica r 1 || exit 1
gw_png "$E2E_DIR/img.png" 64 48
/usr/bin/python3 "$here/image_server.py" "$E2E_DIR/img.png" "$E2E_DIR/img.port" &
img_pid=$!
for _ in $(seq 100); do [ -s "$E2E_DIR/img.port" ] && break; sleep 0.05; done
IMG=$(cat "$E2E_DIR/img.port")
trap 'kill $img_pid 2>/dev/null; gw_cleanup' EXIT
printf 'sk-alpha\nsk-test\n' >"$E2E_DIR/keys"
gw_start a --api-key-file "$E2E_DIR/keys" --allow-image-host "127.0.0.1:$IMG" \
    --max-body-bytes 300000 --max-image-bytes 100000 --image-fetch-timeout-ms 1500 || exit 1
A=$GW_PORT
K=(-H "Authorization: Bearer sk-test")
b64=$(base64 -w0 "$E2E_DIR/img.png")
msg() { # msg CONTENT_JSON [EXTRA_FIELDS]: a chat body for the tiny model
    printf '{"model":"glm-4v-9b","max_tokens":4,"temperature":0,"messages":[{"role":"user","content":%s}]%s}' "$1" "${2:-}"
}
img_msg() { # img_msg URL [EXTRA]
    msg "[{\"type\":\"text\",\"text\":\"What is it?\"},{\"type\":\"image_url\",\"image_url\":{\"url\":\"$1\"}}]" "${2:-}"
}
fetches() { curl -s "http://127.0.0.1:$IMG/count" | /usr/bin/python3 -c "import json,sys; print(json.load(sys.stdin).get('$1', 0))"; }

# ---- 200s and keys ------------------------------------------------------------------------------
e2e_check "/health without a key: 200" [ "$(gw_call $A GET /health)" = 200 ]
gw_expect "plain chat with a key" 200 - $A "$(msg '"hi"')" "${K[@]}"
gw_expect "the other key of the file" 200 - $A "$(msg '"hi"')" -H "Authorization: Bearer sk-alpha"
gw_expect "no key: 401" 401 invalid_api_key $A "$(msg '"hi"')"
gw_expect "wrong key: 401" 401 invalid_api_key $A "$(msg '"hi"')" -H "Authorization: Bearer sk-tes"
gw_expect "longer key: 401" 401 invalid_api_key $A "$(msg '"hi"')" -H "Authorization: Bearer sk-test2"
e2e_check "/v1/models without a key: 401" [ "$(gw_call $A GET /v1/models)" = 401 ]
e2e_check "/v1/models with a key: 200, lists glm-4v-9b" [ "$(gw_call $A GET /v1/models "${K[@]}")" = 200 ]
e2e_check "/v1/models body" grep -q '"id":"glm-4v-9b"' "$E2E_DIR/body"

# ---- 404, 405, 400 from the gateway -------------------------------------------------------------
gw_expect "unknown model: 404" 404 model_not_found $A '{"model":"gpt-4o","messages":[{"role":"user","content":"x"}]}' "${K[@]}"
e2e_check "unknown path: 404" [ "$(gw_call $A GET /v1/completions "${K[@]}")" = 404 ]
e2e_check "GET chat: 405" [ "$(gw_call $A GET /v1/chat/completions "${K[@]}")" = 405 ]
gw_expect "not JSON: 400" 400 - $A 'not json' "${K[@]}"
gw_expect "n = 2: 400" 400 - $A "$(msg '"hi"' ',"n":2')" "${K[@]}"
gw_expect "tools: 400" 400 - $A "$(msg '"hi"' ',"tools":[{"type":"function","function":{"name":"f"}}]')" "${K[@]}"
gw_expect "temperature 5: 400" 400 - $A '{"model":"glm-4v-9b","temperature":5,"messages":[{"role":"user","content":"x"}]}' "${K[@]}"
part="{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,$b64\"}}"
nine="[$part"; for _ in 2 3 4 5 6 7 8 9; do nine="$nine,$part"; done; nine="$nine]"
gw_expect "nine images: 400" 400 - $A "$(msg "$nine")" "${K[@]}"
e2e_check "nine images: the message says at most 8" grep -q "more than 8 images" "$E2E_DIR/body"
gw_expect "five images (over the 4 per prompt): 400" 400 TOO_MANY_IMAGES $A "$(msg "[$part,$part,$part,$part,$part]")" "${K[@]}"

# ---- images: data URIs, allow-listed hosts, and everything else refused --------------------------
gw_expect "data URI image: 200" 200 - $A "$(img_msg "data:image/png;base64,$b64")" "${K[@]}"
data_job=$(e2e_json "$E2E_DIR/body" "d['id'].removeprefix('chatcmpl-')")
# as some clients send it: 76-column lines ending in CRLF (RFC 2045), written as JSON escapes
wrapped=$(base64 -w76 "$E2E_DIR/img.png" | sed 's/$/\\r\\n/' | tr -d '\n')
gw_expect "data URI in CRLF-wrapped lines: 200" 200 - $A "$(img_msg "data:image/png;base64,$wrapped")" "${K[@]}"
wrapped_job=$(e2e_json "$E2E_DIR/body" "d['id'].removeprefix('chatcmpl-')")
e2e_check "CRLF-wrapped image: the same job as on one line (fingerprint)" \
    [ -n "$(gw_fingerprint "$wrapped_job")" ] --and [ "$(gw_fingerprint "$data_job")" = "$(gw_fingerprint "$wrapped_job")" ]
turns="[{\"role\":\"user\",\"content\":[$part,$part]},{\"role\":\"assistant\",\"content\":\"A cat.\"},{\"role\":\"user\",\"content\":[$part,{\"type\":\"text\",\"text\":\"And now?\"}]}]"
gw_expect "three images in two user turns: 200" 200 - $A "{\"model\":\"glm-4v-9b\",\"max_tokens\":3,\"messages\":$turns}" "${K[@]}"
gw_expect "allow-listed URL: 200" 200 - $A "$(img_msg "http://127.0.0.1:$IMG/img.png")" "${K[@]}"
url_job=$(e2e_json "$E2E_DIR/body" "d['id'].removeprefix('chatcmpl-')")
e2e_check "fetched image: the same job as the data URI (fingerprint)" \
    [ -n "$(gw_fingerprint "$data_job")" ] --and [ "$(gw_fingerprint "$data_job")" = "$(gw_fingerprint "$url_job")" ]
gw_expect "same-host redirect followed: 200" 200 - $A "$(img_msg "http://127.0.0.1:$IMG/redir-same")" "${K[@]}"
before=$(fetches /img.png)
gw_expect "host not allow-listed (localhost): 400" 400 - $A "$(img_msg "http://localhost:$IMG/img.png")" "${K[@]}"
gw_expect "redirect to another host: 400" 400 - $A "$(img_msg "http://127.0.0.1:$IMG/redir-other")" "${K[@]}"
e2e_check "the refused host was never fetched" [ "$(fetches /img.png)" = "$before" ]
gw_expect "redirect to file://: 400" 400 - $A "$(img_msg "http://127.0.0.1:$IMG/redir-file")" "${K[@]}"
# a real PNG on this machine: had the gateway read it, the request would have succeeded
gw_expect "file:// URL of a real image: 400" 400 - $A "$(img_msg "file://$E2E_DIR/img.png")" "${K[@]}"
gw_expect "a bare path: 400" 400 - $A "$(img_msg "$E2E_DIR/img.png")" "${K[@]}"
gw_expect "ftp://: 400" 400 - $A "$(img_msg "ftp://127.0.0.1:$IMG/img.png")" "${K[@]}"
gw_expect "image URL answering 404: 400" 400 - $A "$(img_msg "http://127.0.0.1:$IMG/missing.png")" "${K[@]}"
t0=$SECONDS
gw_expect "image fetch over its time limit: 400" 400 - $A "$(img_msg "http://127.0.0.1:$IMG/slow.png")" "${K[@]}"
e2e_check "the slow fetch was cut at its limit ($((SECONDS - t0)) s)" [ $((SECONDS - t0)) -le 3 ]

# ---- 400 from the server: undecodable image bytes ------------------------------------------------
junk=$(head -c 60 "$E2E_DIR/img.png" | base64 -w0) # a PNG cut short
gw_expect "bad image bytes: 400 BAD_IMAGE" 400 BAD_IMAGE $A "$(img_msg "data:image/png;base64,$junk")" "${K[@]}"
gw_expect "bad image bytes, streaming: still 400 BAD_IMAGE" 400 BAD_IMAGE $A \
    "$(img_msg "data:image/png;base64,$junk" ',"stream":true')" "${K[@]}"

# ---- 413 -----------------------------------------------------------------------------------------
head -c 400000 /dev/zero | tr '\0' 'a' >"$E2E_DIR/long.txt"
printf '{"model":"glm-4v-9b","messages":[{"role":"user","content":"%s"}]}' "$(cat "$E2E_DIR/long.txt")" >"$E2E_DIR/big.json"
gw_expect "body over the limit: 413" 413 request_too_large $A "@$E2E_DIR/big.json" "${K[@]}"
gw_expect "body over the limit, chunked upload: 413" 413 request_too_large $A "@$E2E_DIR/big.json" \
    "${K[@]}" -H "Transfer-Encoding: chunked"
img_msg "data:image/png;base64,$(head -c 150000 /dev/urandom | base64 -w0)" >"$E2E_DIR/bigimg.json"
gw_expect "data-URI image over the limit: 413" 413 image_too_large $A "@$E2E_DIR/bigimg.json" "${K[@]}"
gw_expect "fetched image over the limit: 413" 413 image_too_large $A "$(img_msg "http://127.0.0.1:$IMG/big.png")" "${K[@]}"

# ---- 502 no replica; 504 timeout (job cancelled); 429 queue depth ---------------------------------
gw_start empty --prefix "$PREFIX-empty" || exit 1
gw_expect "no replica on the prefix: 502" 502 no_server $GW_PORT "$(msg '"hi"')"
gw_start stalled --prefix "$PREFIX-stalled" --no-require-server --timeout 1 --max-queue-depth 2 || exit 1
S=$GW_PORT
gw_expect "no answer in time: 504" 504 timeout $S "$(msg '"hi"')"
gw_expect "no first event in time, streaming: 504" 504 timeout $S "$(msg '"hi"' ',"stream":true')"
cancels=$(redis-cli -p "$REDIS_PORT" --scan --pattern "$PREFIX-stalled:cancel:*" | wc -l)
e2e_check "timed-out jobs cancelled ($cancels cancel keys)" [ "$cancels" = 2 ]
ttl=$(redis-cli -p "$REDIS_PORT" TTL "$(redis-cli -p "$REDIS_PORT" --scan --pattern "$PREFIX-stalled:cancel:*" | head -1)")
e2e_check "cancel key expires (TTL $ttl)" [ "$ttl" -gt 3000 ] --and [ "$ttl" -le 3600 ]
gw_expect "queue at its depth limit: 429" 429 queue_full $S "$(msg '"hi"')"
e2e_check "429 carries Retry-After" grep -qi '^Retry-After: 1' "$E2E_DIR/headers"

# ---- 503: Redis refuses writes (out of memory) -----------------------------------------------------
redis-cli -p "$REDIS_PORT" CONFIG SET maxmemory 1 >/dev/null
gw_expect "Redis refuses the job (OOM): 503" 503 queue_refused $A "$(msg '"hi"')" "${K[@]}"
e2e_check "a refusal that may pass is retryable (no x-should-retry)" \
    bash -c "! grep -qi '^x-should-retry' '$E2E_DIR/headers'"
redis-cli -p "$REDIS_PORT" CONFIG SET maxmemory 0 >/dev/null

# ---- 500: the server's INTERNAL error (a model whose embeddings are all +inf) ----------------------
poisoned=$E2E_DIR/poisoned
mkdir -p "$poisoned"
/usr/bin/python3 - "$MODEL" "$poisoned" <<'PY'
import json, os, shutil, struct, sys
src, dst = sys.argv[1], sys.argv[2]
for f in os.listdir(src):
    shutil.copy(os.path.join(src, f), dst)
name = "transformer.embedding.word_embeddings.weight"
index = f"{dst}/model.safetensors.index.json"
path = f"{dst}/{json.load(open(index))['weight_map'][name]}" if os.path.exists(index) \
    else f"{dst}/model.safetensors"
data = bytearray(open(path, "rb").read())
n = struct.unpack("<Q", data[:8])[0]
meta = json.loads(data[8:8 + n])[name]
inf = {"F32": struct.pack("<f", float("inf")), "BF16": b"\x80\x7f", "F16": b"\x00\x7c"}[meta["dtype"]]
a, b = meta["data_offsets"]
data[8 + n + a:8 + n + b] = inf * ((b - a) // len(inf))
open(path, "wb").write(data)
PY
e2e_kill_replica r "$REPLICA_PID"
MODEL=$poisoned e2e_start_replica bad 1 || exit 1
gw_expect "the server's INTERNAL error: 500" 500 INTERNAL $A "$(msg '"hi"')" "${K[@]}"
e2e_check "INTERNAL: x-should-retry: false (the openai SDKs would resubmit the job twice)" \
    grep -qi '^x-should-retry: false' "$E2E_DIR/headers"
gw_expect "the server's INTERNAL error, streaming: 500" 500 INTERNAL $A "$(msg '"hi"' ',"stream":true')" "${K[@]}"

gw_call $A GET /metrics >/dev/null
for code in 200 400 401 404 405 413 500 503; do
    e2e_check "metrics count $code answers" grep -q "^glm4v_gateway_requests_total{code=\"$code\"} [1-9]" "$E2E_DIR/body"
done

# ---- 502: Redis gone -------------------------------------------------------------------------------
e2e_redis_stop
gw_expect "Redis down: 502" 502 redis_unavailable $A "$(msg '"hi"')" "${K[@]}"
e2e_check "/health with Redis down: 503" [ "$(gw_call $A GET /health)" = 503 ]
e2e_finish test_gateway_errors
