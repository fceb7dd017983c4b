#!/usr/bin/env bash
# Input-path benchmarks in one run: tokenizer MB/s against the npm tiktoken package, and image
# decode + resize + normalize against Pillow; prints markdown rows for docs/PERF.md.
#   scripts/bench-inputs.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
[ -x "$build/bin/glm4v-tokenize" ] || bash scripts/build.sh
echo "## tokenizer (one core, 1.2 MB corpus) vs npm tiktoken"
bash scripts/bench-tokenizer.sh --header "$build"
echo
echo "## image preprocessing vs Pillow + numpy"
bash scripts/bench-image.sh "$build"
