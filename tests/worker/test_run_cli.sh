#!/usr/bin/env bash
# glm4v-run's error handling: each bad input gets exit code 2 and a message that says what is
# wrong; the good paths print ids.  usage: test_run_cli.sh GLM4V_RUN TINY_A TINY_B MPIEXEC
set -u
run=$1 a=$2 b=$3 mpiexec=$4
passed=0 failed=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# expect CODE PATTERN -- command...: the command exits CODE and its stderr matches PATTERN
expect() {
    local code=$1 pattern=$2
    shift 3
    "$@" >"$tmp/out" 2>"$tmp/err" </dev/null
    local got=$?
    if [ "$got" -eq "$code" ] && grep -qE -- "$pattern" "$tmp/err"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "FAIL: '$*' exited $got (want $code), stderr:" >&2
        sed 's/^/    /' "$tmp/err" >&2
    fi
}

text_ids=402,404,407,10,68,262,99,408
expect 2 "outside the vocabulary" -- "$run" --model "$a" --input-ids 1,2,99999
expect 2 "bad id" -- "$run" --model "$a" --input-ids 1,x,3
expect 2 "no pixels" -- "$run" --model "$a" --input-ids 402,404,407,10,410,400,411,408
expect 2 "no <\|begin_of_image\|> marker" -- "$run" --model "$a" --input-ids "$text_ids" \
    --pixels "$a/golden.safetensors"
expect 2 "shape" -- "$run" --model "$a" --input-ids 402,404,407,10,410,400,411,408 \
    --pixels "$b/golden.safetensors"
expect 2 "image marker" -- "$run" --model "$a" --input-ids 402,410,400,408
expect 2 "exceeds seq_length" -- "$run" --model "$a" --input-ids "$text_ids" \
    --max-new-tokens 5000
expect 2 "unknown or incomplete option" -- "$run" --model "$a" --input-ids 1 --frobnicate
expect 2 "--model DIR is required" -- "$run" --input-ids 1
expect 2 "exactly one of" -- "$run" --model "$a"
expect 1 "config.json" -- "$run" --model "$tmp/nowhere" --input-ids 1
expect 2 "does not divide num_attention_heads" -- "$mpiexec" --oversubscribe -np 3 "$run" \
    --model "$a" --tp 3 --input-ids "$text_ids"
expect 2 "--tp 2 but mpirun started 1 rank" -- "$run" --model "$a" --tp 2 --input-ids 1

# and the good path: greedy ids of the golden text case, stopping at nothing
"$run" --model "$a" --input-ids "$text_ids" --max-new-tokens 3 --ignore-eos >"$tmp/out" 2>"$tmp/err"
if [ $? -eq 0 ] && [ "$(wc -w <"$tmp/out")" -eq 3 ]; then passed=$((passed + 1)); else
    failed=$((failed + 1)); echo "FAIL: good run printed '$(cat "$tmp/out")'" >&2; fi

echo "run_cli: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
