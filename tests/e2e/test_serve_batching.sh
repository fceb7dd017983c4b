#!/usr/bin/env bash
# Batching invariance and sampling, end to end: a real redis-server, `mpirun glm4v-serve` on the
# CPU backend, jobs sent with glm4v-submit.
#  - 64 concurrent greedy jobs (text and image, different lengths) give exactly the ids glm4v-run
#    gives for each alone;
#  - seeded sampling is reproducible, temperature spreads the outputs, top-k 1 is greedy;
#  - stop strings and max_new_tokens end jobs with the right finish reason.
# usage: test_serve_batching.sh BIN_DIR TESTDATA
source "$(dirname "$0")/serve_lib.sh"
e2e_setup "$1" "$2"

/usr/bin/python3 "$(dirname "$0")/random_images.py" "$E2E_DIR" --seed 7 --count 8 --size 20 300 \
    --alternate-jpg
prompts=("Describe the picture in detail." "What is in the image?" "Hello" \
    "Write a long story about a cat who lives on a red sofa and dreams of the sea, then explain it." \
    "1 2 3 4 5 6 7 8 9" "图片中有什么？" "Short." "Tell me everything you can see, in order.")
image_of() { local i=$1; local n=$((i / 2 % 8)); [ $((n % 2)) -eq 1 ] && echo "$E2E_DIR/img$n.png" || echo "$E2E_DIR/img$n.jpg"; }

e2e_start_replica r0 1 --max-batch 16 --max-tokens-per-step 96 --prefill-chunk 32 || exit 1

# 64 jobs at once
for i in $(seq 0 63); do
    args=(--id "batch-$i" --prompt "${prompts[$((i % 8))]}" --max-new-tokens $((4 + i % 9)) --temperature 0)
    [ $((i % 2)) -eq 1 ] && args+=(--image "$(image_of "$i")")
    e2e_submit "${args[@]}" --timeout 300 >"$E2E_DIR/out-$i.json" 2>"$E2E_DIR/err-$i" &
    pids+=($!)
done
wait "${pids[@]}"
pids=()
# the same jobs one by one through glm4v-run
for i in $(seq 0 63); do
    args=(--prompt "${prompts[$((i % 8))]}" --max-new-tokens $((4 + i % 9)))
    [ $((i % 2)) -eq 1 ] && args+=(--image "$(image_of "$i")")
    "$BIN/glm4v-run" --model "$MODEL" "${args[@]}" --json >"$E2E_DIR/ref-$i.json" 2>/dev/null
    served=$(e2e_json "$E2E_DIR/out-$i.json" "d['token_ids']" 2>/dev/null)
    alone=$(e2e_json "$E2E_DIR/ref-$i.json" "d['generated_ids']" 2>/dev/null)
    e2e_check "job $i: served $served vs alone $alone" [ -n "$served" ] --and [ "$served" = "$alone" ]
done
e2e_check "each job answered once" [ "$(e2e_result_count batch-17)" = 1 ]

# sampling: the same seed twice gives the same ids; several seeds spread; top-k 1 is greedy
p="Describe the picture in detail."
e2e_submit --id s1 --prompt "$p" --max-new-tokens 10 --temperature 1 --seed 5 >"$E2E_DIR/s1.json"
e2e_submit --id s2 --prompt "$p" --max-new-tokens 10 --temperature 1 --seed 5 >"$E2E_DIR/s2.json"
e2e_check "seeded sampling reproducible" [ "$(e2e_json "$E2E_DIR/s1.json" "d['token_ids']")" = \
    "$(e2e_json "$E2E_DIR/s2.json" "d['token_ids']")" ]
for seed in 1 2 3 4 5 6; do
    e2e_submit --prompt "$p" --max-new-tokens 6 --temperature 1.5 --seed $seed | \
        /usr/bin/python3 -c "import json,sys; print(json.load(sys.stdin)['token_ids'])"
done >"$E2E_DIR/spread"
e2e_check "temperature spreads outputs" [ "$(sort -u "$E2E_DIR/spread" | wc -l)" -ge 3 ]
for seed in 1 2 3; do
    e2e_submit --prompt "$p" --max-new-tokens 6 --temperature 0 --seed $seed | \
        /usr/bin/python3 -c "import json,sys; print(json.load(sys.stdin)['token_ids'])"
done >"$E2E_DIR/greedy"
e2e_check "greedy ignores the seed" [ "$(sort -u "$E2E_DIR/greedy" | wc -l)" -eq 1 ]
e2e_submit --prompt "$p" --max-new-tokens 6 --temperature 1 --top-k 1 --seed 9 >"$E2E_DIR/k1.json"
e2e_check "top-k 1 equals greedy" [ "$(e2e_json "$E2E_DIR/k1.json" "d['token_ids']")" = \
    "$(head -1 "$E2E_DIR/greedy")" ]

# finish reasons: length, and a stop string cut out of the greedy text
e2e_submit --id len --prompt "$p" --max-new-tokens 5 --temperature 0 >"$E2E_DIR/len.json"
e2e_check "max_new_tokens -> length" [ "$(e2e_json "$E2E_DIR/len.json" \
    "d['finish_reason'], len(d['token_ids'])")" = "length 5" ]
e2e_submit --id full --prompt "Hello" --max-new-tokens 12 --temperature 0 >"$E2E_DIR/full.json"
stop=$(e2e_json "$E2E_DIR/full.json" "d['text'][3:5]")
e2e_submit --id stopped --prompt "Hello" --max-new-tokens 12 --temperature 0 --stop "$stop" \
    >"$E2E_DIR/stopped.json"
e2e_check "stop string -> stop_string, text cut before it" [ "$(e2e_json "$E2E_DIR/stopped.json" \
    "d['finish_reason'] == 'stop_string' and d['text'] == json.load(open('$E2E_DIR/full.json'))['text'][:3]")" = True ]

e2e_finish serve_batching
