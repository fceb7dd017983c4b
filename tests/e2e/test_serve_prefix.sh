#!/usr/bin/env bash
# Prefix caching end to end: a real redis-server, `mpirun glm4v-serve` on the CPU backend, the
# tiny model. The same jobs run one after another (so later ones find earlier prompts' blocks)
# on a server with the cache (the default) at TP 1 and TP 2, on one with a KV pool so small that
# cached blocks are evicted, and on one started with --no-prefix-cache; greedy ids and logprobs
# must be identical everywhere. The jobs: a shared system prompt with several questions, the
# same image with different questions, prompts that diverge inside a KV block (16 rows), and a
# conversation whose turns repeat its history (glm4v-sweep "messages" rows, sent one at a time).
# Then kill -9 of one of two replicas while shared-prefix jobs run: every job answered once.
# usage: test_serve_prefix.sh BIN_DIR TESTDATA
source "$(dirname "$0")/serve_lib.sh"
e2e_setup "$1" "$2"

/usr/bin/python3 - "$E2E_DIR" <<'PY'
import json, sys, random
from PIL import Image
d = sys.argv[1]; rnd = random.Random(16)
for i in range(2):
    im = Image.new("RGB", (64 + 40 * i, 48))
    im.putdata([(rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)) for _ in range(im.width * im.height)])
    im.save(f"{d}/img{i}.png")
# a conversation: each turn repeats the ones before it
hist, rows = [], []
for k, q in enumerate(["Hello, who are you?", "Tell me a story about a cat.", "And then?"]):
    hist.append({"role": "user", "content": q})
    rows.append({"id": f"turn{k}", "messages": list(hist)})
    hist.append({"role": "assistant", "content": f"Answer number {k} with a few words in it."})
with open(f"{d}/turns.jsonl", "w") as f:
    for r in rows:
        f.write(json.dumps(r) + "\n")
PY

SYS="You are a careful assistant. You answer briefly, you never invent facts, and you say so when you do not know something about the picture or the question."
jobs=() # "id|args..." one job per entry, run in this order
for q in "What is your name?" "Count to five." "Say something nice."; do jobs+=("sys|--system|$SYS|--prompt|$q"); done
for q in "What is in the image?" "Describe the colors." "Is there any text?"; do
    jobs+=("img0|--image|$E2E_DIR/img0.png|--prompt|$q")
done
jobs+=("img1|--image|$E2E_DIR/img1.png|--prompt|What is in the image?")
# the same 20 words, then other endings: the first difference falls inside a block
long="one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty"
for end in "and a cat" "and a dog" "and a cat on a sofa"; do jobs+=("div|--prompt|$long $end"); done

# run_jobs TAG: every job in order, greedy with logprobs, into $E2E_DIR/TAG-N.json; then the
# conversation turns, one at a time, into TAG-turns.jsonl
run_jobs() {
    local tag=$1 n=0 j
    for j in "${jobs[@]}"; do
        IFS='|' read -r -a a <<<"$j"
        e2e_submit --id "$tag-$n" "${a[@]:1}" --max-new-tokens 6 --temperature 0 --logprobs 2 \
            --timeout 120 >"$E2E_DIR/$tag-$n.json" 2>"$E2E_DIR/$tag-$n.err"
        n=$((n + 1))
    done
    "$BIN/glm4v-sweep" --in "$E2E_DIR/turns.jsonl" --out "$E2E_DIR/$tag-turns.jsonl" \
        --redis "$REDIS_URL" --prefix "$PREFIX" --job-prefix "$tag-" --window 1 --ordered \
        --max-new-tokens 6 --temperature 0 --timeout 120 2>"$E2E_DIR/$tag-sweep.err"
}

# answers TAG: one line per job (ids and logprobs rounded to 1e-5), then the turns' ids
answers() {
    /usr/bin/python3 - "$E2E_DIR" "$1" "${#jobs[@]}" <<'PY'
import json, sys
d, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in range(n):
    try:
        r = json.load(open(f"{d}/{tag}-{i}.json"))
        lp = [(t["token_id"], round(t["logprob"], 5)) for t in r.get("logprobs", [])]
        print(i, r["token_ids"], lp)
    except Exception as e:
        print(i, "no answer", e)
try:
    rows = sorted(json.loads(l) for l in open(f"{d}/{tag}-turns.jsonl"))
except Exception:
    rows = []
for r in sorted(rows, key=lambda r: r["id"]):
    print(r["id"], r.get("token_ids"), r.get("error"))
PY
}

metric() { # metric PORT NAME: the value of a Prometheus series on 127.0.0.1:PORT
    /usr/bin/python3 - "$1" "$2" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
print(next((l.split()[1] for l in text.splitlines() if l.split()[0:1] == [sys.argv[2]]), "none"))
PY
}

# wait_status KEY PYEXPR: polls `glm4v-submit --status` (servers refresh it every 5 s) until the
# published KEY's value v satisfies PYEXPR; prints the last value
wait_status() {
    local v=""
    for _ in $(seq 40); do
        v=$("$BIN/glm4v-submit" --redis "$REDIS_URL" --prefix "$PREFIX" --status |
            grep -o "\"$1\":[0-9.e+-]*" | head -1 | cut -d: -f2)
        [ -n "$v" ] && /usr/bin/python3 -c "import sys; v=float('$v'); sys.exit(not ($2))" && break
        sleep 0.25
    done
    echo "$v"
}

stop_replica() { # SIGTERM drains; waits for the replica to exit
    kill -TERM -- "-$1" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 -- "-$1" 2>/dev/null
}

# phase TAG NP ARGS...: a replica at TP NP runs every job in order, its answers into ans-TAG
phase() {
    local tag=$1 np=$2
    shift 2
    MPORT=$(e2e_free_port)
    e2e_start_replica "$tag" "$np" --max-batch 8 --prefill-chunk 64 --metrics-port "$MPORT" "$@" ||
        exit 1
    run_jobs "$tag"
    PROMPT_ROWS=$(metric "$MPORT" glm4v_prefix_cache_prompt_tokens_total)
    HIT_ROWS=$(metric "$MPORT" glm4v_prefix_cache_hit_tokens_total)
    answers "$tag" >"$E2E_DIR/ans-$tag"
}
ids_only() { sed 's/ \[([0-9].*$//' "$1"; }

# 1. without the cache, TP 1: the reference
phase off 1 --no-prefix-cache
stop_replica "$REPLICA_PID"
e2e_check "every job answered" [ "$(grep -c "no answer\|None" "$E2E_DIR/ans-off")" = 0 ]
e2e_check "--no-prefix-cache: $PROMPT_ROWS prompt rows, no hits ($HIT_ROWS)" \
    [ "$HIT_ROWS" = 0 -a "$PROMPT_ROWS" != 0 -a "$PROMPT_ROWS" != none ]

# 2. with the cache (the default), TP 1
phase on1 1
rate=$(wait_status prefix_hit_rate "v > 0.2")
blocks=$(wait_status prefix_cached_blocks "v > 0")
e2e_check "TP 1: hit rate $rate and $blocks cached blocks in --status; $HIT_ROWS of $PROMPT_ROWS rows reused" \
    /usr/bin/python3 -c "import sys; sys.exit(not (float('${rate:-0}') > 0.2 and float('${blocks:-0}') > 0 and int('$HIT_ROWS') > 0))"
stop_replica "$REPLICA_PID"
e2e_check "TP 1: ids and logprobs with the cache equal those without" \
    diff "$E2E_DIR/ans-off" "$E2E_DIR/ans-on1"

# 3. TP 2, with and without (TP 2 sums in another order than TP 1: logprobs compared within TP 2)
phase off2 2 --no-prefix-cache
stop_replica "$REPLICA_PID"
phase on2 2
stop_replica "$REPLICA_PID"
e2e_check "TP 2: $HIT_ROWS of $PROMPT_ROWS prompt rows reused" [ "$HIT_ROWS" -gt 0 ]
e2e_check "TP 2: ids and logprobs with the cache equal those without" \
    diff "$E2E_DIR/ans-off2" "$E2E_DIR/ans-on2"
e2e_check "TP 2 ids equal TP 1's" diff <(ids_only "$E2E_DIR/ans-off") <(ids_only "$E2E_DIR/ans-on2")

# 4. memory pressure: the smallest pool a sequence allows (128 blocks = seq_length) with the cache
# filled by one pass, then three copies of every job and 12 long distinct prompts at once (32 in
# the batch): cached blocks are evicted, and every answer is still the reference's
MPORT=$(e2e_free_port)
e2e_start_replica tight 1 --max-batch 32 --prefill-chunk 64 --kv-blocks 128 --metrics-port "$MPORT" ||
    exit 1
run_jobs tight
for c in 0 1 2; do
    n=0
    for j in "${jobs[@]}"; do
        IFS='|' read -r -a a <<<"$j"
        e2e_submit --id "tight$c-$n" "${a[@]:1}" --max-new-tokens 6 --temperature 0 --logprobs 2 \
            --timeout 120 >"$E2E_DIR/tight$c-$n.json" 2>/dev/null &
        pids+=($!)
        n=$((n + 1))
    done
done
for i in $(seq 0 11); do # distinct long prompts (~13 blocks each) beside them: no room for all
    e2e_submit --id "fill-$i" --prompt "Filler $i: $SYS $long $SYS" --max-new-tokens 2 \
        --temperature 0 --timeout 120 >/dev/null 2>&1 &
    pids+=($!)
done
wait "${pids[@]}"
pids=()
evictions=$(metric "$MPORT" glm4v_prefix_cache_evictions_total)
stop_replica "$REPLICA_PID"
for c in 0 1 2; do
    answers "tight$c" | grep -v "^turn" >"$E2E_DIR/ans-tight$c"
    e2e_check "small KV pool, copy $c: ids and logprobs equal those without the cache" \
        diff <(grep -v "^turn" "$E2E_DIR/ans-off") "$E2E_DIR/ans-tight$c"
done
e2e_check "small KV pool: cached blocks were evicted ($evictions)" [ "${evictions:-0}" != 0 -a "$evictions" != none ]

# 5. kill -9 of one of two replicas while 16 shared-prefix jobs run: each answered once, right
e2e_start_replica ka 1 --max-batch 4 --prefill-chunk 16 --visibility-timeout-ms 2000 || exit 1
victim=$REPLICA_PID
e2e_start_replica kb 1 --max-batch 4 --prefill-chunk 16 --visibility-timeout-ms 2000 || exit 1
for i in $(seq 0 15); do
    e2e_submit --id "kill-$i" --system "$SYS" --prompt "Question $((i % 4))" --max-new-tokens 8 \
        --temperature 0 --timeout 120 >"$E2E_DIR/kill-$i.json" 2>/dev/null &
    pids+=($!)
done
for _ in $(seq 200); do grep -q "accepted" "$E2E_DIR/ka.log" && break; sleep 0.05; done
e2e_kill_replica ka "$victim"
wait "${pids[@]}"
pids=()
for i in $(seq 0 15); do
    e2e_check "kill -9: job $i answered once" [ "$(e2e_result_count "kill-$i")" = 1 ]
done
for i in 4 5 6 7; do
    e2e_check "kill -9: job $i ids equal job $((i - 4))'s" [ "$(e2e_json "$E2E_DIR/kill-$i.json" \
        "d['token_ids']")" = "$(e2e_json "$E2E_DIR/kill-$((i - 4)).json" "d['token_ids']")" ]
done

e2e_finish serve_prefix
