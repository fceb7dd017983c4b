#!/usr/bin/env bash
# Checkpoint load benchmark: writes a synthetic ~2 GB bf16 checkpoint (2 shards + index), then
# times plain read() of its files against our load path (open + glm_tensor_read_block of every
# tensor into F32 and into BF16), cold (files dropped from the page cache with
# posix_fadvise(DONTNEED)) and warm, each phase in its own process for its own peak RSS.
# Prints a markdown table row for docs/PERF.md. The generated files are removed at the end.
#
#   scripts/bench-load.sh [DIR]        (env: BENCH_LOAD_BIN, SIZE_MB=2048, BUILD_DIR=build)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${BENCH_LOAD_BIN:-$root/${BUILD_DIR:-build}/bin/bench_load}
size_mb=${SIZE_MB:-2048}
if [[ ! -x $bin ]]; then
    echo "bench_load not found at $bin: cmake --build <build> --target bench_load" >&2
    exit 1
fi

if [[ $# -ge 1 ]]; then
    dir=$1
    mkdir -p "$dir"
    made_dir=0
else
    dir=$(mktemp -d "${TMPDIR:-/tmp}/glm4v-bench-load.XXXXXX")
    made_dir=1
fi
cleanup() {
    "$bin" clean "$dir" 2>/dev/null || true
    if [[ $made_dir == 1 ]]; then rmdir "$dir" 2>/dev/null || true; fi
}
trap cleanup EXIT

"$bin" gen "$dir" "$size_mb"

field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }
# measure ARGS...: "mbps rss_mb" of one bench_load run
measure() {
    local out
    out=$("$bin" "$@")
    echo "$(echo "$out" | field mbps) $(echo "$out" | field rss_mb)"
}

read -r read_cold _ < <(measure read "$dir" cold)
read -r read_warm _ < <(measure read "$dir" warm)
read -r f32_cold _ < <(measure load "$dir" f32 cold)
read -r f32_warm f32_rss < <(measure load "$dir" f32 warm)
read -r f32_pre _ < <(BENCH_LOAD_PREFAULT=1 measure load "$dir" f32 warm)
read -r bf16_cold _ < <(measure load "$dir" bf16 cold)
read -r bf16_warm bf16_rss < <(measure load "$dir" bf16 warm)

total_mb=$(du -cm "$dir"/*.safetensors | tail -1 | cut -f1)
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
fs=$(df -T "$dir" | awk 'NR == 2 { print $2 }')

echo
# MB/s are checkpoint (bf16) bytes per second. "F32 warm, arena pre-faulted" excludes the
# kernel zeroing a fresh 4 GB destination on first touch.
echo "| date | host | checkpoint | read() cold / warm MB/s | load->F32 cold / warm MB/s | load->F32 warm, arena pre-faulted MB/s | load->BF16 cold / warm MB/s | peak RSS F32 / BF16 MB |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
printf '| %s | %s, %s cores, %s | %s MB bf16, 2 shards | %s / %s | %s / %s | %s | %s / %s | %s / %s |\n' \
    "$(date +%Y-%m-%d)" "$cpu" "$(nproc)" "$fs" "$total_mb" "$read_cold" "$read_warm" \
    "$f32_cold" "$f32_warm" "$f32_pre" "$bf16_cold" "$bf16_warm" "$f32_rss" "$bf16_rss"
