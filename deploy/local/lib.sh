# shellcheck shell=bash
# Shared by deploy/local/{up,down,status}.sh (sourced, not run).
# The run directory holds everything a running local cluster needs to be found again:
#   cluster.env          redis url/port, prefix, replica count, paths (written by up.sh)
#   redis/               redis.conf (generated, mode 600), appendonly dir, redis.pid, redis.log
#   replica-N.pid        the pid of replica N's mpirun
#   replica-N.log        its stdout + stderr (every rank)
#   replica-N.env        its GPUs and metrics port

die() {
    echo "$(basename "$0"): $*" >&2
    exit 1
}

# Prints the value of key in a key=value file ("" when absent). The files are parsed, not
# sourced, so nothing in them is ever run.
env_value() {
    local file=$1 key=$2
    if [ -r "$file" ]; then sed -n "s/^$key=//p" "$file" | tail -n 1; fi
}

# Reads run_dir/cluster.env (written by up.sh); fails when no cluster was started there.
load_cluster_env() {
    local file=$1/cluster.env
    [ -r "$file" ] || die "no cluster.env in $1 (was up.sh run with this --run-dir?)"
    redis_url=$(env_value "$file" redis_url)
    redis_port=$(env_value "$file" redis_port)
    started_redis=$(env_value "$file" started_redis)
    prefix=$(env_value "$file" prefix)
    replicas=$(env_value "$file" replicas)
    bin_dir=$(env_value "$file" bin_dir)
    password_file=$(env_value "$file" password_file)
    [[ $replicas =~ ^[0-9]+$ ]] || die "$file: bad replicas count"
    export redis_url redis_port started_redis prefix replicas bin_dir password_file
}

pid_alive() {
    [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null
}

read_pid_file() {
    if [ -r "$1" ]; then cat "$1"; fi
}

# redis-cli takes the password from REDISCLI_AUTH, so it never shows in ps; the caller exports it.
redis_password_env() {
    local file=${GLM4V_REDIS_PASSWORD_FILE:-}
    if [ -n "$file" ]; then
        [ -r "$file" ] || die "cannot read password file $file"
        head -n 1 "$file"
    else
        printf '%s' "${GLM4V_REDIS_PASSWORD:-}"
    fi
}
