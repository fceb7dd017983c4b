#!/usr/bin/env bash
# The gateway's overhead at saturation (issue 18; target under 3%): one replica, a private
# redis-server, and ROUNDS rounds of JOBS image + text jobs (TOKENS generated tokens each, EOS
# ignored, greedy) started all at once, alternately through glm4v-submit (one process per job,
# Redis straight) and through glm4v-gateway (one HTTP request per job, non-streaming and
# streaming). Prints one "gateway-bench" line per run and the overhead of each HTTP path against
# glm4v-submit in wall time (median of the rounds). Every job carries its own image and no two
# runs share one (a repeated image would measure the vision and prefix caches, not the path under
# real load); the server keeps its default caches. Each line also
# gives the CPU seconds of the clients (glm4v-submit processes, or the HTTP driver) and of the
# gateway, a figure that does not depend on what else the machine is doing.
#   source .devdeps/env.sh && scripts/bench-gateway.sh [--tp N] [--jobs N] [--tokens N] [--rounds N]
# On the CPU with the tiny model (a smoke run; figures are not GPU figures):
#   BENCH_DEVICE=cpu BENCH_MODEL=../shared/testdata/glm4v-tiny-b BUILD_DIR=build-cpu \
#       scripts/bench-gateway.sh --jobs 64 --tokens 64
# The GPU build needs libcurl among the packed libraries (pack-deps.sh .devdeps libcurl4-openssl-dev).
set -euo pipefail
cd "$(dirname "$0")/.."
tp=1 jobs=256 tokens=64 rounds=3
while [ $# -gt 0 ]; do
    case $1 in
    --tp) tp=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --tokens) tokens=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "bench-gateway.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
work=$(mktemp -d)
source scripts/bench-common.sh
if [ "$device" = cpu ]; then
    export OMP_NUM_THREADS=1 OMPI_MCA_rmaps_base_oversubscribe=1
    cmake --build "$B" -j"$(nproc)" --target glm4v-serve glm4v-submit glm4v-gateway >/dev/null
else
    bench_build glm4v-serve glm4v-submit glm4v-gateway
fi
bench_model_dir "$work/model"
# 8 + 8 warm-up images, then JOBS new ones for each run of each round (3 paths per round)
bench_images "$work/images" $((16 + 3 * rounds * jobs))
images=$work/images
next_image=16
bench_redis_start
bench_serve_start bench --max-batch 64
[ "$device" = cuda ] && nvidia-smi --query-gpu=name --format=csv,noheader | head -1
"$B/bin/glm4v-gateway" --redis "$url" --prefix bench --port 0 --max-connections 4096 \
    >"$work/gateway.log" 2>&1 &
gateway_pid=$!
trap 'kill -TERM $gateway_pid 2>/dev/null; wait $gateway_pid 2>/dev/null; bench_cleanup' EXIT
until grep -q listening "$work/gateway.log" 2>/dev/null; do
    kill -0 "$gateway_pid" 2>/dev/null || { cat "$work/gateway.log"; exit 1; }
    sleep 0.1
done
api=$(grep -o 'http://127.0.0.1:[0-9]*' "$work/gateway.log")

# warm-up through both paths (first image through the vision tower, first shapes)
python3 scripts/bench_gateway_load.py submit "$B/bin/glm4v-submit" "$url" bench 8 "$images" 0 "$tokens" >/dev/null
python3 scripts/bench_gateway_load.py http "$api" 8 "$images" 8 "$tokens" >/dev/null
# CPU seconds the gateway process has used so far (utime + stime from /proc)
gateway_cpu() {
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$gateway_pid/stat"
}
http_run() { # http_run PATH: one HTTP run with the gateway's CPU seconds appended to its line
    local before line
    before=$(gateway_cpu)
    line=$(python3 scripts/bench_gateway_load.py "$1" "$api" "$jobs" "$images" "$next_image" "$tokens")
    next_image=$((next_image + jobs))
    echo "$line gateway_cpu_s=$(awk -v a="$(gateway_cpu)" -v b="$before" 'BEGIN { printf "%.2f", a - b }')" |
        tee -a "$work/results.txt"
}
for r in $(seq "$rounds"); do
    python3 scripts/bench_gateway_load.py submit "$B/bin/glm4v-submit" "$url" bench "$jobs" "$images" \
        "$next_image" "$tokens" | tee -a "$work/results.txt"
    next_image=$((next_image + jobs))
    http_run http
    http_run http-stream
    echo "round $r done"
done
python3 - "$work/results.txt" <<'PY'
import re, statistics, sys
walls = {}
for line in open(sys.argv[1]):
    m = re.search(r"path=(\S+) .*wall_s=([\d.]+).*failed=(\d+)", line)
    if m:
        walls.setdefault(m.group(1), []).append(float(m.group(2)))
base = statistics.median(walls["submit"])
for path in ("http", "http-stream"):
    w = statistics.median(walls[path])
    print(f"gateway-bench overhead path={path} median_wall_s={w:.3f} submit_median_wall_s={base:.3f} "
          f"overhead_pct={100 * (w - base) / base:.2f}")
PY
# python, not curl: the GPU machine's curl binary does not run against the packed libcurl
gw_metrics=$(python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())' \
    "$api/metrics" | grep -E '^glm4v_gateway_requests_total\{code="(200|other)"\}' | tr '\n' ' ')
echo "gateway: $gw_metrics"
