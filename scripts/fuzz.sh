#!/usr/bin/env bash
# Builds the libFuzzer harnesses with clang (ASan + UBSan) into build-fuzz/ and runs each for
# SECONDS (default 60) on a seed corpus made from the test data. Any crash, leak or timeout
# fails the script; findings are left in build-fuzz/findings/.
#   scripts/fuzz.sh [SECONDS] [HARNESS...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
jobs=$(nproc 2>/dev/null || echo 2)
CC=clang cmake -B build-fuzz -S . -DGLM4V_CUDA=OFF -DGLM4V_FUZZ=ON -DBUILD_TESTING=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
harnesses=("$@")
if [ ${#harnesses[@]} -eq 0 ]; then
    for f in tests/fuzz/fuzz_*.c; do h=$(basename "$f" .c); harnesses+=("${h#fuzz_}"); done
fi
targets=()
for h in "${harnesses[@]}"; do targets+=("fuzz_$h"); done
cmake --build build-fuzz -j"$jobs" --target "${targets[@]}"

testdata=$(cd ../shared/testdata && pwd)
export GLM4V_TESTDATA=$testdata
mkdir -p build-fuzz/findings
status=0
for h in "${harnesses[@]}"; do
    corpus=build-fuzz/corpus/$h
    mkdir -p "$corpus"
    # seeds: whatever files of the test data suit this parser
    case $h in
    safetensors) cp "$testdata"/glm4v-tiny-a/golden.safetensors "$corpus"/ 2>/dev/null || true ;;
    config) cp "$testdata"/glm4v-tiny-*/config.json "$corpus"/ 2>/dev/null || true ;;
    tokenizer) printf 'Describe the picture in detail.' >"$corpus"/seed ;;
    image) /usr/bin/python3 tests/coordinator/pillow/imagegen.py seeds "$corpus" >/dev/null ;;
    esac
    if [ -d tests/fuzz/seeds/$h ]; then cp tests/fuzz/seeds/$h/* "$corpus"/ 2>/dev/null || true; fi
    echo "fuzz: $h for ${seconds}s"
    if ! build-fuzz/bin/fuzz_"$h" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -max_len=65536 -artifact_prefix=build-fuzz/findings/"$h"- -print_final_stats=1 \
        "$corpus" 2>build-fuzz/fuzz_"$h".log; then
        echo "fuzz: $h FAILED (see build-fuzz/fuzz_$h.log)" >&2
        tail -40 build-fuzz/fuzz_"$h".log >&2
        status=1
    else
        grep -E "stat::number_of_executed_units|stat::peak_rss_mb" build-fuzz/fuzz_"$h".log |
            sed "s/^/fuzz: $h /"
    fi
done
exit $status
