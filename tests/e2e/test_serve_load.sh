#!/usr/bin/env bash
# Load, end to end: 2000 short jobs from 8 client processes against 2 replicas; all complete,
# none lost or duplicated; prints p50/p99 latency and jobs/s.
# usage: test_serve_load.sh BIN_DIR TESTDATA
source "$(dirname "$0")/serve_lib.sh"
e2e_setup "$1" "$2"
e2e_start_replica a 1 --max-batch 64 || exit 1
e2e_start_replica b 1 --max-batch 64 || exit 1
jobs=2000 clients=8
start=$(date +%s.%N)
for c in $(seq 0 $((clients - 1))); do
    (
        for k in $(seq 0 $((jobs / clients - 1))); do
            i=$((c * jobs / clients + k))
            e2e_submit --id "load-$i" --prompt "Question $i: what is shown?" --max-new-tokens 2 \
                --temperature 0 --timeout 120 2>/dev/null |
                /usr/bin/python3 -c "import json,sys; d=json.load(sys.stdin); print(d['id'], d['timings']['total_ms'], d['server_id'])" \
                    >>"$E2E_DIR/lat-$c"
        done
    ) &
    pids+=($!)
done
wait "${pids[@]}"
pids=()
elapsed=$(/usr/bin/python3 -c "import time; print(time.time() - $start)")
cat "$E2E_DIR"/lat-* >"$E2E_DIR/lat"
e2e_check "all $jobs clients got results ($(wc -l <"$E2E_DIR/lat"))" [ "$(wc -l <"$E2E_DIR/lat")" -eq $jobs ]
e2e_check "no duplicate ids" [ "$(cut -d' ' -f1 "$E2E_DIR/lat" | sort -u | wc -l)" -eq $jobs ]
e2e_check "both replicas served" [ "$(cut -d' ' -f3 "$E2E_DIR/lat" | sort -u | wc -l)" -eq 2 ]
dup=0
for i in 0 1 999 1999; do [ "$(e2e_result_count "load-$i")" = 1 ] || dup=$((dup + 1)); done
e2e_check "one result per job" [ $dup -eq 0 ]
/usr/bin/python3 - "$E2E_DIR/lat" "$elapsed" <<'PY'
import sys
lat = sorted(float(l.split()[1]) for l in open(sys.argv[1]))
n = len(lat); el = float(sys.argv[2])
print(f"load: {n} jobs in {el:.1f} s = {n / el:.1f} jobs/s; latency p50 {lat[n // 2]:.1f} ms, "
      f"p99 {lat[min(n - 1, int(n * 0.99))]:.1f} ms")
PY
e2e_finish serve_load
