#!/usr/bin/env bash
# Where the time of one benchmark phase goes, per kernel (issue 4's "explain each miss with a
# measured cause"): runs bench_model under Nsight Compute for one NVTX phase at a time and prints
# a per-kernel table (scripts/ncu_summary.py). On the GPU machine, after scripts/bench-gpu.sh (or
# any build of bench_model in BUILD_DIR):
#   source .devdeps/env.sh && scripts/profile-gpu.sh [PHASE:LAUNCHES ...]
# default phases: vision-1:300 prefill-image:450 decode-b1:450 decode-b32:450. LAUNCHES kernels
# are profiled from the phase's start after skipping SKIP (default: as many, i.e. about one warm
# run). Each profiled kernel costs ncu ~0.2 s (an H100 took ~2 min for 500 decode kernels), so
# keep LAUNCHES to a few layers' worth for the vision tower.
# Clocks and caches are left as they run (--clock-control none --cache-control none), so the
# durations are those of the benchmark, each kernel run alone.
# Environment: BUILD_DIR (build-gpu), BENCH_ARGS (extra bench_model flags, e.g. --dtype f16), OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${BUILD_DIR:-build-gpu}
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
OUTDIR=${OUT:-$B/profile}
mkdir -p "$OUTDIR"
phases=("$@")
[ ${#phases[@]} -gt 0 ] || phases=(vision-1:300 prefill-image:450 decode-b1:450 decode-b32:450)
metrics=gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed
metrics+=,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active
for p in "${phases[@]}"; do
    phase=${p%%:*} count=${p##*:}
    case $phase in
    vision-*) sel=(--vision "${phase#vision-}" --decode "" --text-prefill 0) ;;
    prefill-image) sel=(--vision 1 --decode "" --text-prefill 0) ;;
    prefill-text) sel=(--vision "" --decode "" --text-prefill 4096) ;;
    decode-b*) sel=(--vision "" --decode "${phase#decode-b}" --text-prefill 0 --decode-steps 4) ;;
    *) echo "profile-gpu: unknown phase $phase" >&2; exit 2 ;;
    esac
    echo "== $(date +%T) $phase: $count launches after ${SKIP:-$count}"
    # shellcheck disable=SC2086
    timeout "${PHASE_TIMEOUT:-240}" "$NCU" --nvtx --nvtx-include "$phase/" \
        --launch-skip "${SKIP:-$count}" --launch-count "$count" --metrics "$metrics" \
        --clock-control none --cache-control none --csv --page raw \
        "$B/bin/bench_model" --model configs/glm-4v-9b --device cuda --no-ceilings --warmup 1 \
        --reps 1 "${sel[@]}" ${BENCH_ARGS:-} >"$OUTDIR/$phase.raw" 2>"$OUTDIR/$phase.err" || {
        echo "profile-gpu: $phase failed or timed out"; tail -5 "$OUTDIR/$phase.err"; }
    # ncu prints the program's own output first; the CSV starts at the header line
    sed -n '/^"ID","Process ID"/,$p' "$OUTDIR/$phase.raw" >"$OUTDIR/$phase.csv"
    python3 scripts/ncu_summary.py "$OUTDIR/$phase.csv" "$phase" | tee "$OUTDIR/$phase.md" | head -30
done
