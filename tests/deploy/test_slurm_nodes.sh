#!/usr/bin/env bash
# deploy/slurm across two Slurm nodes: two fake hosts (network namespaces, scripts/netns-hosts.sh),
# one slurmd on each under its own host name, CPU ranks, the tiny test model.
# glm4v-sweep.sbatch with GLM4V_NODES_PER_REPLICA=2 runs one replica of TP 2 whose rank 1 is on the
# second node (mpirun starts its daemon there through Slurm) and its private Redis on the first
# node's address: the job completes with exit 0 and drains, every row is answered with the ids
# glm4v-run gives alone, and the replica's all-reduces crossed the second node's veth; the orted
# on the second node runs with the OOB keepalive the launch script derives from the step deadline
# (deploy/common/glm4v-mca.sh: 3 s for the default 30 s), which is what lets mpirun end the
# replica whole when that node drops off the network.
# usage: test_slurm_nodes.sh BIN_DIR TESTDATA REPO
set -u
# shellcheck source=tests/deploy/slurm_test_lib.sh
. "$(dirname "$0")/slurm_test_lib.sh"
slurm_test_init "$@"
why=$(slurm_test_missing slurmctld slurmd munged sbatch ip nsenter unshare redis-server)
[ -n "$why" ] || ip netns add glm4vs-probe 2>/dev/null || why="cannot create network namespaces"
slurm_test_skip_if "$why" "a two-node Slurm"
ip netns del glm4vs-probe

# shellcheck source=tests/deploy/slurm_cluster.sh
. "$(dirname "$0")/slurm_cluster.sh"
d=$(mktemp -d)
cleanup() {
    if [ -n "$SLURM_DIR" ]; then slurm_in scancel --quiet --user=root 2>/dev/null || true; fi
    slurm_down
    if [ -n "${E2E_KEEP:-}" ]; then echo "kept $d" >&2; else rm -rf "$d"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM
t0=$SECONDS
slurm_up "$d/slurm" 2 || exit 1
echo "[$((SECONDS - t0))s] Slurm up: $(slurm_in sinfo -h -N -o '%N %t' | tr '\n' ' ')"

mkdir -p "$d/data/img"
/usr/bin/python3 "$repo/tests/e2e/sweep/make_data.py" "$d/data" 4 2 >"$d/data/q.jsonl"
export GLM4V_HOME=$repo GLM4V_BIN=$bin GLM4V_MODEL=$model GLM4V_DEVICE=cpu GLM4V_START_TIMEOUT=120
export GLM4V_DRAIN_TIMEOUT=60 GLM4V_NODES_PER_REPLICA=2 GLM4V_RUN_DIR=$d/run
export GLM4V_SWEEP_IN=$d/data/q.jsonl GLM4V_SWEEP_OUT=$d/answers.jsonl GLM4V_SWEEP_ARGS="--max-new-tokens 5"
unset GLM4V_REDIS GLM4V_REDIS_PASSWORD_FILE

# The keepalive time the orted on the second node got (environment or command line), "" if none.
orted_keepalive() {
    local p
    for p in $(ip netns pids glm4vs-h2 2>/dev/null); do
        [ "$(cat "/proc/$p/comm" 2>/dev/null)" = orted ] || continue
        { tr '\0' '\n' <"/proc/$p/environ"; tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null |
            grep -oE "oob_tcp_keepalive_time[= ]+[0-9]+" | head -n 1 | grep -oE "[0-9]+$"
        return 0
    done
}
veth_bytes() { echo $(($(cat /sys/class/net/glm4vs-v2/statistics/rx_bytes) + $(cat /sys/class/net/glm4vs-v2/statistics/tx_bytes))); }
before=$(veth_bytes)
# the nodes have 4 CPUs and 1 GPU each, not the script's 16 and 2: adapted on the command line
job=$(slurm_in sbatch --parsable --nodes=2 --cpus-per-task=2 --gpus-per-node=1 \
    --output="$d/sweep-%j.out" "$repo/deploy/slurm/glm4v-sweep.sbatch")
e2e_check "sbatch accepted ($job)" [ -n "$job" ]
state=""
keepalive=""
deadline=$((SECONDS + 150))
while [ "$SECONDS" -lt "$deadline" ]; do
    [ -n "$keepalive" ] || keepalive=$(orted_keepalive)
    info=$(slurm_in scontrol show job "$job" -o 2>/dev/null)
    case $info in *JobState=PENDING* | *JobState=RUNNING* | *JobState=COMPLETING* | *JobState=CONFIGURING*) ;; *) break ;; esac
    sleep 0.5
done
state=$(grep -o 'JobState=[A-Z_]* .*ExitCode=[0-9:]*' <<<"$info" | awk '{print $1, $NF}')
crossed=$(($(veth_bytes) - before))
echo "[$((SECONDS - t0))s] sweep job over two nodes: $state, $crossed bytes through the second node's veth"
e2e_check "the job completed with exit 0 ($state)" [ "$state" = "JobState=COMPLETED ExitCode=0:0" ]
e2e_check "one replica of TP 2 over both nodes" grep -q "1 replica(s) of TP 2 on glm4vs-h1 glm4vs-h2" "$d/sweep-$job.out"
e2e_check "the private Redis listens on the first node's address" grep -q "private Redis at redis://198.18.79.1:" "$d/sweep-$job.out"
e2e_check "every row answered once, no errors" \
    /usr/bin/python3 "$repo/tests/e2e/sweep/check.py" complete "$d/data/q.jsonl" "$d/answers.jsonl"
e2e_check "every row has the ids of glm4v-run alone" /usr/bin/python3 "$repo/tests/e2e/sweep/check.py" \
    vs-run "$bin" "$model" "$d/data/q.jsonl" "$d/answers.jsonl" "$d/data" 1 5
e2e_check "rank 1's traffic crossed the second node's veth ($crossed bytes)" [ "$crossed" -gt 50000 ]
e2e_check "the replica drained" grep -q "draining" "$d/run/replica-0.log"
e2e_check "the second node's orted has the OOB keepalive of a 30 s deadline (${keepalive:-none})" \
    [ "$keepalive" = 3 ]
slurm_test_finish deploy_slurm_nodes 30 "$d"/sweep-*.out "$d/run/replica-0.log"
