#!/usr/bin/env bash
# One fault per run, on fake hosts (network namespaces): Redis on h3, replica A = TP 2 over h1 + h2,
# replica B = TP 1 on h4, 60 greedy jobs in flight, then FAULT:
#   kill      kill -9 of A's rank on h2
#   linkdown  h2's link down in the middle of a step (no reset: packets just stop), back after 30 s
#   rediscut  h1 (A's rank 0) silently cut from Redis for 20 s (a bogus neighbour entry: its
#             packets to h3 go nowhere), then mended
#   sigstop   A's ranks SIGSTOPped past the visibility timeout, then SIGCONT (A then writes late
#             Results for jobs that B answered meanwhile: they must lose)
#   hang      A's rank on h2 alone SIGSTOPped for good (a hung rank: its host still answers, so
#             only the step watchdog can tell; rank 0 must count the abort in Redis)
# Each run: every job has exactly one final Result and no error, its ids equal glm4v-run's at TP 1
# (what the fault-free cluster gives, test_tp_hosts.sh; 20 clients stream text instead of JSON,
# and their output must be the answer exactly once, whichever attempts they saw), every process of
# A (its ranks, the orted daemons on h1 and h2, and mpirun) is gone by the step watchdog's deadline
# + 10 s where the fault leaves A broken, A is whole or gone where it does not, and the logs name
# the fault. Prints the time from the fault to A's last process gone and to the last job answered.
# usage: test_faults.sh FAULT BIN_DIR TESTDATA
fault=$1
shift
case $fault in kill | linkdown | rediscut | sigstop | hang) ;; *)
    echo "unknown fault '$fault'" >&2
    exit 2
    ;;
esac
# shellcheck source=tests/e2e/multihost/mh_lib.sh
source "$(dirname "$0")/mh_lib.sh"
mh_setup "$1" "$2" 4

n_jobs=60
vis_ms=3000  # a job held by a silent replica goes to another after this
# step watchdog: deadline of every collective and step plan (10x for the first steps). 6 s is the
# shortest the launch settings accept: Open MPI's OOB keepalive, set from it
# (deploy/common/glm4v-mca.sh), must find a silent host (about 4 s) before the deadline passes.
step_ms=6000
# The link cut: the keepalive (4 s) has to beat a rank waiting idle for a step plan, which may
# give up after 0.75 x the deadline.
if [ "$fault" = linkdown ]; then step_ms=8000; fi
# Rank 0 blocks in a Redis command for up to its 5 s command timeout while Redis is unreachable,
# and its peers wait for the next step plan meanwhile: a step deadline shorter than that turns a
# Redis outage into a replica abort. Real deployments keep the default 30 s; this run needs 6.
# A replica stopped longer than its step deadline aborts itself once continued (the deadline
# counts the stopped time). The stop here (7 s) outlasts the lease (3 s) but not the deadline, so
# that A wakes up and writes its late Results: first Result wins must hold against it.
if [ "$fault" = sigstop ]; then step_ms=10000; fi
max_batch=4

/usr/bin/python3 "$(dirname "$0")/../random_images.py" "$E2E_DIR" --seed 5 --count 3 --size 30 160
prompts=("Describe the picture in detail." "What is in the image?" "1 2 3 4 5 6 7 8 9")
job_args() { # job_args KIND: the 6 kinds of job (prompt, image or not, length)
    args=(--prompt "${prompts[$(($1 % 3))]}" --max-new-tokens $((160 + 16 * $1)) --ignore-eos)
    if [ "$1" -ge 3 ]; then args+=(--image "$E2E_DIR/img$(($1 % 3)).png"); fi
}
for k in 0 1 2 3 4 5; do
    job_args $k
    OMP_NUM_THREADS=1 "$BIN/glm4v-run" --model "$MODEL" "${args[@]}" --json >"$E2E_DIR/ref-$k.json" 2>/dev/null
    e2e_json "$E2E_DIR/ref-$k.json" "d['generated_ids']" >"$E2E_DIR/ref-$k.ids"
done

mh_redis_start h3 || exit 1
common=(--visibility-timeout-ms "$vis_ms" --max-batch "$max_batch" --step-timeout-ms "$step_ms")
mh_start_replica a "h1 h2" "${common[@]}" || exit 1
pid_a=$REPLICA_PID
mh_start_replica b "h4" "${common[@]}" || exit 1
mh_log "replicas up: A = TP 2 over h1 + h2, B = TP 1 on h4, Redis on h3"

text_job() { [ $(($1 % 3)) -eq 1 ]; } # 20 of the 60 clients print text instead of JSON
# The streamed text equals the answer exactly once (stdout is not a terminal: no reprint).
same_text() { # same_text OUT REF_JSON
    /usr/bin/python3 -c "import json,sys; sys.exit(open(sys.argv[1], encoding='utf-8', errors='replace').read() != json.load(open(sys.argv[2]))['text'] + '\n')" "$1" "$2"
}
t_submit=$SECONDS
pids=()
for i in $(seq 0 $((n_jobs - 1))); do
    job_args $((i % 6))
    if text_job "$i"; then # glm4v-submit streaming text: it must follow the newest attempt
        "$BIN/glm4v-submit" --redis "$REDIS_URL" --prefix "$PREFIX" --id "f-$i" "${args[@]}" \
            --temperature 0 --timeout 170 >"$E2E_DIR/f-$i.txt" 2>"$E2E_DIR/f-$i.err" &
    else
        mh_submit --id "f-$i" "${args[@]}" --temperature 0 --timeout 170 >"$E2E_DIR/f-$i.json" 2>"$E2E_DIR/f-$i.err" &
    fi
    pids+=($!)
done
# The fault comes once A is in the middle of its work: it has accepted a full batch and run steps.
for _ in $(seq 600); do [ "$(grep -c " accepted" "$E2E_DIR/a.log")" -ge "$max_batch" ] && break; sleep 0.05; done
sleep 0.5
ranks_a() { mh_serve_pids h1; mh_serve_pids h2; }
# whole: mpirun, a rank and an orted on each of h1 and h2, and the liveness key; gone: nothing
whole_or_gone() { case $1 in "h1:glm4v-serve h1:orted h2:glm4v-serve h2:orted mpirun /1" | "/"*) return 0 ;; *) return 1 ;; esac }
t_fault=$SECONDS
t_fault_ms=$(date +%s%3N)
mh_log "fault '$fault' after $((t_fault - t_submit)) s of work; A has accepted $(grep -c " accepted" "$E2E_DIR/a.log") job(s), finished $(grep -c " done: " "$E2E_DIR/a.log")"
a_broken=0
case $fault in
kill)
    a_broken=1
    kill -9 "$(mh_serve_pids h2)"
    ;;
linkdown)
    a_broken=1
    ip link set glm4vt-v2 down
    (sleep 30 && ip link set glm4vt-v2 up && echo "[link] h2 up again") &
    pids_bg=$!
    ;;
rediscut)
    mh_exec h1 ip neigh replace "$REDIS_HOST" lladdr 02:00:00:00:00:01 dev eth0 nud permanent
    (sleep 20 && mh_exec h1 ip neigh del "$REDIS_HOST" dev eth0 && echo "[link] h1 reaches Redis again") &
    pids_bg=$!
    ;;
hang)
    a_broken=1
    kill -STOP "$(mh_serve_pids h2)"
    ;;
sigstop)
    stopped=$(ranks_a)
    # shellcheck disable=SC2086 # a list of pids
    kill -STOP $stopped
    sleep $((vis_ms / 1000 + 4))
    # shellcheck disable=SC2086
    kill -CONT $stopped
    mh_log "A's ranks continued after $((SECONDS - t_fault)) s stopped"
    ;;
esac

# A broken replica must be gone by the watchdog's deadline + 10 s, whatever its jobs do: its
# ranks, the orted daemons on h1 and h2, and mpirun (which used to wait for the cut host's daemon
# until 30 s after the link came back).
if [ "$a_broken" = 1 ]; then
    limit=$((step_ms / 1000 + 10))
    while [ -n "$(mh_replica_left "h1 h2" "$pid_a")" ] && [ $((SECONDS - t_fault)) -le "$limit" ]; do
        sleep 0.1
    done
    left=$(mh_replica_left "h1 h2" "$pid_a" | tr '\n' ' ')
    mh_log "A checked $(($(date +%s%3N) - t_fault_ms)) ms after the fault; left: ${left:-nothing}"
    e2e_check "$fault: every process of A (ranks, orted, mpirun) gone within the step deadline + 10 s (left after ${limit} s: ${left:-nothing})" [ -z "$left" ]
fi

wait "${pids[@]}"
t_done=$SECONDS
# the time of the last Result, from the job results' own clock: the submit processes' end
mh_log "all $n_jobs clients returned $((t_done - t_fault)) s after the fault"
answered=0
same=0
once=0
for i in $(seq 0 $((n_jobs - 1))); do
    [ "$(mh_result_count "f-$i")" = 1 ] && once=$((once + 1))
    if text_job "$i"; then
        if same_text "$E2E_DIR/f-$i.txt" "$E2E_DIR/ref-$((i % 6)).json"; then
            answered=$((answered + 1))
            same=$((same + 1))
        fi
        continue
    fi
    ids=$(e2e_json "$E2E_DIR/f-$i.json" "d['token_ids'] if not d.get('error') else 'error'" 2>/dev/null)
    [ -n "$ids" ] && [ "$ids" != error ] && answered=$((answered + 1))
    [ "$ids" = "$(cat "$E2E_DIR/ref-$((i % 6)).ids")" ] && same=$((same + 1))
done
followed=$(cat "$E2E_DIR"/f-*.err | grep -c "handed to another server")
mh_log "text clients that followed a new attempt: $followed"
e2e_check "$fault: every job answered without error ($answered/$n_jobs)" [ "$answered" = "$n_jobs" ]
e2e_check "$fault: every job has exactly one final Result ($once/$n_jobs)" [ "$once" = "$n_jobs" ]
e2e_check "$fault: greedy ids equal the fault-free ones ($same/$n_jobs)" [ "$same" = "$n_jobs" ]
reclaimed=$(grep -c "reclaimed" "$E2E_DIR/b.log")
mh_log "B reclaimed $reclaimed time(s); A answered $(grep -c " done: " "$E2E_DIR/a.log"), B $(grep -c " done: " "$E2E_DIR/b.log")"

# The logs name the fault.
case $fault in
kill)
    e2e_check "kill: A's log names the killed rank" grep -qiE "rank 1.*(signal 9|killed|did not answer)|(signal 9|killed).*rank 1" "$E2E_DIR/a.log"
    ;;
linkdown)
    # mpirun's OOB keepalive finds h2 silent before the step deadline and ends A itself, naming
    # the host; rank 1's own watchdog line, written on the cut host, never reaches the log.
    e2e_check "linkdown: A's log names the lost host" \
        grep -qE "Remote daemon: .* on node glm4vt-h2" "$E2E_DIR/a.log"
    e2e_check "linkdown: A's log says mpirun lost it" \
        grep -q "ORTE has lost communication with a remote daemon" "$E2E_DIR/a.log"
    ;;
rediscut)
    e2e_check "rediscut: A's log names the lost Redis connection" grep -qiE "redis.*(timeout|timed out|lost|reconnect|connection)" "$E2E_DIR/a.log"
    ;;
hang)
    e2e_check "hang: A's log names the step watchdog and the silent rank" \
        grep -qE "step watchdog: rank 0: .* not done after $step_ms ms; rank 1 did not answer" "$E2E_DIR/a.log"
    e2e_check "hang: A's log says the abort was recorded" grep -q "a: watchdog abort recorded" "$E2E_DIR/a.log"
    aborts=$(mh_redis HGET "$PREFIX:watchdog_aborts" a)
    mh_log "watchdog aborts in Redis: a=${aborts:-none} ($(mh_redis HGET "$PREFIX:watchdog_abort:a" reason | cut -c1-120))"
    e2e_check "hang: Redis counts one watchdog abort of A (${aborts:-none})" [ "$aborts" = 1 ]
    ;;
sigstop)
    e2e_check "sigstop: B reclaimed A's jobs" [ "$reclaimed" -ge 1 ]
    # A woke up holding jobs that B had reclaimed and answered: A finds their Results written
    # elsewhere (at its next chunk, or when it writes its own) and stops or drops its own; whichever
    # replica came second never writes a second Result (first Result wins)
    e2e_check "sigstop: the replica that came second found the Result written and wrote none" \
        grep -qE "result already existed|Result exists \(written elsewhere\)|Result was written by another replica" \
        "$E2E_DIR/a.log" "$E2E_DIR/b.log"
    ;;
esac
if [ "$fault" = linkdown ] || [ "$fault" = rediscut ]; then wait "$pids_bg"; fi

if [ "$a_broken" = 0 ]; then
    # The cluster still serves, and A is either whole (both ranks, its liveness key) or gone
    # (no rank, no mpirun): never half a replica holding jobs or cores.
    mh_submit --id after-0 --prompt "Hello" --max-new-tokens 4 --timeout 60 >/dev/null 2>&1
    e2e_check "$fault: a job after the fault is answered once" [ "$(mh_result_count after-0)" = 1 ]
    sleep $((step_ms / 1000 + 1))
    a_left=$(mh_replica_left "h1 h2" "$pid_a" | sort | tr '\n' ' ')
    live=$(mh_redis EXISTS "$PREFIX:server:a")
    mh_log "A after the fault: ${a_left:-nothing left}, liveness key $live"
    e2e_check "$fault: A is whole or gone (${a_left:-nothing left}, liveness $live)" \
        whole_or_gone "$a_left/$live"
fi
if [ "$E2E_FAILED" -gt 0 ]; then
    echo "---- A's log (tail)" >&2
    tail -n 30 "$E2E_DIR/a.log" >&2
fi
e2e_finish "multihost_fault_$fault"
