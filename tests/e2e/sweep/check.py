#!/usr/bin/env python3
"""Checks for test_sweep.sh; each subcommand prints what it found and exits 1 on a mismatch.

  complete IN OUT          every id of IN exactly once in OUT, every line a Result, no errors
  same A B                 A and B hold the same ids, each once, with the same token_ids
  ordered IN OUT           the ids of OUT are those of IN, in IN's order
  vs-run BIN MODEL IN OUT ROOT EVERY N
                           for every EVERY-th row of IN, glm4v-run --max-new-tokens N gives the
                           token ids OUT holds (two glm4v-run processes at a time)
  metric PORT NAME         prints the value of a Prometheus counter on 127.0.0.1:PORT/metrics
"""
import json
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def by_id(rows):
    out = {}
    for r in rows:
        if r["id"] in out:
            raise SystemExit(f"id {r['id']} appears twice")
        out[r["id"]] = r
    return out


def complete(in_path, out_path):
    want = [r["id"] for r in read_jsonl(in_path)]
    got = by_id(read_jsonl(out_path))
    missing = [i for i in want if i not in got]
    errors = [i for i, r in got.items() if r.get("error")]
    print(f"{len(got)} lines for {len(want)} rows; missing {missing[:5]}; errors {errors[:5]}")
    return not missing and not errors and len(got) == len(want)


def same(a_path, b_path):
    a, b = by_id(read_jsonl(a_path)), by_id(read_jsonl(b_path))
    diff = [i for i in a if i not in b or a[i]["token_ids"] != b[i]["token_ids"]]
    print(f"{len(a)} vs {len(b)} ids; {len(diff)} differ {diff[:5]}")
    return not diff and a.keys() == b.keys()


def ordered(in_path, out_path):
    want = [r["id"] for r in read_jsonl(in_path)]
    got = [r["id"] for r in read_jsonl(out_path)]
    print(f"{len(got)} lines, in input order: {got == want}")
    return got == want


def vs_run(bin_dir, model, in_path, out_path, root, every, max_new):
    rows = read_jsonl(in_path)[:: int(every)]
    got = by_id(read_jsonl(out_path))

    def alone(row):
        cmd = [f"{bin_dir}/glm4v-run", "--model", model, "--prompt", row["prompt"],
               "--max-new-tokens", max_new, "--json"]
        if row.get("image"):
            cmd += ["--image", f"{root}/{row['image']}"]
        res = subprocess.run(cmd, capture_output=True, check=True)
        # the tiny model's text can be invalid UTF-8; only the ids matter here
        return row["id"], json.loads(res.stdout.decode("utf-8", "replace"))["generated_ids"]

    with ThreadPoolExecutor(2) as pool:
        ref = dict(pool.map(alone, rows))
    bad = [i for i, ids in ref.items() if got[i]["token_ids"] != ids]
    print(f"{len(ref)} rows checked against glm4v-run; {len(bad)} differ {bad[:5]}")
    return not bad and len(ref) > 0


def metric(port, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            print(int(float(line.split()[1])))
            return True
    return False


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    fn = {"complete": complete, "same": same, "ordered": ordered, "vs-run": vs_run,
          "metric": metric}[cmd]
    sys.exit(0 if fn(*args) else 1)


if __name__ == "__main__":
    main()
