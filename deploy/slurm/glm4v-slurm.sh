# shellcheck shell=bash
# Shared by glm4v-serve.sbatch and glm4v-sweep.sbatch (sourced inside the batch script, which runs
# on the first node of the allocation). Starts one replica per group of nodes, waits until they
# are live, and drains them. Settings come from the environment (sbatch exports it by default):
#
#   GLM4V_HOME              checkout or install with build/bin and deploy/ (default: submit dir)
#   GLM4V_BIN               where glm4v-serve, glm4v-submit, glm4v-sweep are (default $GLM4V_HOME/build/bin)
#   GLM4V_MODEL             model folder, on a file system every node sees (required)
#   GLM4V_REDIS             redis://host:port of the queue (the sweep script can start its own)
#   GLM4V_REDIS_PASSWORD_FILE / GLM4V_REDIS_PASSWORD   the Redis password (file: first line)
#   GLM4V_PREFIX            key prefix (default glm4v)
#   GLM4V_NODES_PER_REPLICA nodes in one tensor-parallel group (default 1: TP = GPUs per node)
#   GLM4V_GPUS_PER_NODE     default: SLURM_GPUS_ON_NODE, else the count in SLURM_JOB_GPUS
#   GLM4V_DEVICE            cuda (default) or cpu
#   GLM4V_LAUNCHER          mpirun (default: Open MPI with a hostfile) or srun (srun --mpi=pmix)
#   GLM4V_METRICS_PORT      /metrics port on each replica's first node (default 9400)
#   GLM4V_METRICS_BIND      default 127.0.0.1; 0.0.0.0 to let a Prometheus on another host scrape
#   GLM4V_DRAIN_TIMEOUT     seconds a replica may take to drain (default 300)
#   GLM4V_SERVE_ARGS        extra glm4v-serve arguments (word-split), e.g. "--max-batch 32"

glm4v_die() {
    echo "glm4v-slurm: $*" >&2
    exit 1
}

glm4v_setup() {
    GLM4V_HOME=${GLM4V_HOME:-${SLURM_SUBMIT_DIR:-$PWD}}
    GLM4V_BIN=${GLM4V_BIN:-$GLM4V_HOME/build/bin}
    GLM4V_PREFIX=${GLM4V_PREFIX:-glm4v}
    GLM4V_DEVICE=${GLM4V_DEVICE:-cuda}
    GLM4V_LAUNCHER=${GLM4V_LAUNCHER:-mpirun}
    GLM4V_NODES_PER_REPLICA=${GLM4V_NODES_PER_REPLICA:-1}
    GLM4V_METRICS_PORT=${GLM4V_METRICS_PORT:-9400}
    GLM4V_METRICS_BIND=${GLM4V_METRICS_BIND:-127.0.0.1}
    GLM4V_DRAIN_TIMEOUT=${GLM4V_DRAIN_TIMEOUT:-300}
    GLM4V_RUN_DIR=${GLM4V_RUN_DIR:-$GLM4V_HOME/run/slurm-${SLURM_JOB_ID:-manual}}
    [ -n "${GLM4V_MODEL:-}" ] || glm4v_die "set GLM4V_MODEL to the model folder"
    [ -x "$GLM4V_BIN/glm4v-serve" ] || glm4v_die "$GLM4V_BIN/glm4v-serve not found (set GLM4V_HOME)"
    [ -n "${SLURM_JOB_NODELIST:-}" ] || glm4v_die "not inside a Slurm allocation"
    mkdir -p "$GLM4V_RUN_DIR"

    if [ -z "${GLM4V_GPUS_PER_NODE:-}" ]; then
        if [ -n "${SLURM_GPUS_ON_NODE:-}" ]; then
            GLM4V_GPUS_PER_NODE=$SLURM_GPUS_ON_NODE
        elif [ -n "${SLURM_JOB_GPUS:-}" ]; then
            GLM4V_GPUS_PER_NODE=$(tr ',' '\n' <<<"$SLURM_JOB_GPUS" | wc -l)
        else
            GLM4V_GPUS_PER_NODE=1
        fi
    fi
    mapfile -t GLM4V_NODES < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
    local n_nodes=${#GLM4V_NODES[@]}
    [ $((n_nodes % GLM4V_NODES_PER_REPLICA)) -eq 0 ] ||
        glm4v_die "$n_nodes nodes do not split into groups of $GLM4V_NODES_PER_REPLICA"
    GLM4V_REPLICAS=$((n_nodes / GLM4V_NODES_PER_REPLICA))
    GLM4V_TP=$((GLM4V_NODES_PER_REPLICA * GLM4V_GPUS_PER_NODE))
    # Open MPI would pick ssh to reach other nodes; inside Slurm it launches its daemons with srun.
    export OMPI_MCA_plm=slurm
    GLM4V_REPLICA_PIDS=()
    echo "glm4v-slurm: $GLM4V_REPLICAS replica(s) of TP $GLM4V_TP on ${GLM4V_NODES[*]}"
}

# Starts replica i on nodes [i*k, i*k+k) in the background; its launcher's pid is appended to
# GLM4V_REPLICA_PIDS. Rank 0 is on the group's first node, which also serves /metrics.
glm4v_start_replica() {
    local i=$1 k=$GLM4V_NODES_PER_REPLICA g=$GLM4V_GPUS_PER_NODE
    local -a group=("${GLM4V_NODES[@]:i*k:k}")
    local -a serve=("$GLM4V_BIN/glm4v-serve" --device "$GLM4V_DEVICE" --tp "$GLM4V_TP"
        --model "$GLM4V_MODEL" --redis "$GLM4V_REDIS" --prefix "$GLM4V_PREFIX"
        --server-id "slurm-${SLURM_JOB_ID:-0}-r$i" --metrics-port "$GLM4V_METRICS_PORT"
        --metrics-bind "$GLM4V_METRICS_BIND")
    if [ -n "${GLM4V_REDIS_PASSWORD_FILE:-}" ]; then
        serve+=(--redis-password-file "$GLM4V_REDIS_PASSWORD_FILE")
    fi
    local -a extra=()
    if [ -n "${GLM4V_SERVE_ARGS:-}" ]; then read -r -a extra <<<"$GLM4V_SERVE_ARGS"; fi
    local log=$GLM4V_RUN_DIR/replica-$i.log
    if [ "$GLM4V_LAUNCHER" = srun ]; then
        # srun forwards SIGTERM to every task; every rank ignores it except rank 0, which drains.
        srun --overlap --nodes="$k" --ntasks="$GLM4V_TP" --ntasks-per-node="$g" \
            --nodelist="$(IFS=,; echo "${group[*]}")" --mpi=pmix --kill-on-bad-exit=1 \
            "${serve[@]}" ${extra[@]+"${extra[@]}"} >"$log" 2>&1 &
    else
        local hostfile=$GLM4V_RUN_DIR/hostfile-$i
        : >"$hostfile"
        local node
        for node in "${group[@]}"; do echo "$node slots=$g" >>"$hostfile"; done
        # -x copies these variables from this shell to every rank; the password never appears on
        # a command line. --bind-to none: the ranks set their own GPU by local rank.
        local -a env_args=(-x PATH -x LD_LIBRARY_PATH)
        if [ -n "${GLM4V_REDIS_PASSWORD:-}" ]; then env_args+=(-x GLM4V_REDIS_PASSWORD); fi
        # Open MPI's OOB keepalive from the step deadline, so that a node that drops off the
        # network ends its replica whole (mpirun and every orted) instead of holding mpirun until
        # TCP gives up (deploy/common/glm4v-mca.sh says why).
        # shellcheck source=deploy/common/glm4v-mca.sh
        source "$GLM4V_HOME/deploy/common/glm4v-mca.sh"
        glm4v_mca_keepalive "$(glm4v_step_timeout_of ${extra[@]+"${extra[@]}"})" ||
            glm4v_die "replica $i: set --step-timeout-ms to 6000 or more in GLM4V_SERVE_ARGS"
        mpirun -np "$GLM4V_TP" --hostfile "$hostfile" --map-by "ppr:$g:node" --bind-to none \
            "${env_args[@]}" "${serve[@]}" ${extra[@]+"${extra[@]}"} >"$log" 2>&1 &
    fi
    GLM4V_REPLICA_PIDS+=("$!")
    echo "glm4v-slurm: replica $i on ${group[*]} (launcher pid $!, log $log)"
}

glm4v_start_all() {
    local i
    for ((i = 0; i < GLM4V_REPLICAS; i++)); do glm4v_start_replica "$i"; done
}

# Waits until every replica has its liveness key (glm4v-submit --status), at most $1 seconds.
glm4v_wait_live() {
    local wait_s=${1:-1800} live
    local deadline=$((SECONDS + wait_s))
    local -a auth=()
    if [ -n "${GLM4V_REDIS_PASSWORD_FILE:-}" ]; then auth=(--password-file "$GLM4V_REDIS_PASSWORD_FILE"); fi
    while :; do
        local pid
        for pid in "${GLM4V_REPLICA_PIDS[@]}"; do
            kill -0 "$pid" 2>/dev/null || glm4v_die "a replica exited during start; see $GLM4V_RUN_DIR"
        done
        live=$("$GLM4V_BIN/glm4v-submit" --redis "$GLM4V_REDIS" --prefix "$GLM4V_PREFIX" \
            ${auth[@]+"${auth[@]}"} --status 2>/dev/null | grep -c "^server slurm-${SLURM_JOB_ID:-0}-r" || true)
        if [ "$live" -ge "$GLM4V_REPLICAS" ]; then
            echo "glm4v-slurm: $live replica(s) live"
            return 0
        fi
        [ "$SECONDS" -lt "$deadline" ] || glm4v_die "only $live of $GLM4V_REPLICAS replicas live after ${wait_s}s"
        sleep 5
    done
}

# Drains every replica: SIGTERM reaches rank 0 on each group's first node, then this waits for
# every launcher to exit. Replica 0's rank 0 runs on this node (the batch script runs on the
# allocation's first node), under the mpirun started here: glm4v-drain.sh finds it among that
# mpirun's descendants. Every other replica's rank 0 is on another node: a one-task srun step runs
# glm4v-drain.sh there, which looks for rank 0 among that node's glm4v-serve processes.
glm4v_drain_all() {
    local i k=$GLM4V_NODES_PER_REPLICA
    local drain=$GLM4V_HOME/deploy/common/glm4v-drain.sh
    local -a drains=()
    echo "glm4v-slurm: draining $GLM4V_REPLICAS replica(s)"
    for ((i = 0; i < GLM4V_REPLICAS; i++)); do
        if [ "$GLM4V_LAUNCHER" = srun ]; then
            kill -TERM "${GLM4V_REPLICA_PIDS[i]}" 2>/dev/null || true
        elif [ "$i" -eq 0 ]; then
            bash "$drain" --mpirun-pid "${GLM4V_REPLICA_PIDS[0]}" --timeout "$GLM4V_DRAIN_TIMEOUT" &
            drains+=("$!")
        else
            srun --overlap --nodes=1 --ntasks=1 --nodelist="${GLM4V_NODES[i * k]}" \
                bash "$drain" --timeout "$GLM4V_DRAIN_TIMEOUT" &
            drains+=("$!")
        fi
    done
    local deadline=$((SECONDS + GLM4V_DRAIN_TIMEOUT + 30)) pid status=0
    for pid in "${GLM4V_REPLICA_PIDS[@]}"; do
        while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 1; done
        if kill -0 "$pid" 2>/dev/null; then
            echo "glm4v-slurm: launcher $pid still running after the drain timeout; killing it" >&2
            kill -TERM "$pid" 2>/dev/null || true
            status=1
        fi
        wait "$pid" || status=1
    done
    # The drain steps only: a bare `wait` would also wait for the sweep script's private Redis.
    for pid in ${drains[@]+"${drains[@]}"}; do wait "$pid" || true; done
    return "$status"
}
