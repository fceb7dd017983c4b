#!/usr/bin/env bash
# glm4v-gateway driven by the official openai npm client (tests/gateway/node, pinned):
#  - a greedy image + text chat, non-streaming and streaming (logprobs on, so the token ids come
#    back), gets exactly the token ids and text glm4v-submit gets for the same job, and the server
#    recorded the same job fingerprint (XXH3 of messages, image, sampling) for both: the gateway
#    queued the same Job;
#  - 200 concurrent streaming chats all complete;
#  - /metrics counts them. usage: test_gateway_openai.sh BIN_DIR TESTDATA
source "$(dirname "$0")/gateway_lib.sh"
gw_setup "$1" "$2"
[ -d "$GW_NODE_DIR/node_modules/openai" ] ||
    { echo "the openai npm package is missing: run scripts/setup.sh (npm ci in $GW_NODE_DIR)" >&2; exit 1; }

e2e_start_replica r1 1 || exit 1
e2e_start_replica r2 1 || exit 1
printf 'sk-first-key\nsk-test-key\n' >"$E2E_DIR/keys"
gw_start main --api-key-file "$E2E_DIR/keys" || exit 1
gw_png "$E2E_DIR/img.png" 96 64
prompt="Tell me a story about it." # varied ids from the tiny model (some prompts repeat one token)
n=24

node "$GW_NODE_DIR/openai_client.js" chat "$GW_URL/v1" sk-test-key "$E2E_DIR/img.png" "$prompt" $n \
    >"$E2E_DIR/openai.json" 2>"$E2E_DIR/openai.err"
e2e_check "openai client: chat ran ($(tail -c 300 "$E2E_DIR/openai.err"))" [ -s "$E2E_DIR/openai.json" ]
# the same job through glm4v-submit: with logprobs 0 (as logprobs: true asks) and without
e2e_submit --id ref-lp --image "$E2E_DIR/img.png" --prompt "$prompt" --max-new-tokens $n \
    --temperature 0 --ignore-eos --logprobs 0 --timeout 60 >"$E2E_DIR/ref-lp.json"
e2e_submit --id ref-plain --image "$E2E_DIR/img.png" --prompt "$prompt" --max-new-tokens $n \
    --temperature 0 --ignore-eos --timeout 60 >"$E2E_DIR/ref-plain.json"

cmp_py() { # cmp_py EXPR: evaluated with o = the openai output and r = glm4v-submit's Result
    /usr/bin/python3 -c "
import json, sys
o = json.load(open('$E2E_DIR/openai.json')); r = json.load(open('$E2E_DIR/ref-lp.json'))
ok = bool($1)
if not ok: print('mismatch:', json.dumps(o)[:600], '\nreference:', json.dumps(r)[:400], file=sys.stderr)
sys.exit(0 if ok else 1)"
}
e2e_check "reference answer: $n tokens, not one repeated" cmp_py "len(r['token_ids']) == $n and len(set(r['token_ids'])) > $n // 2"
e2e_check "non-streaming: same token ids as glm4v-submit" cmp_py "o['nonstream']['ids'] == r['token_ids']"
e2e_check "non-streaming: same text" cmp_py "o['nonstream']['text'] == r['text']"
e2e_check "non-streaming: finish_reason length, usage" cmp_py \
    "o['nonstream']['finish_reason'] == 'length' and o['nonstream']['usage']['completion_tokens'] == $n and o['nonstream']['usage']['prompt_tokens'] == r['usage']['prompt_tokens']"
e2e_check "streaming: same token ids as glm4v-submit" cmp_py "o['stream']['ids'] == r['token_ids']"
e2e_check "streaming: same text" cmp_py "o['stream']['text'] == r['text']"
e2e_check "streaming: finish_reason length, include_usage" cmp_py \
    "o['stream']['finish_reason'] == 'length' and o['stream']['usage']['completion_tokens'] == $n and o['stream']['events'] >= 3"
e2e_check "without logprobs: same text" cmp_py "o['plain_text'] == json.load(open('$E2E_DIR/ref-plain.json'))['text']"

job_of() { e2e_json "$E2E_DIR/openai.json" "d['$1']['id'].removeprefix('chatcmpl-')" 2>/dev/null; }
fp_ref=$(gw_fingerprint ref-lp)
fp_gw=$(gw_fingerprint "$(job_of nonstream)")
fp_gw_stream=$(gw_fingerprint "$(job_of stream)")
fp_plain=$(gw_fingerprint "$(e2e_json "$E2E_DIR/openai.json" "d['plain_id'].removeprefix('chatcmpl-')")")
same=no
[ -n "$fp_ref" ] && [ "$fp_gw" = "$fp_ref" ] && [ "$fp_gw_stream" = "$fp_ref" ] && same=yes
e2e_check "same job fingerprint as glm4v-submit ($fp_gw, $fp_gw_stream vs $fp_ref)" [ $same = yes ]
same=no
[ -n "$fp_plain" ] && [ "$fp_plain" = "$(gw_fingerprint ref-plain)" ] && [ "$fp_plain" != "$fp_ref" ] && same=yes
e2e_check "without logprobs: fingerprint of glm4v-submit's plain job ($fp_plain)" [ $same = yes ]

# 200 streaming chats at once
node "$GW_NODE_DIR/openai_client.js" concurrent "$GW_URL/v1" sk-first-key 200 6 \
    >"$E2E_DIR/concurrent.json" 2>"$E2E_DIR/concurrent.err"
e2e_check "200 concurrent streams all complete ($(cat "$E2E_DIR/concurrent.json" "$E2E_DIR/concurrent.err" | head -c 400))" \
    [ "$(e2e_json "$E2E_DIR/concurrent.json" "d['done']" 2>/dev/null)" = 200 ]

gw_call "$GW_PORT" GET /metrics >/dev/null
ok200=$(grep '^glm4v_gateway_requests_total{code="200"}' "$E2E_DIR/body" | awk '{print $2}')
e2e_check "metrics: at least 203 answers with 200 ($ok200)" [ "${ok200:-0}" -ge 203 ]
e2e_check "metrics: latency histogram" grep -q '^glm4v_gateway_request_duration_seconds_count [1-9]' "$E2E_DIR/body"
e2e_check "metrics: in-flight gauge" grep -q '^glm4v_gateway_in_flight 1$' "$E2E_DIR/body" # this request
e2e_finish test_gateway_openai
