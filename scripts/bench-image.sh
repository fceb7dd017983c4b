#!/usr/bin/env bash
# Image preprocessing benchmark: decode + resize to 1120x1120 + normalize, ours (glm_image_*)
# against Pillow + numpy (the Python reference pipeline), in the same run on the same files.
# Prints a markdown table; times are medians of $RUNS runs, in ms, file already in memory.
#   scripts/bench-image.sh [BUILD_DIR]     (needs the test_image_bench target built)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-${BUILD_DIR:-$ROOT/build}}
RUNS=${RUNS:-9}
SIZE=${SIZE:-1120}
PY=/usr/bin/python3 # Debian's, with python3-pil and python3-numpy
HELPER=$ROOT/tests/coordinator/pillow/bench_pillow.py
BENCH=$BUILD/bin/test_image_bench

if [[ ! -x $BENCH ]]; then
    echo "missing $BENCH: cmake --build $BUILD --target test_image_bench" >&2
    exit 2
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$PY" "$HELPER" make "$TMP"

# Both sides are single-threaded.
echo "| image | ours ms (decode / resize / normalize) | Pillow+numpy ms (decode / resize / normalize) | speedup |"
echo "|---|---|---|---|"
for f in photo_4000x3000.jpg screen_1024x768.png; do
    ours=$("$BENCH" "$TMP/$f" "$SIZE" "$RUNS")
    "$PY" "$HELPER" row "$TMP/$f" "$SIZE" "$RUNS" "$ours"
done
