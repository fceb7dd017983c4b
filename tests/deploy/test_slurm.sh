#!/usr/bin/env bash
# deploy/slurm on a real one-node Slurm (tests/deploy/slurm_cluster.sh: Debian's slurmctld, slurmd
# and munged, loopback only, started and stopped here), CPU ranks, the tiny test model:
#  - glm4v-serve.sbatch (a replica of TP 2 reading a password-protected Redis) comes up, answers a
#    direct glm4v-sweep run, and drains on `scancel --signal=TERM --batch`: the job completes with
#    exit code 0 and its replica logs the drain;
#  - glm4v-sweep.sbatch (its own private Redis with a generated password, its own replica) writes
#    an output file with every row, no errors, and the same token ids as the direct run.
# usage: test_slurm.sh BIN_DIR TESTDATA REPO
set -u
# shellcheck source=tests/deploy/slurm_test_lib.sh
. "$(dirname "$0")/slurm_test_lib.sh"
slurm_test_init "$@"
slurm_test_skip_if "$(slurm_test_missing slurmctld slurmd munged sbatch ip nsenter redis-server)" \
    "a one-node Slurm"

# shellcheck source=tests/deploy/slurm_cluster.sh
. "$(dirname "$0")/slurm_cluster.sh"
d=$(mktemp -d)
redis_pid=""
cleanup() {
    if [ -n "$SLURM_DIR" ]; then slurm_in scancel --quiet --user=root 2>/dev/null || true; fi
    if [ -n "$redis_pid" ]; then kill -TERM "$redis_pid" 2>/dev/null || true; fi
    slurm_down
    if [ -n "${E2E_KEEP:-}" ]; then echo "kept $d" >&2; else rm -rf "$d"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM
t0=$SECONDS
slurm_up "$d/slurm" || exit 1
echo "[$((SECONDS - t0))s] Slurm up: $(slurm_in sinfo -h -o '%P %t %N')"

# Waits until job $1 has ended (at most $2 s); prints its final state and exit code.
job_end() {
    local deadline=$((SECONDS + $2)) info
    while :; do
        info=$(slurm_in scontrol show job "$1" -o 2>/dev/null)
        case $info in
        *JobState=PENDING* | *JobState=RUNNING* | *JobState=COMPLETING* | *JobState=CONFIGURING*) ;;
        *) break ;;
        esac
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "job $1 still running after $2 s" >&2
            break
        fi
        sleep 0.5
    done
    grep -o 'JobState=[A-Z_]* .*ExitCode=[0-9:]*' <<<"$info" | awk '{print $1, $NF}'
}
submit() { # submit SCRIPT [sbatch args...]: prints the job id
    local script=$1
    shift
    # the node has 4 CPUs, not the scripts' 16: adapted on the command line, as a site would
    slurm_in sbatch --parsable --nodes=1 --cpus-per-task=2 "$@" "$repo/deploy/slurm/$script"
}

mkdir -p "$d/data/img"
/usr/bin/python3 "$repo/tests/e2e/sweep/make_data.py" "$d/data" 6 2 >"$d/data/q.jsonl"
rows=$(wc -l <"$d/data/q.jsonl")
export GLM4V_HOME=$repo GLM4V_BIN=$bin GLM4V_MODEL=$model GLM4V_DEVICE=cpu GLM4V_START_TIMEOUT=120
export GLM4V_DRAIN_TIMEOUT=60
sweep_args=(--max-new-tokens 5)

# ---- glm4v-serve.sbatch against a Redis with a password ----------------------------------------
mkdir -p "$d/redis"
(umask 077 && head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$d/redis/password")
# nsenter itself, not the slurm_in function, so that $! is redis-server (nsenter execs it)
nsenter --net="/run/netns/$SLURM_NS" redis-server --port 6380 --bind 127.0.0.1 --dir "$d/redis" --save "" \
    --requirepass "$(cat "$d/redis/password")" --logfile "$d/redis/redis.log" &
redis_pid=$!
export GLM4V_REDIS=redis://127.0.0.1:6380 GLM4V_REDIS_PASSWORD_FILE=$d/redis/password
export GLM4V_PREFIX=slurmtest GLM4V_RUN_DIR=$d/run-serve GLM4V_SERVE_ARGS="--max-batch 8"
serve_job=$(submit glm4v-serve.sbatch --output="$d/serve-%j.out")
e2e_check "sbatch glm4v-serve.sbatch accepted ($serve_job)" [ -n "$serve_job" ]
live=0
for _ in $(seq 240); do
    if slurm_in "$bin/glm4v-submit" --redis "$GLM4V_REDIS" --prefix slurmtest \
        --password-file "$GLM4V_REDIS_PASSWORD_FILE" --status 2>/dev/null | grep -q "^server slurm-$serve_job-r0 "; then
        live=1
        break
    fi
    sleep 0.5
done
echo "[$((SECONDS - t0))s] serve job $serve_job live: $live"
e2e_check "the serve job's replica registers with Redis" [ "$live" = 1 ]
if [ "$live" = 1 ]; then
    slurm_in "$bin/glm4v-sweep" --redis "$GLM4V_REDIS" --prefix slurmtest \
        --password-file "$GLM4V_REDIS_PASSWORD_FILE" --in "$d/data/q.jsonl" --out "$d/direct.jsonl" \
        "${sweep_args[@]}" --timeout 120 2>"$d/direct.err"
    e2e_check "direct glm4v-sweep against the serve job exits 0" [ $? -eq 0 ]
fi
slurm_in scancel --signal=TERM --batch "$serve_job"
state=$(job_end "$serve_job" 90)
echo "[$((SECONDS - t0))s] serve job after scancel --signal=TERM --batch: $state"
e2e_check "serve job drained and completed with exit 0 ($state)" [ "$state" = "JobState=COMPLETED ExitCode=0:0" ]
e2e_check "serve job: its replica logged the drain" grep -q "draining" "$d/run-serve/replica-0.log"
e2e_check "serve job: glm4v-drain found rank 0" grep -q "SIGTERM to rank 0" "$d/serve-$serve_job.out"
kill -TERM "$redis_pid" 2>/dev/null
wait "$redis_pid" 2>/dev/null
redis_pid=""

# ---- glm4v-sweep.sbatch with its private Redis ------------------------------------------------
unset GLM4V_REDIS GLM4V_REDIS_PASSWORD_FILE GLM4V_SERVE_ARGS
export GLM4V_PREFIX=glm4v GLM4V_RUN_DIR=$d/run-sweep GLM4V_SWEEP_IN=$d/data/q.jsonl
export GLM4V_SWEEP_OUT=$d/answers.jsonl GLM4V_SWEEP_ARGS="${sweep_args[*]}"
sweep_job=$(submit glm4v-sweep.sbatch --output="$d/sweep-%j.out")
e2e_check "sbatch glm4v-sweep.sbatch accepted ($sweep_job)" [ -n "$sweep_job" ]
state=$(job_end "$sweep_job" 150)
echo "[$((SECONDS - t0))s] sweep job: $state"
e2e_check "sweep job completed with exit 0 ($state)" [ "$state" = "JobState=COMPLETED ExitCode=0:0" ]
e2e_check "sweep job: every one of $rows rows answered once, no errors" \
    /usr/bin/python3 "$repo/tests/e2e/sweep/check.py" complete "$d/data/q.jsonl" "$d/answers.jsonl"
e2e_check "sweep job: the same token ids as the direct glm4v-sweep run" \
    /usr/bin/python3 "$repo/tests/e2e/sweep/check.py" same "$d/direct.jsonl" "$d/answers.jsonl"
e2e_check "sweep job: its private Redis had a password of mode 600" \
    [ "$(stat -c %a "$d/run-sweep/redis/password" 2>/dev/null)" = 600 ]
e2e_check "sweep job: no glm4v-serve left running" [ -z "$(ip netns pids "$SLURM_NS" | while read -r p; do
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = glm4v-serve ] && echo "$p"; done)" ]
slurm_test_finish deploy_slurm 20 "$d"/serve-*.out "$d"/sweep-*.out "$d"/run-*/replica-0.log
