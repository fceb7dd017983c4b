#!/usr/bin/env bash
# Starts glm4v-gateway (the OpenAI-compatible HTTP API) in front of a local cluster started by
# up.sh: same Redis, prefix and password, its pid and log in the run directory. Stop it with
# gateway-down.sh before or after down.sh; any number of gateways may run (different --name).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=deploy/local/lib.sh
. "$here/lib.sh"

usage() {
    cat <<'EOF_USAGE'
usage: deploy/local/gateway-up.sh [options] [-- extra glm4v-gateway arguments]

  --run-dir DIR        the run directory given to up.sh (default ./run/local)
  --name NAME          names the pid and log files gateway-NAME.* (default main)
  --host ADDR          address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)
  --port PORT          port (default 8000)
  --api-key-file FILE  API keys, one per line; without it the API asks for no key
  --wait SEC           wait until /health answers (default 30; 0 = do not wait)
EOF_USAGE
}

run_dir=$PWD/run/local
name=main
host=127.0.0.1
port=8000
key_file=""
wait_s=30
extra=()
while [ $# -gt 0 ]; do
    case $1 in
    --run-dir) run_dir=${2:?}; shift 2 ;;
    --name) name=${2:?}; shift 2 ;;
    --host) host=${2:?}; shift 2 ;;
    --port) port=${2:?}; shift 2 ;;
    --api-key-file) key_file=${2:?}; shift 2 ;;
    --wait) wait_s=${2:?}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    --) shift; extra+=("$@"); break ;;
    *) usage >&2; die "unknown argument $1" ;;
    esac
done
[[ $name =~ ^[A-Za-z0-9_-]+$ ]] || die "--name may hold only letters, digits, _ and -"
for n in "$port" "$wait_s"; do [[ $n =~ ^[0-9]+$ ]] || die "'$n' is not a number"; done
load_cluster_env "$run_dir"
run_dir=$(cd "$run_dir" && pwd)
[ -x "$bin_dir/glm4v-gateway" ] || die "$bin_dir/glm4v-gateway not found (build first: scripts/build.sh)"
pid_file=$run_dir/gateway-$name.pid
log=$run_dir/gateway-$name.log
if pid_alive "$(read_pid_file "$pid_file")"; then
    die "gateway $name is already running (gateway-down.sh --name $name --run-dir $run_dir)"
fi

args=(--redis "$redis_url" --prefix "$prefix" --host "$host" --port "$port")
if [ -n "$key_file" ]; then
    [ -r "$key_file" ] || die "cannot read $key_file"
    args+=(--api-key-file "$(cd "$(dirname "$key_file")" && pwd)/$(basename "$key_file")")
fi
# The password comes from the file up.sh was given, or GLM4V_REDIS_PASSWORD in this environment.
if [ -n "$password_file" ]; then args+=(--password-file "$password_file"); fi

setsid "$bin_dir/glm4v-gateway" "${args[@]}" ${extra[@]+"${extra[@]}"} >>"$log" 2>&1 </dev/null &
echo $! >"$pid_file"
echo "gateway $name: started (pid $!), log $log"
[ "$wait_s" -gt 0 ] || exit 0
url_host=$host
case $host in 0.0.0.0) url_host=127.0.0.1 ;; *:*) url_host="[$host]" ;; esac
deadline=$((SECONDS + wait_s))
until curl -sf "http://$url_host:$port/health" >/dev/null 2>&1; do
    pid_alive "$(read_pid_file "$pid_file")" || { tail -n 20 "$log" >&2; die "gateway $name exited"; }
    [ "$SECONDS" -lt "$deadline" ] || die "gateway $name did not answer /health within $wait_s s"
    sleep 0.2
done
echo "gateway $name: http://$url_host:$port/v1 (OpenAI API), /health, /metrics"
