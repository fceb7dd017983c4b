#!/usr/bin/env bash
# What a Result carries, end to end (proto/glm4v.proto: Result.text and Chunk.text are bytes;
# Usage.prompt_tokens counts every prompt position). A real redis-server, `mpirun -np 2
# glm4v-serve` on the CPU backend with tiny-b:
#  - a greedy job whose answer holds token 0 (the byte 0x00, which tiny-b's random weights emit for
#    the prompt "a is", with text after it): glm4v-submit --json, glm4v-submit's streamed text,
#    glm4v-sweep's output line and glm4v-gateway's JSON (non-streaming and streaming) all carry the
#    whole text, byte for byte what the detokenizer makes of the ids (glm4v-tokenize --decode,
#    invalid UTF-8 replaced), the NUL written \u0000 in JSON; the ids are glm4v-run's, and so is
#    the text of glm4v-run --json;
#  - usage.prompt_tokens for 0, 1 and 3 images = prompt ids + each image's rows less its 3
#    placeholder ids = glm4v-run's spliced length, in glm4v-submit's Result, the sweep's line and
#    the gateway's usage; image_tokens = images x rows;
#  - the replica's glm4v_prompt_tokens_total and glm4v_prefix_cache_prompt_tokens_total (the
#    prefix hit rate's denominator) both count those same positions: their sum over the jobs.
# usage: test_serve_wire.sh BIN_DIR TESTDATA
# shellcheck source=tests/gateway/gateway_lib.sh
source "$(dirname "$0")/../gateway/gateway_lib.sh"
e2e_setup "$1" "$2"
trap gw_cleanup EXIT
CHECK=(/usr/bin/python3 "$(dirname "$0")/wire/check.py")
PROMPT="a is" # tiny-b's greedy answer: 18 ids, the 10th is 0 (a NUL byte), eos last
N=24
IMAGE_PROMPT="What differs?"
not() { ! "$@"; }
holds() { # holds FILE EXPR: EXPR is true of the JSON object d in FILE
    /usr/bin/python3 -c "import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if ($2) else 1)" "$1"
}

metric() { # metric PORT NAME: the value of a Prometheus series on 127.0.0.1:PORT
    /usr/bin/python3 - "$1" "$2" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
print(next((l.split()[1] for l in text.splitlines() if l.split()[0:1] == [sys.argv[2]]), "none"))
PY
}

/usr/bin/python3 "$(dirname "$0")/random_images.py" "$E2E_DIR" --seed 14 --count 3 --size 40 160 --name i
IMAGE_ROWS=$(/usr/bin/python3 -c "import json,sys; v=json.load(open(sys.argv[1]))['vision_config']
print((v['image_size'] // v['patch_size'] // 2) ** 2 + 2)" "$MODEL/config.json")

# ---- references: glm4v-run alone ---------------------------------------------------------------
"$BIN/glm4v-run" --model "$MODEL" --prompt "$PROMPT" --max-new-tokens $N --json >"$E2E_DIR/ref.json" \
    2>/dev/null
e2e_check "glm4v-run: the answer to '$PROMPT' holds token 0 before its end (else pick another prompt)" \
    holds "$E2E_DIR/ref.json" "0 in d['generated_ids'][:-2]"
images() { # images K: the --image flags of the first K test images
    local i
    for ((i = 0; i < $1; i++)); do printf -- '--image\n%s\n' "$E2E_DIR/i$i.png"; done
}
for k in 0 1 3; do
    mapfile -t IMGS < <(images $k)
    [ $k -gt 0 ] && p=$IMAGE_PROMPT || p=$PROMPT
    "$BIN/glm4v-run" --model "$MODEL" --prompt "$p" "${IMGS[@]}" --max-new-tokens 4 --json \
        >"$E2E_DIR/ref-img$k.json" 2>/dev/null
done
e2e_check "image rows $IMAGE_ROWS: glm4v-run's 3-image prompt is 3 x (rows - 3) longer than its ids" \
    holds "$E2E_DIR/ref-img3.json" "d['spliced_length'] == len(d['prompt_ids']) + 3 * ($IMAGE_ROWS - 3)"

MPORT=$(e2e_free_port)
e2e_start_replica r1 2 --metrics-port "$MPORT" || exit 1

# ---- the NUL token through glm4v-submit ----------------------------------------------------------
e2e_submit --id nul --prompt "$PROMPT" --max-new-tokens $N --temperature 0 >"$E2E_DIR/nul.json"
e2e_check "served ids are glm4v-run's" [ "$(e2e_json "$E2E_DIR/nul.json" "d['token_ids']")" = \
    "$(e2e_json "$E2E_DIR/ref.json" "d['generated_ids']")" ]
"${CHECK[@]}" expect "$E2E_DIR/nul.json" "$BIN/glm4v-tokenize" "$MODEL/tokenizer.model" "$E2E_DIR/want.txt"
e2e_check "the expected text holds a NUL with text after it" /usr/bin/python3 -c \
    "import sys; b=open(sys.argv[1],'rb').read(); sys.exit(0 if 0 in b[:-1] else 1)" "$E2E_DIR/want.txt"
e2e_check "glm4v-run --json: the whole text" "${CHECK[@]}" text "$E2E_DIR/ref.json" "$E2E_DIR/want.txt"
e2e_check "glm4v-submit --json: the whole text" "${CHECK[@]}" text "$E2E_DIR/nul.json" "$E2E_DIR/want.txt"
e2e_check "glm4v-submit --json: the NUL written \\u0000" grep -qF '\u0000' "$E2E_DIR/nul.json"
# text mode: the streamed chunks, then the Result; a chunk cut at its NUL would make the follower
# print the Result again after a note (stream_follow.h)
"$BIN/glm4v-submit" --redis "$REDIS_URL" --prefix "$PREFIX" --id nul-text --prompt "$PROMPT" \
    --max-new-tokens $N --temperature 0 >"$E2E_DIR/nul.txt" 2>"$E2E_DIR/nul-text.err"
e2e_check "glm4v-submit text: the streamed chunks are the text, once" cmp "$E2E_DIR/nul.txt" \
    <(cat "$E2E_DIR/want.txt"; echo)
e2e_check "glm4v-submit text: no reprint note" not grep -q "differs" "$E2E_DIR/nul-text.err"

# ---- usage.prompt_tokens for 0, 1 and 3 images (glm4v-submit) --------------------------------------
for k in 0 1 3; do
    mapfile -t IMGS < <(images $k)
    [ $k -gt 0 ] && p=$IMAGE_PROMPT || p=$PROMPT
    e2e_submit --id "img$k" --prompt "$p" "${IMGS[@]}" --max-new-tokens 4 --temperature 0 \
        >"$E2E_DIR/img$k.json"
    ids=$(e2e_json "$E2E_DIR/ref-img$k.json" "len(d['prompt_ids'])")
    spliced=$(e2e_json "$E2E_DIR/ref-img$k.json" "d['spliced_length']")
    e2e_check "glm4v-submit, $k images: usage.prompt_tokens" "${CHECK[@]}" usage "$E2E_DIR/img$k.json" \
        usage.prompt_tokens "$ids" $k "$IMAGE_ROWS" "$spliced"
    e2e_check "glm4v-submit, $k images: usage.image_tokens = $k x $IMAGE_ROWS" [ \
        "$(e2e_json "$E2E_DIR/img$k.json" "d['usage']['image_tokens']")" = $((k * IMAGE_ROWS)) ]
done

# ---- glm4v-sweep: the NUL row and a 3-image row ----------------------------------------------------
cat >"$E2E_DIR/q.jsonl" <<EOF
{"id": "nul", "prompt": "$PROMPT", "max_new_tokens": $N}
{"id": "three", "image": ["i0.png", "i1.png", "i2.png"], "prompt": "$IMAGE_PROMPT", "max_new_tokens": 4}
EOF
"$BIN/glm4v-sweep" --redis "$REDIS_URL" --prefix "$PREFIX" --in "$E2E_DIR/q.jsonl" \
    --out "$E2E_DIR/a.jsonl" --job-prefix sw- --ordered 2>"$E2E_DIR/sweep.err"
e2e_check "glm4v-sweep: 2 lines" [ "$(wc -l <"$E2E_DIR/a.jsonl")" = 2 ]
head -n 1 "$E2E_DIR/a.jsonl" >"$E2E_DIR/sweep-nul.json"
tail -n 1 "$E2E_DIR/a.jsonl" >"$E2E_DIR/sweep-three.json"
e2e_check "glm4v-sweep: the whole text" "${CHECK[@]}" text "$E2E_DIR/sweep-nul.json" "$E2E_DIR/want.txt"
e2e_check "glm4v-sweep: the NUL written \\u0000" grep -qF '\u0000' "$E2E_DIR/sweep-nul.json"
e2e_check "glm4v-sweep, 3 images: usage.prompt_tokens" "${CHECK[@]}" usage "$E2E_DIR/sweep-three.json" \
    usage.prompt_tokens "$(e2e_json "$E2E_DIR/ref-img3.json" "len(d['prompt_ids'])")" 3 "$IMAGE_ROWS" \
    "$(e2e_json "$E2E_DIR/ref-img3.json" "d['spliced_length']")"
# a resumed sweep reads the \u0000 line back as done: nothing is submitted again
"$BIN/glm4v-sweep" --redis "$REDIS_URL" --prefix "$PREFIX" --in "$E2E_DIR/q.jsonl" \
    --out "$E2E_DIR/a.jsonl" --job-prefix sw- 2>"$E2E_DIR/sweep2.err"
e2e_check "glm4v-sweep resumed: still 2 lines" [ "$(wc -l <"$E2E_DIR/a.jsonl")" = 2 ]

# ---- the replica's counters: the same positions, each job once --------------------------------------
sum=$(cat "$E2E_DIR"/nul.json "$E2E_DIR"/img*.json "$E2E_DIR/a.jsonl" |
    /usr/bin/python3 -c "import json,sys; print(sum(json.loads(l)['usage']['prompt_tokens'] for l in sys.stdin if l.strip()))")
sum=$((sum + $(e2e_json "$E2E_DIR/nul.json" "d['usage']['prompt_tokens']"))) # nul-text (text mode)
e2e_check "glm4v_prompt_tokens_total = sum of usage.prompt_tokens ($sum)" \
    [ "$(metric "$MPORT" glm4v_prompt_tokens_total)" = "$sum" ]
e2e_check "glm4v_prefix_cache_prompt_tokens_total (hit rate denominator) = the same sum ($sum)" \
    [ "$(metric "$MPORT" glm4v_prefix_cache_prompt_tokens_total)" = "$sum" ]

# ---- glm4v-gateway: JSON text with \u0000, usage ----------------------------------------------------
if gw_start main; then
    body='{"model":"glm-4v-9b","temperature":0,"max_tokens":'$N',"messages":[{"role":"user","content":"'$PROMPT'"}]}'
    code=$(gw_chat "$GW_PORT" "$body")
    cp "$E2E_DIR/body" "$E2E_DIR/gw.json"
    e2e_check "gateway: 200 ($code)" [ "$code" = 200 ]
    e2e_check "gateway: the whole text in message.content" "${CHECK[@]}" text "$E2E_DIR/gw.json" \
        "$E2E_DIR/want.txt" choices.0.message.content
    e2e_check "gateway: the NUL written \\u0000" grep -qF '\u0000' "$E2E_DIR/gw.json"
    e2e_check "gateway: usage.prompt_tokens is glm4v-submit's" [ \
        "$(e2e_json "$E2E_DIR/gw.json" "d['usage']['prompt_tokens']")" = \
        "$(e2e_json "$E2E_DIR/nul.json" "d['usage']['prompt_tokens']")" ]
    code=$(gw_chat "$GW_PORT" "${body%\}},\"stream\":true}")
    cp "$E2E_DIR/body" "$E2E_DIR/gw.sse"
    e2e_check "gateway stream: 200 ($code)" [ "$code" = 200 ]
    e2e_check "gateway stream: the deltas are the whole text" "${CHECK[@]}" sse "$E2E_DIR/gw.sse" \
        "$E2E_DIR/want.txt"
    e2e_check "gateway stream: the NUL written \\u0000" grep -qF '\u0000' "$E2E_DIR/gw.sse"
    png=$(base64 -w0 "$E2E_DIR/i0.png")
    body='{"model":"glm-4v-9b","temperature":0,"max_tokens":4,"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,'$png'"}},{"type":"text","text":"'$IMAGE_PROMPT'"}]}]}'
    code=$(gw_chat "$GW_PORT" "$body")
    cp "$E2E_DIR/body" "$E2E_DIR/gw-img1.json"
    e2e_check "gateway, 1 image: usage.prompt_tokens ($code)" "${CHECK[@]}" usage "$E2E_DIR/gw-img1.json" \
        usage.prompt_tokens "$(e2e_json "$E2E_DIR/ref-img1.json" "len(d['prompt_ids'])")" 1 "$IMAGE_ROWS" \
        "$(e2e_json "$E2E_DIR/ref-img1.json" "d['spliced_length']")"
else
    e2e_check "glm4v-gateway started" false
fi

e2e_finish test_serve_wire
