#!/usr/bin/env python3
"""Checks of tests/e2e/test_serve_wire.sh (Result text with NUL bytes, usage.prompt_tokens).

  check.py expect RESULT_JSON TOKENIZE TOKENIZER OUT
      The bytes the detokenizer makes of a Result's token ids, written to OUT: its ids (less a
      final end-of-sequence id when finish_reason is "stop": that id is not text) decoded by
      glm4v-tokenize --decode, invalid UTF-8 replaced as the detokenizer does (U+FFFD, Python's
      errors="replace").
  check.py text JSON_FILE EXPECTED [KEY_PATH]
      The text in a JSON object (KEY_PATH: dot-separated keys, default "text") is exactly the
      bytes of EXPECTED, NUL bytes included.
  check.py sse SSE_BODY EXPECTED
      The content deltas of an OpenAI chat.completion.chunk stream add up to EXPECTED.
  check.py usage JSON_FILE KEY_PATH PROMPT_IDS N_IMAGES IMAGE_ROWS [SPLICED]
      usage.prompt_tokens (at KEY_PATH) = PROMPT_IDS + N_IMAGES * (IMAGE_ROWS - 3), and equals
      SPLICED (glm4v-run's spliced_length) when given.
Each prints what it compared and exits 1 on a mismatch."""
import json
import subprocess
import sys


def at(obj, path):
    for key in path.split("."):
        obj = obj[int(key)] if isinstance(obj, list) else obj[key]
    return obj


def load(path):
    with open(path, "rb") as f:
        return json.loads(f.read().decode("utf-8"))


def show(b):
    return repr(b[:120]) + ("..." if len(b) > 120 else "")


def expect(result_path, tokenize, tokenizer, out_path):
    r = load(result_path)
    ids = list(r["token_ids"])
    if r["finish_reason"] == "stop" and ids:
        ids = ids[:-1]
    raw = subprocess.run([tokenize, "--tokenizer", tokenizer, "--decode"],
                         input=" ".join(map(str, ids)).encode(), capture_output=True, check=True).stdout
    want = raw.decode("utf-8", errors="replace").encode("utf-8")
    with open(out_path, "wb") as f:
        f.write(want)
    print(f"expected text: {len(want)} bytes, {want.count(0)} NUL: {show(want)}")
    return 0


def text(json_path, expected_path, key="text"):
    got = at(load(json_path), key).encode("utf-8")
    want = open(expected_path, "rb").read()
    print(f"{key}: {len(got)} bytes, {got.count(0)} NUL: {show(got)}")
    if got != want:
        print(f"  want {len(want)} bytes: {show(want)}")
        return 1
    return 0


def sse(body_path, expected_path):
    got = b""
    for line in open(body_path, "rb").read().decode("utf-8").split("\n"):
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        event = json.loads(line[6:])
        for choice in event.get("choices", []):
            got += (choice.get("delta", {}).get("content") or "").encode("utf-8")
    want = open(expected_path, "rb").read()
    print(f"stream deltas: {len(got)} bytes, {got.count(0)} NUL: {show(got)}")
    if got != want:
        print(f"  want {len(want)} bytes: {show(want)}")
        return 1
    return 0


def usage(json_path, key, prompt_ids, n_images, image_rows, spliced=None):
    got = at(load(json_path), key)
    want = int(prompt_ids) + int(n_images) * (int(image_rows) - 3)
    print(f"{key} = {got}; ids {prompt_ids} + {n_images} x ({image_rows} - 3) = {want}"
          + (f"; glm4v-run spliced_length {spliced}" if spliced is not None else ""))
    return 0 if got == want and (spliced is None or got == int(spliced)) else 1


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    sys.exit({"expect": expect, "text": text, "sse": sse, "usage": usage}[cmd](*args))
