#!/usr/bin/env python3
"""Writes a tiktoken-format tokenizer.model with N ordinary ranks (default 151329, GLM-4's count),
so that the special-token ids land where the real config.json puts them (<|endoftext|> = 151329,
<|begin_of_image|> = 151339, ...). Full-size benchmarks with random weights use it: the ids a
prompt gets do not matter for speed, only that the chat template and image markers line up.
Tokens: the 256 single bytes, then every byte pair, then byte triples, in a fixed order.

    python3 scripts/make_synthetic_tokenizer.py OUT/tokenizer.model [N]
"""
import base64, itertools, sys

out = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 151329
printable = list(range(32, 127))
with open(out, "w") as f:
    rank = 0
    def emit(b):
        global rank
        f.write(base64.b64encode(bytes(b)).decode() + " " + str(rank) + "\n")
        rank += 1
    for b in range(256):
        emit([b])
    for pair in itertools.product(range(256), repeat=2):
        if rank >= n:
            break
        emit(pair)
    for tri in itertools.product(printable, repeat=3):
        if rank >= n:
            break
        emit(tri)
print(f"wrote {rank} ranks to {out}")
