#!/usr/bin/env node
// Writes cl100k_base's ranks, as shipped in the npm tiktoken package, in tiktoken's file format
// (one "base64(token bytes) rank" per line, the format of GLM's tokenizer.model).
//
// The package stores them in encoders/cl100k_base.json as "bpe_ranks": lines of
// "<marker> <first rank> <base64 token> <base64 token> ...", token i of a line having rank
// first + i. Every exported pair is checked against the package's own decoder.
// usage: node export_ranks.js OUT.tiktoken
"use strict";
const fs = require("fs");
const { get_encoding } = require("tiktoken");
const spec = require("tiktoken/encoders/cl100k_base.json");

const out = process.argv[2];
if (!out) {
  console.error("usage: node export_ranks.js OUT.tiktoken");
  process.exit(2);
}
const enc = get_encoding("cl100k_base");
const lines = [];
for (const line of spec.bpe_ranks.split("\n")) {
  if (!line) continue;
  const fields = line.split(" ");
  const first = Number(fields[1]);
  if (!Number.isInteger(first)) throw new Error(`unexpected bpe_ranks line: ${line.slice(0, 40)}`);
  for (let i = 2; i < fields.length; i++) {
    const rank = first + i - 2;
    const bytes = Buffer.from(fields[i], "base64");
    const check = Buffer.from(enc.decode_single_token_bytes(rank));
    if (!check.equals(bytes)) throw new Error(`rank ${rank}: package decodes a different token`);
    lines.push(`${fields[i]} ${rank}`);
  }
}
enc.free();
fs.writeFileSync(out, lines.join("\n") + "\n");
console.error(`export_ranks: ${lines.length} cl100k_base ranks -> ${out}`);
