#!/usr/bin/env bash
# glm4v-run's several-image inputs (issue 22), their errors (exit 2 and a message saying what is
# wrong) and good paths: --pixels [n,3,S,S] and repeated, --messages with {"image": K}, repeated
# --image; the tensor-parallel group learns the image count from rank 0.
#   usage: test_run_multi_cli.sh GLM4V_RUN TINY_A MPIEXEC
set -u
run=$1 a=$2 mpiexec=$3
passed=0 failed=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
g=$a/golden-multi-image.safetensors

expect() { # expect CODE PATTERN -- command...: exits CODE, stderr (or stdout for 0) matches PATTERN
    local code=$1 pattern=$2
    shift 3
    "$@" >"$tmp/out" 2>"$tmp/err" </dev/null
    local got=$? where=$tmp/err
    [ "$code" -eq 0 ] && where=$tmp/out
    if [ "$got" -eq "$code" ] && grep -qE -- "$pattern" "$where"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "FAIL: '$*' exited $got (want $code, /$pattern/):" >&2
        sed 's/^/    /' "$tmp/err" "$tmp/out" | head -5 >&2
    fi
}
/usr/bin/python3 - "$a/golden-multi-image.json" "$tmp" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for c in d["cases"]:
    json.dump({"messages": c["messages"]}, open(f"{sys.argv[2]}/{c['name']}.json", "w"))
    open(f"{sys.argv[2]}/{c['name']}.ids", "w").write(",".join(map(str, c["input_ids"])))
    open(f"{sys.argv[2]}/{c['name']}.greedy", "w").write(",".join(map(str, c["greedy_ids"])))
PY
two=$(cat "$tmp/two_images.ids")
greedy=$(cat "$tmp/two_images.greedy")
late=$(cat "$tmp/late_image.ids")

# good: [2,3,S,S] for two markers, at TP 1 and 2; the same two images as two [1,...] tensors
# (late_image's single image twice is not the golden: only the shape path is checked there)
expect 0 "\"generated_ids\":\[${greedy}\]" -- "$run" --model "$a" --input-ids "$two" \
    --pixels "$g:two_images.pixel_values" --max-new-tokens 12 --ignore-eos --json
expect 0 "\"generated_ids\":\[${greedy}\]" -- "$mpiexec" --oversubscribe -np 2 "$run" --tp 2 \
    --model "$a" --input-ids "$two" --pixels "$g:two_images.pixel_values" --max-new-tokens 12 \
    --ignore-eos --json
expect 0 "\"images\":2" -- "$run" --model "$a" --input-ids "$two" --pixels "$g:late_image.pixel_values" \
    --pixels "$g:late_image.pixel_values" --max-new-tokens 1 --json
# good: --messages rebuilds the golden ids
expect 0 "\"prompt_ids\":\[$(cat "$tmp/turns.ids")\]" -- "$run" --model "$a" --messages "$tmp/turns.json" \
    --pixels "$g:turns.pixel_values" --max-new-tokens 1 --json

# errors
expect 2 "2 image markers but 1 images" -- "$run" --model "$a" --input-ids "$two" \
    --pixels "$g:late_image.pixel_values"
expect 2 "1 image markers but 2 images" -- "$run" --model "$a" --input-ids "$late" \
    --pixels "$g:two_images.pixel_values"
expect 2 "each of the 1 given image" -- "$run" --model "$a" --messages "$tmp/two_images.json" \
    --pixels "$g:late_image.pixel_values"
expect 2 "uses 1 image\(s\), 2 were given" -- "$run" --model "$a" --messages "$tmp/late_image.json" \
    --pixels "$g:two_images.pixel_values"
expect 2 "put the system message" -- "$run" --model "$a" --messages "$tmp/turns.json" --system x
expect 2 "exactly one of" -- "$run" --model "$a" --messages "$tmp/turns.json" --prompt x
nine=() five_pixels=()
for _ in $(seq 9); do nine+=(--image "$tmp/x.png"); done
for _ in $(seq 5); do five_pixels+=(--pixels "$g:two_images.pixel_values"); done
expect 2 "more than 8 images" -- "$run" --model "$a" --prompt x "${nine[@]}"
expect 2 "more than 8 images" -- "$run" --model "$a" --input-ids "$two" "${five_pixels[@]}"
echo '[{"role": "user", "content": [{"image": "a.png"}]}]' >"$tmp/path.json"
expect 2 "each of the 1 given image" -- "$run" --model "$a" --messages "$tmp/path.json" \
    --pixels "$g:late_image.pixel_values"
echo '[{"role": "user", "content": [{"image": 0}, {"image": 0}]}]' >"$tmp/twice.json"
expect 2 "once" -- "$run" --model "$a" --messages "$tmp/twice.json" --pixels "$g:two_images.pixel_values"
echo '{"messages": [' >"$tmp/bad.json"
expect 2 "not valid JSON" -- "$run" --model "$a" --messages "$tmp/bad.json"

echo "run_multi_cli: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
