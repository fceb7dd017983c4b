#!/usr/bin/env bash
# Starts a local glm4v cluster on one machine: a redis-server on 127.0.0.1 (AOF on, the project's
# deploy/redis/redis.conf) and N replicas, each one `mpirun -np TP glm4v-serve` on its own GPUs.
# Stop it with down.sh and look at it with status.sh (same --run-dir).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=deploy/local/lib.sh
. "$here/lib.sh"

usage() {
    cat <<'EOF'
usage: deploy/local/up.sh --model DIR [options] [-- extra glm4v-serve arguments]

  --model DIR              model folder (config.json + safetensors), required
  --device cpu|cuda        backend (default cuda)
  --replicas N             number of replicas (default 1)
  --tp N                   ranks (GPUs) per replica (default 1)
  --gpus LIST              comma-separated GPU ids handed out TP at a time in order: with
                           --replicas 2 --tp 2 --gpus 0,1,2,3 replica 0 gets 0,1 and replica 1
                           gets 2,3 (default: 0..replicas*tp-1). Ignored with --device cpu.
  --redis-port PORT        port of the local redis-server (default 6379)
  --redis-url URL          use this Redis instead of starting one (redis://host:port)
  --prefix P               Redis key prefix (default glm4v)
  --metrics-port PORT      replica i serves /metrics on PORT+i (default 9400)
  --metrics-bind ADDR      address of the metrics endpoint (default 127.0.0.1)
  --max-batch N, --max-tokens-per-step N, --gpu-memory GIB
                           passed to glm4v-serve
  --run-dir DIR            pid files, logs, Redis data (default ./run/local)
  --bin DIR                where glm4v-serve and glm4v-submit are (default build/bin)
  --mpirun-args "ARGS"     extra mpirun arguments (word-split), e.g. "--oversubscribe"
  --wait SEC               wait until every replica shows in `glm4v-submit --status`
                           (default 600; 0 = do not wait)

Password: set GLM4V_REDIS_PASSWORD or GLM4V_REDIS_PASSWORD_FILE (a file whose first line is the
password). The local Redis then requires it, and the replicas read it from the environment or
the file, never from their command line.
EOF
}

model=""
device=cuda
replicas=1
tp=1
gpus=""
redis_port=6379
redis_url=""
prefix=glm4v
metrics_port=9400
metrics_bind=127.0.0.1
run_dir=$PWD/run/local
bin_dir=$repo/build/bin
mpirun_extra=""
wait_s=600
serve_extra=()
while [ $# -gt 0 ]; do
    case $1 in
    --model) model=${2:?}; shift 2 ;;
    --device) device=${2:?}; shift 2 ;;
    --replicas) replicas=${2:?}; shift 2 ;;
    --tp) tp=${2:?}; shift 2 ;;
    --gpus) gpus=${2:?}; shift 2 ;;
    --redis-port) redis_port=${2:?}; shift 2 ;;
    --redis-url) redis_url=${2:?}; shift 2 ;;
    --prefix) prefix=${2:?}; shift 2 ;;
    --metrics-port) metrics_port=${2:?}; shift 2 ;;
    --metrics-bind) metrics_bind=${2:?}; shift 2 ;;
    --max-batch | --max-tokens-per-step | --gpu-memory) serve_extra+=("$1" "${2:?}"); shift 2 ;;
    --run-dir) run_dir=${2:?}; shift 2 ;;
    --bin) bin_dir=${2:?}; shift 2 ;;
    --mpirun-args) mpirun_extra=${2:?}; shift 2 ;;
    --wait) wait_s=${2:?}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    --) shift; serve_extra+=("$@"); break ;;
    *) usage >&2; die "unknown argument $1" ;;
    esac
done

# ---- check the arguments before starting anything --------------------------------------------
[ -n "$model" ] || { usage >&2; die "--model is required"; }
[ -d "$model" ] || die "model folder $model does not exist"
model=$(cd "$model" && pwd)
case $device in cpu | cuda) ;; *) die "--device must be cpu or cuda" ;; esac
for n in "$replicas" "$tp" "$redis_port" "$metrics_port" "$wait_s"; do
    [[ $n =~ ^[0-9]+$ ]] || die "'$n' is not a number"
done
if [ "$replicas" -lt 1 ] || [ "$tp" -lt 1 ]; then die "--replicas and --tp must be at least 1"; fi
[ "$metrics_port" -ge 1 ] || die "--metrics-port must be a port number (not 0)"
[ -x "$bin_dir/glm4v-serve" ] || die "$bin_dir/glm4v-serve not found (build first: scripts/build.sh)"
command -v mpirun >/dev/null || die "mpirun not found (apt-get install openmpi-bin)"
mkdir -p "$run_dir"
run_dir=$(cd "$run_dir" && pwd)
for ((i = 0; i < replicas; i++)); do
    if pid_alive "$(read_pid_file "$run_dir/replica-$i.pid")"; then
        die "replica $i of a cluster in $run_dir is still running (down.sh --run-dir $run_dir)"
    fi
done

# GPU list per replica: slice i of the list is i*tp .. i*tp+tp-1.
gpu_groups=()
if [ "$device" = cuda ]; then
    if [ -z "$gpus" ]; then
        gpus=$(seq -s, 0 $((replicas * tp - 1)))
    fi
    IFS=, read -r -a gpu_list <<<"$gpus"
    [ "${#gpu_list[@]}" -ge $((replicas * tp)) ] ||
        die "--replicas $replicas --tp $tp needs $((replicas * tp)) GPUs, --gpus has ${#gpu_list[@]}"
    for ((i = 0; i < replicas; i++)); do
        group=$(IFS=,; echo "${gpu_list[*]:i*tp:tp}")
        gpu_groups+=("$group")
    done
fi

password=$(redis_password_env)
submit_auth=()
if [ -n "$password" ]; then
    # It goes into a generated redis.conf between quotes; keep it to what `openssl rand -base64`
    # or `-hex` produce.
    [[ $password =~ ^[A-Za-z0-9._~+/=-]+$ ]] ||
        die "the Redis password may hold only letters, digits and . _ ~ + / = -"
    export REDISCLI_AUTH=$password
    if [ -n "${GLM4V_REDIS_PASSWORD_FILE:-}" ]; then
        submit_auth=(--password-file "$GLM4V_REDIS_PASSWORD_FILE")
    fi
fi

# Open MPI refuses to run as root unless told; containers often run as root.
if [ "$(id -u)" -eq 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi

# ---- Redis --------------------------------------------------------------------------------------
start_redis() {
    command -v redis-server >/dev/null || die "redis-server not found (apt-get install redis-server)"
    local dir=$run_dir/redis
    mkdir -p "$dir"
    local pid
    pid=$(read_pid_file "$dir/redis.pid")
    if pid_alive "$pid"; then
        echo "redis: already running (pid $pid) on port $redis_port"
        return
    fi
    # The generated config includes the project's and adds what is local to this run. It may hold
    # the password, so only this user can read it.
    (
        umask 077
        {
            echo "include $repo/deploy/redis/redis.conf"
            echo "port $redis_port"
            echo "dir $dir"
            echo "daemonize yes"
            echo "pidfile $dir/redis.pid"
            echo "logfile $dir/redis.log"
            if [ -n "$password" ]; then echo "requirepass \"$password\""; fi
        } >"$dir/redis.conf"
    )
    redis-server "$dir/redis.conf"
    local deadline=$((SECONDS + 20))
    until [ "$(redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null)" = PONG ]; do
        [ "$SECONDS" -lt "$deadline" ] || die "redis did not answer on port $redis_port; see $dir/redis.log"
        sleep 0.2
    done
    echo "redis: started on 127.0.0.1:$redis_port (data and log in $dir)"
}

started_redis=0
if [ -z "$redis_url" ]; then
    start_redis
    started_redis=1
    redis_url=redis://127.0.0.1:$redis_port
fi

{
    echo "redis_url=$redis_url"
    echo "redis_port=$redis_port"
    echo "started_redis=$started_redis"
    echo "prefix=$prefix"
    echo "replicas=$replicas"
    echo "bin_dir=$bin_dir"
    echo "repo=$repo"
    echo "password_file=${GLM4V_REDIS_PASSWORD_FILE:-}"
} >"$run_dir/cluster.env"

# ---- replicas -----------------------------------------------------------------------------------
# Each replica is one mpirun job in a session of its own (setsid), so a Ctrl-C in this terminal
# does not reach it. --bind-to none: mpirun would otherwise pin rank 0 of every replica to the
# same core. The password travels as an environment variable (-x NAME copies it from here), the
# GPU list as CUDA_VISIBLE_DEVICES.
# Open MPI transports pinned to this machine: ranks talk through shared memory (pml ob1 with the
# self and vader BTLs; no UCX or TCP transport that would open sockets on every interface), and
# mpirun's out-of-band channel listens on loopback only. A multi-node replica needs the TCP BTL on
# its cluster network instead (docs/DEPLOY.md, "Open MPI transports").
MPI_PINS=(--mca pml ob1 --mca btl "self,vader" --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo)
start_replica() {
    local i=$1 gpu_group=$2
    local port=$((metrics_port + i))
    local -a mpi_env=()
    local -a serve_args=(--device "$device" --tp "$tp" --model "$model" --redis "$redis_url"
        --prefix "$prefix" --metrics-port "$port" --metrics-bind "$metrics_bind")
    if [ -n "${GLM4V_REDIS_PASSWORD_FILE:-}" ]; then
        serve_args+=(--redis-password-file "$GLM4V_REDIS_PASSWORD_FILE")
    elif [ -n "${GLM4V_REDIS_PASSWORD:-}" ]; then
        mpi_env+=(-x GLM4V_REDIS_PASSWORD)
    fi
    if [ "$device" = cuda ]; then
        export CUDA_VISIBLE_DEVICES=$gpu_group
        mpi_env+=(-x CUDA_VISIBLE_DEVICES)
    fi
    local -a extra_mpi=()
    if [ -n "$mpirun_extra" ]; then read -r -a extra_mpi <<<"$mpirun_extra"; fi
    {
        echo "gpus=$gpu_group"
        echo "metrics_port=$port"
        echo "metrics_bind=$metrics_bind"
    } >"$run_dir/replica-$i.env"
    setsid mpirun -np "$tp" --bind-to none "${MPI_PINS[@]}" ${mpi_env[@]+"${mpi_env[@]}"} \
        ${extra_mpi[@]+"${extra_mpi[@]}"} \
        "$bin_dir/glm4v-serve" "${serve_args[@]}" ${serve_extra[@]+"${serve_extra[@]}"} \
        >"$run_dir/replica-$i.log" 2>&1 </dev/null &
    echo $! >"$run_dir/replica-$i.pid"
    echo "replica $i: mpirun pid $! tp $tp ${gpu_group:+gpus $gpu_group }metrics $metrics_bind:$port log $run_dir/replica-$i.log"
}

for ((i = 0; i < replicas; i++)); do
    start_replica "$i" "${gpu_groups[i]:-}"
done

# ---- wait until every replica has published its liveness key ------------------------------------
[ "$wait_s" -gt 0 ] || exit 0
submit=$bin_dir/glm4v-submit
[ -x "$submit" ] || { echo "up.sh: $submit not built; not waiting for readiness"; exit 0; }
deadline=$((SECONDS + wait_s))
while :; do
    for ((i = 0; i < replicas; i++)); do
        if ! pid_alive "$(read_pid_file "$run_dir/replica-$i.pid")"; then
            tail -n 20 "$run_dir/replica-$i.log" >&2 || true
            die "replica $i exited during start; log: $run_dir/replica-$i.log"
        fi
    done
    live=$("$submit" --redis "$redis_url" --prefix "$prefix" ${submit_auth[@]+"${submit_auth[@]}"} \
        --status 2>/dev/null |
        sed -n 's/^servers: \([0-9]*\) live$/\1/p' || true)
    if [ "${live:-0}" -ge "$replicas" ]; then
        echo "up: $live server(s) live on $redis_url prefix $prefix"
        exit 0
    fi
    [ "$SECONDS" -lt "$deadline" ] || die "only ${live:-0} of $replicas replicas live after ${wait_s}s"
    sleep 1
done
