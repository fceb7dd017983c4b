#!/usr/bin/env bash
# Shows a local cluster started by up.sh: each replica's mpirun and ranks, its metrics endpoint,
# the local Redis, then `glm4v-submit --status` (live servers, queue depth, pending, dead letters).
# Exit 0 when everything that up.sh started is running, 1 otherwise.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=deploy/local/lib.sh
. "$here/lib.sh"

usage() {
    echo "usage: deploy/local/status.sh [--run-dir DIR]   (default ./run/local)"
}

run_dir=$PWD/run/local
while [ $# -gt 0 ]; do
    case $1 in
    --run-dir) run_dir=${2:?}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument $1" ;;
    esac
done
load_cluster_env "$run_dir"

# GET /healthz over bash's /dev/tcp, so no curl is needed; prints the status code.
http_status() {
    local host=$1 port=$2 line
    exec 3<>"/dev/tcp/$host/$port" || return 1
    printf 'GET /healthz HTTP/1.0\r\nHost: %s\r\n\r\n' "$host" >&3
    read -r -t 5 line <&3 || true
    exec 3<&-
    echo "$line" | awk '{print $2}'
}

ok=1
for ((i = 0; i < replicas; i++)); do
    pid=$(read_pid_file "$run_dir/replica-$i.pid")
    gpus=$(env_value "$run_dir/replica-$i.env" gpus)
    metrics_port=$(env_value "$run_dir/replica-$i.env" metrics_port)
    metrics_bind=$(env_value "$run_dir/replica-$i.env" metrics_bind)
    if pid_alive "$pid"; then
        ranks=$(pgrep -P "$pid" -x glm4v-serve | wc -l || true)
        health=$(http_status "$metrics_bind" "$metrics_port" 2>/dev/null || echo down)
        echo "replica $i: running (mpirun pid $pid, $ranks local ranks${gpus:+, gpus $gpus}, /healthz on $metrics_bind:$metrics_port: ${health:-no answer})"
    else
        echo "replica $i: NOT running (log: $run_dir/replica-$i.log)"
        ok=0
    fi
done

password=""
if [ -n "${password_file:-}" ]; then
    GLM4V_REDIS_PASSWORD_FILE=$password_file password=$(redis_password_env)
else
    password=$(redis_password_env)
fi
if [ "$started_redis" = 1 ]; then
    redis_pid=$(read_pid_file "$run_dir/redis/redis.pid")
    if pid_alive "$redis_pid"; then
        echo "redis: running (pid $redis_pid, 127.0.0.1:$redis_port)"
    else
        echo "redis: NOT running"
        ok=0
    fi
fi

auth=()
if [ -n "${password_file:-}" ]; then auth=(--password-file "$password_file"); fi
if [ -n "$password" ] && [ -z "${password_file:-}" ]; then export GLM4V_REDIS_PASSWORD=$password; fi
if [ -x "$bin_dir/glm4v-submit" ]; then
    echo "--- glm4v-submit --status ($redis_url prefix $prefix)"
    "$bin_dir/glm4v-submit" --redis "$redis_url" --prefix "$prefix" ${auth[@]+"${auth[@]}"} --status || ok=0
fi
[ "$ok" = 1 ]
