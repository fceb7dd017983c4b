#!/usr/bin/env bash
# End to end through deploy/local: up.sh starts redis-server and 2 replicas of TP 1 on the CPU
# backend (glm4v-tiny-b), jobs go in with glm4v-submit, /metrics of both replicas is scraped while
# they run, the jobs must be spread over both replicas and agree with the metrics, status.sh must
# see everything, and down.sh must drain both replicas and stop Redis.
#
# usage: test_local_cluster.sh BIN_DIR      (BIN_DIR holds glm4v-serve and glm4v-submit)
# Exit 77 (ctest: skipped) only when BIN_DIR/glm4v-serve has not been built.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
bin_dir=${1:-$repo/build/bin}
model=${GLM4V_TESTDATA:-$repo/../shared/testdata}/glm4v-tiny-b
n_jobs=16

if [ ! -x "$bin_dir/glm4v-serve" ]; then
    echo "SKIP: $bin_dir/glm4v-serve is not built yet"
    exit 77
fi
[ -x "$bin_dir/glm4v-submit" ] || { echo "FAIL: $bin_dir/glm4v-submit missing"; exit 1; }
[ -d "$model" ] || { echo "FAIL: test model $model missing"; exit 1; }
export OMPI_MCA_rmaps_base_oversubscribe=1

failures=0
fail() {
    echo "FAIL: $*" >&2
    failures=$((failures + 1))
}

# A port nobody listens on now (bash's /dev/tcp connect fails); good enough for a test.
free_port() {
    local port
    for _ in $(seq 1 200); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    return 1
}

# GET path from 127.0.0.1:port; prints the body, fails unless the status is 200.
http_get() {
    local port=$1 path=$2 status
    exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
    printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$path" >&3
    local response
    response=$(timeout 10 cat <&3 || true)
    exec 3<&-
    status=$(head -n 1 <<<"$response" | awk '{print $2}')
    [ "$status" = 200 ] || return 1
    sed '1,/^\r$/d' <<<"$response"
}

# Value of one series in a metrics text ("" when absent).
metric() {
    awk -v name="$2" '$1 == name { print $2 }' <<<"$1"
}

run_dir=$(mktemp -d)
redis_port=$(free_port)
metrics_port=$(free_port)
redis_url=redis://127.0.0.1:$redis_port
cleanup() {
    bash "$repo/deploy/local/down.sh" --run-dir "$run_dir" --timeout 30 >/dev/null 2>&1 || true
    rm -rf "$run_dir"
}
trap cleanup EXIT

echo "--- up.sh (redis $redis_port, metrics $metrics_port and $((metrics_port + 1)))"
# --max-batch 2: a replica takes only a few jobs at a time, so the other one gets its share.
if ! bash "$repo/deploy/local/up.sh" --model "$model" --device cpu --replicas 2 --tp 1 \
    --redis-port "$redis_port" --metrics-port "$metrics_port" --run-dir "$run_dir" \
    --bin "$bin_dir" --max-batch 2 --wait 120; then
    tail -n 30 "$run_dir"/replica-*.log >&2 || true
    echo "FAIL: up.sh"
    exit 1
fi
[ -d "$run_dir/redis/appendonlydir" ] ||
    fail "redis runs without its append-only file (deploy/redis/redis.conf not used?)"

echo "--- status.sh"
status_out=$(bash "$repo/deploy/local/status.sh" --run-dir "$run_dir") || fail "status.sh exit $?"
echo "$status_out"
grep -q "^servers: 2 live$" <<<"$status_out" || fail "status.sh does not show 2 live servers"
[ "$(grep -c '^replica [01]: running' <<<"$status_out")" = 2 ] || fail "status.sh: replicas not running"

echo "--- $n_jobs jobs through glm4v-submit, /metrics scraped while they run"
pids=()
for i in $(seq 1 "$n_jobs"); do
    "$bin_dir/glm4v-submit" --redis "$redis_url" --id "deploy-test-$i" \
        --prompt "Question number $i: describe a cluster." --max-new-tokens 24 \
        --json --timeout 120 >"$run_dir/result-$i.json" 2>"$run_dir/submit-$i.err" &
    pids+=("$!")
done
scrapes=0
while [ "$scrapes" -lt 40 ]; do
    running=0
    for pid in "${pids[@]}"; do if kill -0 "$pid" 2>/dev/null; then running=1; fi; done
    [ "$running" = 1 ] || break
    for port in "$metrics_port" "$((metrics_port + 1))"; do
        body=$(http_get "$port" /metrics) || { fail "GET /metrics on $port during the run"; continue; }
        grep -q '^# TYPE glm4v_jobs_total counter$' <<<"$body" || fail "no glm4v_jobs_total on $port"
    done
    scrapes=$((scrapes + 1))
    sleep 0.2
done
echo "scraped both endpoints $scrapes time(s) during the run"
[ "$scrapes" -ge 1 ] || fail "the jobs finished before a single scrape"
for i in "${!pids[@]}"; do
    wait "${pids[i]}" || fail "glm4v-submit of job $((i + 1)) exited $?: $(cat "$run_dir/submit-$((i + 1)).err")"
done

# Every job: no error, 1..24 tokens; and the server ids they report: both replicas served some.
summary=$(/usr/bin/python3 - "$run_dir" "$n_jobs" <<'EOF'
import json, sys
run_dir, n = sys.argv[1], int(sys.argv[2])
servers, tokens, bad = {}, 0, []
for i in range(1, n + 1):
    try:
        r = json.load(open(f"{run_dir}/result-{i}.json"))
    except Exception as e:
        bad.append(f"job {i}: {e}")
        continue
    if r.get("error") or not 1 <= len(r.get("token_ids", [])) <= 24:
        bad.append(f"job {i}: {r.get('error')} {len(r.get('token_ids', []))} tokens")
    servers[r.get("server_id")] = servers.get(r.get("server_id"), 0) + 1
    tokens += r.get("usage", {}).get("completion_tokens", 0)
print(f"servers={len(servers)} tokens={tokens} bad={len(bad)} spread={servers}")
for b in bad:
    print(b)
EOF
) || fail "could not read the results"
echo "$summary"
grep -q "^servers=2 " <<<"$summary" || fail "jobs were not spread across both replicas"
grep -q " bad=0 " <<<"$summary" || fail "some jobs failed"
tokens=$(sed -n 's/.* tokens=\([0-9]*\) .*/\1/p' <<<"$summary")

echo "--- /metrics after the run"
total_ok=0 total_tokens=0
for port in "$metrics_port" "$((metrics_port + 1))"; do
    body=$(http_get "$port" /metrics) || { fail "GET /metrics on $port"; continue; }
    ok=$(metric "$body" 'glm4v_jobs_total{outcome="ok"}')
    gen=$(metric "$body" glm4v_generated_tokens_total)
    count=$(metric "$body" glm4v_request_duration_seconds_count)
    inf=$(metric "$body" 'glm4v_request_duration_seconds_bucket{le="+Inf"}')
    steps=$(metric "$body" glm4v_step_duration_seconds_count)
    echo "port $port: jobs ok $ok, generated tokens $gen, requests $count, steps $steps"
    [ "${ok:-0}" -ge 1 ] || fail "replica on $port reports no finished job"
    if [ "$count" != "$ok" ] || [ "$inf" != "$ok" ]; then
        fail "request histogram on $port disagrees with jobs_total"
    fi
    [ "${steps:-0}" -ge 1 ] || fail "no steps observed on $port"
    http_get "$port" /healthz >/dev/null || fail "GET /healthz on $port"
    if http_get "$port" /nothing-here >/dev/null 2>&1; then fail "GET /nothing-here on $port was not a 404"; fi
    total_ok=$((total_ok + ${ok:-0}))
    total_tokens=$((total_tokens + ${gen:-0}))
done
[ "$total_ok" = "$n_jobs" ] || fail "jobs_total{outcome=ok} sums to $total_ok, expected $n_jobs"
[ "$total_tokens" = "$tokens" ] || fail "generated_tokens_total sums to $total_tokens, results hold $tokens"

echo "--- down.sh"
bash "$repo/deploy/local/down.sh" --run-dir "$run_dir" --timeout 60 || fail "down.sh exit $?"
for i in 0 1; do
    grep -q "stopped" "$run_dir/replica-$i.log" || fail "replica $i did not log a clean stop"
done
if bash "$repo/deploy/local/status.sh" --run-dir "$run_dir" >/dev/null 2>&1; then
    fail "status.sh still reports a running cluster after down.sh"
fi
if [ -r "$run_dir/redis/redis.pid" ] && kill -0 "$(cat "$run_dir/redis/redis.pid")" 2>/dev/null; then
    fail "redis-server still running after down.sh"
fi

if [ "$failures" -gt 0 ]; then
    echo "test_local_cluster: $failures failure(s)"
    exit 1
fi
echo "test_local_cluster: passed"
