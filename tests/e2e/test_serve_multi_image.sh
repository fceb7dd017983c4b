#!/usr/bin/env bash
# Several images in one conversation, end to end (issue 22): a real redis-server, `mpirun
# glm4v-serve` on the CPU backend at TP 1 and TP 2, jobs sent with glm4v-submit.
#  - the golden-multi-image conversations (.json messages: two images in one message, an image in
#    each of two turns, a text turn then an image) sent with `glm4v-submit --messages`: glm4v-run
#    --messages rebuilds exactly the golden ids from them, and the server answers each with the
#    ids glm4v-run gives for it (the same image files);
#  - a mixed batch of 0-, 1- and 3-image jobs in one replica (prefill chunks cutting inside
#    images) gives every job the ids it gets alone;
#  - 5 images (over --max-images-per-prompt 4), 4 over a replica's limit of 3: TOO_MANY_IMAGES
#    (and a --vision-cache below the limit refused at start); 4 images past the context:
#    PROMPT_TOO_LONG; a corrupt second image: BAD_IMAGE naming image 2, while a good job sent with
#    it is answered.
# usage: test_serve_multi_image.sh BIN_DIR TESTDATA
source "$(dirname "$0")/serve_lib.sh"
e2e_setup "$1" "$2"
GOLDEN=$MODEL/golden-multi-image.json

/usr/bin/python3 "$(dirname "$0")/random_images.py" "$E2E_DIR" --seed 22 --count 5 --size 30 200 \
    --alternate-jpg
/usr/bin/python3 - "$E2E_DIR" "$GOLDEN" <<'PY'
import json, random, sys
d, golden = sys.argv[1], sys.argv[2]
rnd = random.Random(22)
good = open(f"{d}/img1.png", "rb").read()
open(f"{d}/corrupt.png", "wb").write(good[:40] + bytes(rnd.randrange(256) for _ in range(200)))
for c in json.load(open(golden))["cases"]:
    json.dump({"messages": c["messages"]}, open(f"{d}/{c['name']}.json", "w"))
    open(f"{d}/{c['name']}.ids", "w").write(json.dumps(c["input_ids"]))
PY
CASES=(two_images turns late_image)
images_of() { # images_of CASE: the --image flags a golden case's messages refer to
    local n
    n=$(e2e_json "$E2E_DIR/$1.json" "sum(1 for m in d['messages'] for p in m['content'] if 'image' in p)")
    for k in $(seq 0 $((n - 1))); do printf -- '--image\n%s\n' "$E2E_DIR/img$k.$([ $((k % 2)) = 1 ] && echo png || echo jpg)"; done
}

# glm4v-run alone: the template rebuilds the golden ids from the messages; its answer is the reference
for c in "${CASES[@]}"; do
    mapfile -t imgs < <(images_of "$c")
    "$BIN/glm4v-run" --model "$MODEL" --messages "$E2E_DIR/$c.json" "${imgs[@]}" --max-new-tokens 12 \
        --ignore-eos --json >"$E2E_DIR/ref-$c.json" 2>"$E2E_DIR/ref-$c.err"
    e2e_check "$c: glm4v-run --messages gives the golden ids" [ "$(e2e_json "$E2E_DIR/ref-$c.json" \
        "d['prompt_ids']" 2>/dev/null | tr -d ' ')" = "$(tr -d ' ' <"$E2E_DIR/$c.ids")" ]
done
# the mixed batch's references: 0, 1 and 3 images in one user message
mixed_args() { # mixed_args I: the flags of mixed job I
    local n=$(($1 % 3)) prompt
    prompt=$([ $(($1 % 2)) = 0 ] && echo "Describe the picture in detail." || echo "What is shown?")
    printf -- '--prompt\n%s\n--max-new-tokens\n%s\n' "$prompt" $((3 + $1 % 5))
    [ $n -ge 1 ] && printf -- '--image\n%s\n' "$E2E_DIR/img$(($1 % 4)).$([ $(($1 % 4 % 2)) = 1 ] && echo png || echo jpg)"
    [ $n -ge 2 ] && printf -- '--image\n%s\n--image\n%s\n' "$E2E_DIR/img4.jpg" "$E2E_DIR/img1.png"
    return 0
}
for i in $(seq 0 11); do
    mapfile -t a < <(mixed_args "$i")
    "$BIN/glm4v-run" --model "$MODEL" "${a[@]}" --json >"$E2E_DIR/mref-$i.json" 2>/dev/null
done

served_vs_alone() { # served_vs_alone TP
    local tp=$1 c i
    for c in "${CASES[@]}"; do
        mapfile -t imgs < <(images_of "$c")
        e2e_submit --id "tp$tp-$c" --messages "$E2E_DIR/$c.json" "${imgs[@]}" --max-new-tokens 12 \
            --ignore-eos --temperature 0 >"$E2E_DIR/out-$tp-$c.json" 2>"$E2E_DIR/out-$tp-$c.err"
        local served alone
        served=$(e2e_json "$E2E_DIR/out-$tp-$c.json" "d['token_ids']" 2>/dev/null)
        alone=$(e2e_json "$E2E_DIR/ref-$c.json" "d['generated_ids']" 2>/dev/null)
        e2e_check "tp $tp $c: served $served vs glm4v-run $alone" [ -n "$served" ] --and [ "$served" = "$alone" ]
    done
    # 12 jobs of 0, 1 and 3 images at once
    for i in $(seq 0 11); do
        mapfile -t a < <(mixed_args "$i")
        e2e_submit --id "tp$tp-mixed-$i" "${a[@]}" --temperature 0 >"$E2E_DIR/mout-$tp-$i.json" \
            2>/dev/null &
        pids+=($!)
    done
    wait "${pids[@]}"
    pids=()
    for i in $(seq 0 11); do
        local served alone
        served=$(e2e_json "$E2E_DIR/mout-$tp-$i.json" "d['token_ids']" 2>/dev/null)
        alone=$(e2e_json "$E2E_DIR/mref-$i.json" "d['generated_ids']" 2>/dev/null)
        e2e_check "tp $tp mixed job $i ($((i % 3 == 2 ? 3 : i % 3)) images): served $served vs alone $alone" \
            [ -n "$served" ] --and [ "$served" = "$alone" ]
    done
}

error_of() { e2e_json "$1" "(d.get('error') or {}).get('code'), (d.get('error') or {}).get('message')" 2>/dev/null; }

e2e_start_replica r1 1 --max-batch 8 --max-tokens-per-step 48 --prefill-chunk 16 --vision-cache 6 || exit 1
served_vs_alone 1
# the prefix cache keys each image by its own bytes: a prompt equal to an earlier one up to its
# second image, and the earlier one again, still get the ids they get alone
for pair in "img0.jpg img1.png" "img0.jpg img2.jpg" "img0.jpg img1.png"; do
    read -r first second <<<"$pair"
    e2e_submit --prompt "Compare the two pictures." --image "$E2E_DIR/$first" --image "$E2E_DIR/$second" \
        --max-new-tokens 5 --temperature 0 >"$E2E_DIR/pfx.json" 2>/dev/null
    "$BIN/glm4v-run" --model "$MODEL" --prompt "Compare the two pictures." --image "$E2E_DIR/$first" \
        --image "$E2E_DIR/$second" --max-new-tokens 5 --json >"$E2E_DIR/pfx.ref" 2>/dev/null
    served=$(e2e_json "$E2E_DIR/pfx.json" "d['token_ids']" 2>/dev/null)
    alone=$(e2e_json "$E2E_DIR/pfx.ref" "d['generated_ids']" 2>/dev/null)
    e2e_check "prefix cache, $first + $second: served $served vs alone $alone" [ -n "$served" ] --and [ "$served" = "$alone" ]
done
# the limit and the context, each failing its own job only
five=()
for k in 0 1 2 3 4; do five+=(--image "$E2E_DIR/img$k.$([ $((k % 2)) = 1 ] && echo png || echo jpg)"); done
e2e_submit --id five --prompt "Compare them." "${five[@]}" >"$E2E_DIR/five.json" 2>/dev/null
e2e_check "5 images: TOO_MANY_IMAGES ($(error_of "$E2E_DIR/five.json"))" \
    grep -q "TOO_MANY_IMAGES" <<<"$(error_of "$E2E_DIR/five.json")"
"$BIN/glm4v-run" --model "$MODEL" --prompt "Compare them." "${five[@]:0:8}" --max-new-tokens 0 --json \
    >"$E2E_DIR/four.json" 2>/dev/null
spliced=$(e2e_json "$E2E_DIR/four.json" "d['spliced_length']")
seq_len=$(e2e_json "$MODEL/config.json" "d['seq_length']")
e2e_submit --id long --prompt "Compare them." "${five[@]:0:8}" --max-new-tokens $((seq_len - spliced + 1)) \
    >"$E2E_DIR/long.json" 2>/dev/null
e2e_check "4 images past the context: PROMPT_TOO_LONG ($(error_of "$E2E_DIR/long.json"))" \
    grep -q "PROMPT_TOO_LONG" <<<"$(error_of "$E2E_DIR/long.json")"
# a corrupt second image fails its job alone, named
e2e_submit --id corrupt --prompt "What is shown?" --image "$E2E_DIR/img0.jpg" --image "$E2E_DIR/corrupt.png" \
    >"$E2E_DIR/corrupt.json" 2>/dev/null &
pids+=($!)
e2e_submit --id beside --prompt "What is shown?" --image "$E2E_DIR/img0.jpg" --image "$E2E_DIR/img1.png" \
    --max-new-tokens 4 >"$E2E_DIR/beside.json" 2>/dev/null &
pids+=($!)
wait "${pids[@]}"
pids=()
e2e_check "corrupt second image: BAD_IMAGE naming image 2 ($(error_of "$E2E_DIR/corrupt.json"))" \
    grep -q "BAD_IMAGE.*image 2 of 2" <<<"$(error_of "$E2E_DIR/corrupt.json")"
e2e_check "the job beside it is answered" [ "$(e2e_json "$E2E_DIR/beside.json" "len(d['token_ids'])" 2>/dev/null)" = 4 ]
e2e_check "a refused job is answered once" [ "$(e2e_result_count five)" = 1 ]
# glm4v-sweep lines with a list of images, and with images inside the messages of two turns
cat >"$E2E_DIR/q.jsonl" <<'JSONL'
{"id": "sw-two", "image": ["img0.jpg", "img1.png"], "prompt": "Describe the picture in detail."}
{"id": "sw-turns", "messages": [{"role": "user", "content": "What is shown?", "image": "img0.jpg"}, {"role": "assistant", "content": "A cat is sitting on a red sofa."}, {"role": "user", "content": "Describe the picture in detail.", "image": ["img1.png", "img2.jpg"]}]}
{"id": "sw-bad", "image": ["img0.jpg", "missing.png"], "prompt": "x"}
JSONL
cat >"$E2E_DIR/sw-turns.json" <<'JSON'
[{"role": "user", "content": [{"image": 0}, {"text": "What is shown?"}]}, {"role": "assistant", "content": "A cat is sitting on a red sofa."}, {"role": "user", "content": [{"image": 1}, {"image": 2}, {"text": "Describe the picture in detail."}]}]
JSON
"$BIN/glm4v-sweep" --redis "$REDIS_URL" --prefix "$PREFIX" --max-new-tokens 6 --in "$E2E_DIR/q.jsonl" \
    --out "$E2E_DIR/a.jsonl" --image-root "$E2E_DIR" 2>"$E2E_DIR/sweep.err"
row() { # row ID EXPR: EXPR over the sweep's output row d of ID
    /usr/bin/python3 -c "import json,sys
for l in open(sys.argv[1]):
    d = json.loads(l)
    if d['id'] == sys.argv[2]: print($2)" "$E2E_DIR/a.jsonl" "$1"
}
"$BIN/glm4v-run" --model "$MODEL" --prompt "Describe the picture in detail." --image "$E2E_DIR/img0.jpg" \
    --image "$E2E_DIR/img1.png" --max-new-tokens 6 --json >"$E2E_DIR/sw-two.ref" 2>/dev/null
"$BIN/glm4v-run" --model "$MODEL" --messages "$E2E_DIR/sw-turns.json" --image "$E2E_DIR/img0.jpg" \
    --image "$E2E_DIR/img1.png" --image "$E2E_DIR/img2.jpg" --max-new-tokens 6 --json \
    >"$E2E_DIR/sw-turns.ref" 2>/dev/null
for id in sw-two sw-turns; do
    got=$(row "$id" "d['token_ids']" 2>/dev/null)
    want=$(e2e_json "$E2E_DIR/$id.ref" "d['generated_ids']" 2>/dev/null)
    e2e_check "sweep $id: $got vs glm4v-run $want" [ -n "$got" ] --and [ "$got" = "$want" ]
done
e2e_check "sweep row with a missing second image: an error naming it ($(row sw-bad "d.get('error')" 2>/dev/null))" \
    grep -q "BAD_IMAGE.*missing.png" <<<"$(row sw-bad "d.get('error')" 2>/dev/null)"
# glm4v-submit's own checks: an --image the messages do not use, an index past the images given
e2e_submit --messages "$E2E_DIR/late_image.json" --image "$E2E_DIR/img0.jpg" --image "$E2E_DIR/img1.png" \
    >/dev/null 2>"$E2E_DIR/unused.err"
rc=$?
e2e_check "submit: unused --image refused (rc $rc)" [ $rc -eq 2 ] --and grep -q "is not used by" "$E2E_DIR/unused.err"
e2e_submit --messages "$E2E_DIR/turns.json" --image "$E2E_DIR/img0.jpg" >/dev/null 2>"$E2E_DIR/past.err"
rc=$?
e2e_check "submit: image index past the --image files refused (rc $rc)" [ $rc -eq 2 ] --and grep -q "refers to image 1" "$E2E_DIR/past.err"
e2e_kill_replica r1 "$REPLICA_PID"

# a vision cache smaller than the per-prompt limit could never admit a full prompt: refused at start
"$BIN/glm4v-serve" --model "$MODEL" --redis "$REDIS_URL" --prefix "$PREFIX" --vision-cache 2 \
    --max-images-per-prompt 3 >/dev/null 2>"$E2E_DIR/vc.err"
rc=$?
e2e_check "--vision-cache 2 < --max-images-per-prompt 3: exit 2 (rc $rc)" [ $rc -eq 2 ] --and grep -q "must hold" "$E2E_DIR/vc.err"
e2e_start_replica r2 2 --max-batch 8 --max-tokens-per-step 48 --prefill-chunk 16 --vision-cache 6 \
    --max-images-per-prompt 3 || exit 1
served_vs_alone 2
e2e_submit --id four --prompt "Compare them." "${five[@]:0:8}" >"$E2E_DIR/four-tp2.json" 2>/dev/null
e2e_check "4 images over --max-images-per-prompt 3: TOO_MANY_IMAGES ($(error_of "$E2E_DIR/four-tp2.json"))" \
    grep -q "TOO_MANY_IMAGES.*limit of 3" <<<"$(error_of "$E2E_DIR/four-tp2.json")"

e2e_finish serve_multi_image
