#!/usr/bin/env bash
# Stops a gateway started by gateway-up.sh: SIGTERM makes it refuse new connections and let the
# requests in flight finish (up to its --drain-timeout, 30 s by default; the rest are cancelled),
# then it exits. Killed after --timeout seconds if it is still there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=deploy/local/lib.sh
. "$here/lib.sh"

usage() {
    cat <<'EOF_USAGE'
usage: deploy/local/gateway-down.sh [--run-dir DIR] [--name NAME] [--timeout SEC]

  --run-dir DIR   the run directory given to up.sh (default ./run/local)
  --name NAME     the gateway's name given to gateway-up.sh (default main)
  --timeout SEC   how long the drain may take before the gateway is killed (default 60)
EOF_USAGE
}

run_dir=$PWD/run/local
name=main
timeout_s=60
while [ $# -gt 0 ]; do
    case $1 in
    --run-dir) run_dir=${2:?}; shift 2 ;;
    --name) name=${2:?}; shift 2 ;;
    --timeout) timeout_s=${2:?}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument $1" ;;
    esac
done
[[ $timeout_s =~ ^[0-9]+$ ]] || die "--timeout must be a number of seconds"
[[ $name =~ ^[A-Za-z0-9_-]+$ ]] || die "--name may hold only letters, digits, _ and -"
pid_file=$run_dir/gateway-$name.pid
pid=$(read_pid_file "$pid_file")
if ! pid_alive "$pid"; then
    echo "gateway $name: not running"
    rm -f "$pid_file"
    exit 0
fi
# The pid file could be stale and name another program: stop only a glm4v-gateway.
case $(cat "/proc/$pid/comm" 2>/dev/null) in
glm4v-gateway) ;;
*) die "pid $pid in $pid_file is not a glm4v-gateway; not touching it" ;;
esac
echo "gateway $name: draining (pid $pid)"
kill -TERM "$pid"
deadline=$((SECONDS + timeout_s))
while pid_alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
if pid_alive "$pid"; then
    echo "gateway $name: still running after $timeout_s s; killing it" >&2
    kill -KILL "$pid"
fi
rm -f "$pid_file"
echo "gateway $name: stopped"
