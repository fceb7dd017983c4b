#!/usr/bin/env node
// Encodes each corpus record's text with the npm tiktoken package (cl100k_base, encode_ordinary:
// no special tokens, like glm_tokenizer_encode) and writes one line of space-separated ids per
// record. With --bench, prints the encoding throughput instead: best of N runs, in CPU seconds of
// this process (user + system), so other load on the machine does not count.
// usage: node encode_corpus.js CORPUS.jsonl OUT.ids | node encode_corpus.js --bench CORPUS.jsonl [RUNS]
"use strict";
const fs = require("fs");
const { get_encoding } = require("tiktoken");

function readTexts(path) {
  return fs.readFileSync(path, "utf8").split("\n").filter((l) => l).map((l) => JSON.parse(l).text);
}

function bench(path, runs) {
  const texts = readTexts(path);
  const enc = get_encoding("cl100k_base");
  const bytes = texts.reduce((n, t) => n + Buffer.byteLength(t, "utf8"), 0);
  let best = Infinity, tokens = 0;
  for (let r = 0; r < runs; r++) {
    const t0 = process.cpuUsage();
    tokens = 0;
    for (const t of texts) tokens += enc.encode_ordinary(t).length;
    const used = process.cpuUsage(t0);
    const s = (used.user + used.system) / 1e6;
    best = Math.min(best, s);
  }
  enc.free();
  console.log(JSON.stringify({ bytes, tokens, seconds: best, mb_per_s: bytes / 1e6 / best }));
}

function main() {
  const args = process.argv.slice(2);
  if (args[0] === "--bench") return bench(args[1], Number(args[2] || 3));
  if (args.length !== 2) {
    console.error("usage: node encode_corpus.js CORPUS.jsonl OUT.ids | --bench CORPUS.jsonl [RUNS]");
    process.exit(2);
  }
  const enc = get_encoding("cl100k_base");
  const out = readTexts(args[0]).map((t) => Array.from(enc.encode_ordinary(t)).join(" "));
  enc.free();
  fs.writeFileSync(args[1], out.join("\n") + "\n");
}

main();
