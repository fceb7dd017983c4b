#!/usr/bin/env bash
# glm4v-sweep end to end: a real redis-server, `mpirun glm4v-serve` on the CPU backend with the tiny
# model, sweeps run with build/bin/glm4v-sweep.
#  - 500 rows (125 random images x 4 questions), greedy, 4 new tokens: all answered; every 5th row
#    (100 rows) gives exactly the ids glm4v-run gives for it alone (500 glm4v-run processes would
#    take minutes); the server's vision cache hits >= 375 times (only the first question of an
#    image runs the vision tower);
#  - kill -9 of the sweep halfway plus a torn line, then a re-run: each id exactly once, the same
#    token ids as the uninterrupted run;
#  - SIGINT: exit 130, only whole lines; --ordered writes in input order;
#  - sampled sweeps reproduce (seed from the row id, whatever the job id);
#  - malformed lines, a missing image and corrupt images are reported and the rest completes.
# usage: test_sweep.sh BIN_DIR TESTDATA
source "$(dirname "$0")/serve_lib.sh"
e2e_setup "$1" "$2"
CHECK_PY="/usr/bin/python3 $(dirname "$0")/sweep/check.py"
D=$E2E_DIR/sweep
mkdir -p "$D/img"
/usr/bin/python3 "$(dirname "$0")/sweep/make_data.py" "$D" 125 4 >"$D/q.jsonl"
METRICS_PORT=$(e2e_free_port)
e2e_start_replica r0 1 --max-batch 16 --vision-cache 8 --metrics-port "$METRICS_PORT" || exit 1

# glm4v-sweep against the test cluster; an array, not a function, so that `"${SWEEP[@]}" ... &` gives the
# sweep's own pid to kill (a backgrounded function is a subshell that would survive instead)
SWEEP=("$BIN/glm4v-sweep" --redis "$REDIS_URL" --prefix "$PREFIX" --max-new-tokens 4)
lines() { wc -l <"$1" | tr -d ' '; }
not() { ! "$@"; }
ends_with_newline() { [ "$(tail -c 1 "$1" | od -An -c | tr -d ' ')" = '\n' ]; }
wait_for_lines() { # wait_for_lines FILE N: until FILE has N lines (30 s at most)
    for _ in $(seq 3000); do
        [ -f "$1" ] && [ "$(lines "$1")" -ge "$2" ] && return 0
        sleep 0.01
    done
}
hits() { $CHECK_PY metric "$METRICS_PORT" glm4v_vision_cache_hits_total; }

# ---- 500 rows, uninterrupted -------------------------------------------------------------------
hits0=$(hits)
t0=$(date +%s.%N)
"${SWEEP[@]}" --in "$D/q.jsonl" --out "$D/a.jsonl" --job-prefix a- 2>"$D/a.err"
rc=$?
t1=$(date +%s.%N)
hits1=$(hits)
echo "500-row sweep: $(echo "$t1 - $t0" | bc) s, vision cache hits $((hits1 - hits0))"
e2e_check "500-row sweep exits 0 (rc $rc)" [ "$rc" -eq 0 ]
e2e_check "all 500 rows answered once, no errors" $CHECK_PY complete "$D/q.jsonl" "$D/a.jsonl"
e2e_check "vision cache hits >= 375 (got $((hits1 - hits0)))" [ $((hits1 - hits0)) -ge 375 ]
status_hits() {
    "$BIN/glm4v-submit" --redis "$REDIS_URL" --prefix "$PREFIX" --status |
        grep -o '"vision_cache_hits":[0-9]*' | head -1 | cut -d: -f2
}
for _ in $(seq 100); do [ "$(status_hits)" = "$hits1" ] && break; sleep 0.1; done
e2e_check "server status shows the cache hits ($hits1, status: $(status_hits))" \
    [ "$(status_hits)" = "$hits1" ]
e2e_check "summary printed" grep -q "latency (server total_ms, 500 jobs): p50" "$D/a.err"
e2e_check "summary counts finish reasons" grep -q "finish reasons:.*length=" "$D/a.err"
t0=$(date +%s)
e2e_check "every 5th row equals glm4v-run alone" $CHECK_PY vs-run "$BIN" "$MODEL" "$D/q.jsonl" \
    "$D/a.jsonl" "$D" 5 4
echo "glm4v-run comparison: $(($(date +%s) - t0)) s"
"${SWEEP[@]}" --in "$D/q.jsonl" --out "$D/a.jsonl" --job-prefix a- 2>"$D/a2.err"
e2e_check "re-run of a finished sweep exits 0" [ $? -eq 0 ]
e2e_check "re-run of a finished sweep runs nothing" grep -q "500 already answered, 0 to run" "$D/a2.err"
e2e_check "re-run of a finished sweep adds nothing" [ "$(lines "$D/a.jsonl")" = 500 ]

# ---- kill -9 halfway, a torn line, resume ------------------------------------------------------
# --window 1 runs one job at a time, slow enough to be caught halfway
"${SWEEP[@]}" --in "$D/q.jsonl" --out "$D/b.jsonl" --job-prefix b- --window 1 2>"$D/b1.err" &
pid=$!
wait_for_lines "$D/b.jsonl" 250
kill -9 "$pid"
wait "$pid" 2>/dev/null
killed_at=$(lines "$D/b.jsonl")
echo "sweep killed with $killed_at lines written"
e2e_check "killed between 250 and 499 lines ($killed_at)" [ "$killed_at" -ge 250 -a "$killed_at" -lt 500 ]
printf '{"id":"r0003-q0","text":"a line the kill tore' >>"$D/b.jsonl"
"${SWEEP[@]}" --in "$D/q.jsonl" --out "$D/b.jsonl" --job-prefix b- 2>"$D/b2.err"
e2e_check "resumed sweep exits 0" [ $? -eq 0 ]
e2e_check "resume cut the torn line" grep -q "torn last line was cut away" "$D/b2.err"
e2e_check "resumed file: every id once, no errors" $CHECK_PY complete "$D/q.jsonl" "$D/b.jsonl"
e2e_check "resumed file equals the uninterrupted run" $CHECK_PY same "$D/a.jsonl" "$D/b.jsonl"

# ---- SIGINT, then --ordered --------------------------------------------------------------------
head -120 "$D/q.jsonl" >"$D/q120.jsonl"
"${SWEEP[@]}" --in "$D/q120.jsonl" --out "$D/c.jsonl" --job-prefix c- --window 1 2>"$D/c1.err" &
pid=$!
wait_for_lines "$D/c.jsonl" 30
kill -INT "$pid"
wait "$pid"
rc=$?
e2e_check "SIGINT: exit 130 (rc $rc)" [ "$rc" -eq 130 ]
e2e_check "SIGINT: says how to resume" grep -q "stopped by signal 2" "$D/c1.err"
e2e_check "SIGINT: stopped before the end" [ "$(lines "$D/c.jsonl")" -lt 120 ]
e2e_check "SIGINT: only whole lines" ends_with_newline "$D/c.jsonl"
"${SWEEP[@]}" --in "$D/q120.jsonl" --out "$D/c.jsonl" --job-prefix c- 2>"$D/c2.err"
e2e_check "after SIGINT the re-run completes" $CHECK_PY complete "$D/q120.jsonl" "$D/c.jsonl"
"${SWEEP[@]}" --in "$D/q120.jsonl" --out "$D/d.jsonl" --job-prefix d- --ordered 2>"$D/d.err"
e2e_check "--ordered writes in input order" $CHECK_PY ordered "$D/q120.jsonl" "$D/d.jsonl"

# ---- sampling reproduces: the seed comes from the row id, not the job id ------------------------
head -24 "$D/q.jsonl" >"$D/q24.jsonl"
"${SWEEP[@]}" --in "$D/q24.jsonl" --out "$D/s1.jsonl" --job-prefix s1- --temperature 1.5 --max-new-tokens 8 \
    2>/dev/null
"${SWEEP[@]}" --in "$D/q24.jsonl" --out "$D/s2.jsonl" --job-prefix s2- --temperature 1.5 --max-new-tokens 8 \
    --window 3 2>/dev/null
"${SWEEP[@]}" --in "$D/q24.jsonl" --out "$D/s3.jsonl" --job-prefix s3- --temperature 1.5 --max-new-tokens 8 \
    --seed 99 2>/dev/null
"${SWEEP[@]}" --in "$D/q24.jsonl" --out "$D/g.jsonl" --job-prefix g- --max-new-tokens 8 2>/dev/null
e2e_check "sampled sweep reproduces" $CHECK_PY same "$D/s1.jsonl" "$D/s2.jsonl"
e2e_check "--seed changes the draws" not $CHECK_PY same "$D/s1.jsonl" "$D/s3.jsonl"
e2e_check "sampling differs from greedy" not $CHECK_PY same "$D/s1.jsonl" "$D/g.jsonl"
# docs/SWEEP.md: a row's seed is FNV-1a-64(id) mod 2^63; glm4v-submit with it reproduces the row
seed=$(/usr/bin/python3 -c 'import sys; h=0xcbf29ce484222325
for b in sys.argv[1].encode(): h=((h^b)*0x100000001b3)%2**64
print(h % 2**63)' r0000-q0)
e2e_submit --image "$D/img/0000.jpg" --prompt "What is in the image?" --temperature 1.5 \
    --max-new-tokens 8 --seed "$seed" >"$D/one.json"
e2e_check "glm4v-submit --seed reproduces a sampled row" [ "$(e2e_json "$D/one.json" "d['token_ids']")" = \
    "$(grep '"r0000-q0"' "$D/s1.jsonl" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["token_ids"])')" ]

# ---- malformed lines, missing and corrupt images ------------------------------------------------
head -c 300 "$D/img/0001.png" >"$D/img/truncated.png"
head -c 2000 /dev/urandom >"$D/img/noise.jpg"
cat >"$D/bad.jsonl" <<'JSONL'
{"id": "ok-1", "image": "img/0000.jpg", "prompt": "What is in the image?"}
{"id": "broken", "prompt": "no closing brace"
{"prompt": "no id"}
{"id": "ok-1", "prompt": "duplicate id"}
{"id": "nothing-to-ask", "image": "img/0000.jpg"}
{"id": "bad-type", "prompt": "p", "max_new_tokens": "four"}
{"id": "missing-image", "image": "img/nope.png", "prompt": "What is in the image?"}
{"id": "truncated-png", "image": "img/truncated.png", "prompt": "What is in the image?"}
{"id": "noise-jpg", "image": "img/noise.jpg", "prompt": "What is in the image?"}

{"id": "text-only", "prompt": "Hello", "system": "Be brief."}
{"id": "chat", "image": "img/0002.jpg", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "And the picture?"}]}
{"id": "ok-2", "image": "img/0001.png", "prompt": "Describe the picture.", "max_new_tokens": 2}
JSONL
"${SWEEP[@]}" --in "$D/bad.jsonl" --out "$D/bad.out.jsonl" 2>"$D/bad.err"
rc=$?
e2e_check "bad input: exit 1 (rc $rc)" [ "$rc" -eq 1 ]
for n in 2 3 4 5 6; do
    e2e_check "bad input: line $n reported on stderr" grep -q "bad.jsonl:$n: skipped" "$D/bad.err"
done
e2e_check "bad input: 5 lines in the errors file" [ "$(lines "$D/bad.out.jsonl.errors")" = 5 ]
e2e_check "bad input: errors file names line 4 as a duplicate" \
    grep -q '"line":4,"error":"duplicate id' "$D/bad.out.jsonl.errors"
e2e_check "bad input: missing image reported with its line" \
    grep -q "bad.jsonl:7: id missing-image: cannot open image" "$D/bad.err"
e2e_check "bad input: 7 answer lines" [ "$(lines "$D/bad.out.jsonl")" = 7 ]
e2e_check "bad input: the answers" /usr/bin/python3 - "$D/bad.out.jsonl" <<'PY'
import json, sys
rows = {r["id"]: r for r in map(json.loads, open(sys.argv[1]))}
print({k: (r["error"] or {}).get("code") for k, r in rows.items()})
assert rows["missing-image"]["error"]["code"] == "BAD_IMAGE"
assert rows["missing-image"]["server_id"] == "glm4v-sweep"
for k in ("truncated-png", "noise-jpg"):
    assert rows[k]["error"]["code"] in ("BAD_IMAGE", "UNSUPPORTED_IMAGE"), k
    assert rows[k]["server_id"] == "r0", k
for k in ("ok-1", "ok-2", "text-only", "chat"):
    assert rows[k]["error"] is None and rows[k]["token_ids"], k
assert len(rows["ok-2"]["token_ids"]) <= 2
PY
e2e_check "bad input: ok-1 equals the big sweep's r0000-q0" [ "$(grep '"ok-1"' "$D/bad.out.jsonl" | \
    /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["token_ids"])')" = \
    "$(grep '"r0000-q0"' "$D/a.jsonl" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["token_ids"])')" ]

e2e_finish sweep
