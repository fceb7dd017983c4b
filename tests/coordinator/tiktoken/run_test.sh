#!/bin/bash
# ctest driver: our tokenizer against the npm tiktoken package on a generated 1.2 MB corpus.
# usage: run_test.sh TEST_PROGRAM WORK_DIR
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
program=$1
work=$2
if [ ! -f "$here/node_modules/tiktoken/package.json" ]; then
    echo "FAIL: the npm tiktoken package is not installed in $here/node_modules." >&2
    echo "      Run scripts/install-tiktoken.sh (npm ci --prefix tests/coordinator/tiktoken)." >&2
    exit 1
fi
command -v node >/dev/null || { echo "FAIL: node is not on PATH" >&2; exit 1; }
mkdir -p "$work"
node "$here/make_corpus.js" "$work/corpus.jsonl"
node "$here/export_ranks.js" "$work/cl100k_base.tiktoken"
node "$here/encode_corpus.js" "$work/corpus.jsonl" "$work/expected.ids"
"$program" "$work/cl100k_base.tiktoken" "$work/corpus.jsonl" "$work/expected.ids"
