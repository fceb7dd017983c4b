#!/bin/bash
# Tokenizer throughput on the generated 1.2 MB test corpus: ours against the npm tiktoken package
# (cl100k_base ranks for both, encode_ordinary semantics), both pinned to one core, best of N runs
# in CPU seconds. Prints markdown table rows (and the header with --header): the whole corpus
# and its ordinary-length records.
# usage: scripts/bench-tokenizer.sh [--header] [BUILD_DIR]   (BUILD_DIR defaults to ./build)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
header=0
if [ "${1:-}" = "--header" ]; then header=1; shift; fi
build=${1:-$root/build}
tk=$root/tests/coordinator/tiktoken
if [ ! -f "$tk/node_modules/tiktoken/package.json" ]; then
    echo "bench-tokenizer: npm tiktoken is missing: run scripts/install-tiktoken.sh" >&2
    exit 1
fi
cmake --build "$build" --target test_tokenizer_tiktoken >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
node "$tk/make_corpus.js" "$work/corpus.jsonl"
node "$tk/export_ranks.js" "$work/cl100k.tiktoken" 2>/dev/null
pin=()
command -v taskset >/dev/null && pin=(taskset -c 0)
# The whole corpus, and its records of at most 2 KB (no 500-6000 byte single pieces, on which
# tiktoken's merge loop is quadratic): ordinary text on its own.
node -e 'const fs = require("fs");
  const keep = fs.readFileSync(process.argv[1], "utf8").split("\n")
    .filter((l) => l && Buffer.byteLength(JSON.parse(l).text) <= 2000);
  fs.writeFileSync(process.argv[2], keep.join("\n") + "\n");' "$work/corpus.jsonl" "$work/short.jsonl"
version=$(node -p "require('$tk/node_modules/tiktoken/package.json').version")
for name in corpus short; do
    ours=$("${pin[@]}" "$build/bin/test_tokenizer_tiktoken" --bench "$work/cl100k.tiktoken" \
        "$work/$name.jsonl" 10)
    theirs=$("${pin[@]}" node "$tk/encode_corpus.js" --bench "$work/$name.jsonl" 5)
    label="whole corpus"
    [ "$name" = short ] && label="records <= 2 KB"
    node - "$ours" "$theirs" "$version" "$header" "$label" <<'JS'
const [ours, theirs, version, header, label] = process.argv.slice(2);
const a = JSON.parse(ours), b = JSON.parse(theirs);
if (a.tokens !== b.tokens) console.error(`warning: token counts differ (${a.tokens} vs ${b.tokens})`);
if (header === "1") {
  console.log(`| input | MB | tokens | glm4v MB/s (1 core${a.jit ? ", PCRE2 JIT" : ""}) | tiktoken npm ${version} MB/s (1 core, WASM) | speedup |`);
  console.log("| --- | --- | --- | --- | --- | --- |");
}
console.log(`| ${label} | ${(a.bytes / 1e6).toFixed(2)} | ${a.tokens} | ${a.mb_per_s.toFixed(2)} | ${b.mb_per_s.toFixed(2)} | ${(a.mb_per_s / b.mb_per_s).toFixed(1)}x |`);
JS
    header=0
done
