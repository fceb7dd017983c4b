#!/usr/bin/env bash
# Stops a local cluster started by up.sh: drains every replica (SIGTERM to its rank 0, which stops
# taking jobs, finishes the running ones and exits), waits for the drains with a timeout, then
# shuts the local redis-server down (its AOF is fsynced on SHUTDOWN).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=deploy/local/lib.sh
. "$here/lib.sh"

usage() {
    cat <<'EOF_USAGE'
usage: deploy/local/down.sh [--run-dir DIR] [--timeout SEC] [--keep-redis]

  --run-dir DIR   the run directory given to up.sh (default ./run/local)
  --timeout SEC   how long each replica may take to drain before it is killed (default 300)
  --keep-redis    leave redis-server running (queued jobs stay for the next up.sh)
EOF_USAGE
}

run_dir=$PWD/run/local
timeout_s=300
keep_redis=0
while [ $# -gt 0 ]; do
    case $1 in
    --run-dir) run_dir=${2:?}; shift 2 ;;
    --timeout) timeout_s=${2:?}; shift 2 ;;
    --keep-redis) keep_redis=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument $1" ;;
    esac
done
[[ $timeout_s =~ ^[0-9]+$ ]] || die "--timeout must be a number of seconds"
load_cluster_env "$run_dir"

# Drain all replicas at once; each drain waits for its own mpirun.
status=0
drains=()
for ((i = 0; i < replicas; i++)); do
    pid=$(read_pid_file "$run_dir/replica-$i.pid")
    if ! pid_alive "$pid"; then
        echo "replica $i: not running"
        rm -f "$run_dir/replica-$i.pid"
        continue
    fi
    echo "replica $i: draining (mpirun pid $pid)"
    bash "$here/../common/glm4v-drain.sh" --mpirun-pid "$pid" --timeout "$timeout_s" \
        >>"$run_dir/replica-$i.log" 2>&1 &
    drains+=("$i:$!")
done
for entry in ${drains[@]+"${drains[@]}"}; do
    i=${entry%%:*}
    if wait "${entry#*:}"; then
        echo "replica $i: stopped"
    else
        echo "replica $i: did not drain in ${timeout_s}s and was killed (see $run_dir/replica-$i.log)" >&2
        status=1
    fi
    rm -f "$run_dir/replica-$i.pid"
done

if [ "$started_redis" = 1 ] && [ "$keep_redis" = 0 ]; then
    redis_pid=$(read_pid_file "$run_dir/redis/redis.pid")
    if pid_alive "$redis_pid"; then
        password=""
        if [ -n "${password_file:-}" ]; then
            GLM4V_REDIS_PASSWORD_FILE=$password_file password=$(redis_password_env)
        else
            password=$(redis_password_env)
        fi
        if [ -n "$password" ]; then export REDISCLI_AUTH=$password; fi
        redis-cli -h 127.0.0.1 -p "$redis_port" shutdown >/dev/null 2>&1 || kill -TERM "$redis_pid"
        deadline=$((SECONDS + 30))
        while pid_alive "$redis_pid"; do
            [ "$SECONDS" -lt "$deadline" ] || die "redis (pid $redis_pid) did not stop"
            sleep 0.2
        done
        echo "redis: stopped"
    else
        echo "redis: not running"
    fi
fi
exit "$status"
