#!/usr/bin/env bash
# Readiness check for a container that runs glm4v-serve ranks (the Kubernetes exec probe): ready
# when the liveness key <prefix>:server:* of a server on this host exists in Redis and says it is
# reading jobs, or when this host runs ranks other than rank 0 of a replica (a second node of a
# multi-node replica has no key of its own).
#
# With GLM4V_SERVER_ID set (the --server-id given to glm4v-serve), the check is instead: the key
# <prefix>:server:<id> exists and says it is reading; this works from any pod (the MPI Operator's
# launcher, which runs mpirun but no rank).
#
# Environment: GLM4V_REDIS (redis://host:port), GLM4V_PREFIX (default glm4v), REDISCLI_AUTH (the
# password; redis-cli reads it from there, so it is not on a command line).
set -euo pipefail
url=${GLM4V_REDIS:?set GLM4V_REDIS}
prefix=${GLM4V_PREFIX:-glm4v}
hostport=${url#redis://}
hostport=${hostport#*@}
hostport=${hostport%%/*}
host=${hostport%%:*}
port=6379
if [ "$hostport" != "$host" ]; then port=${hostport##*:}; fi
me=$(hostname)

# The key's value is JSON written by glm4v-serve: {"id":..,"host":"<hostname>",..,"reading":true}
if [ -n "${GLM4V_SERVER_ID:-}" ]; then
    value=$(redis-cli -h "$host" -p "$port" --no-auth-warning get "$prefix:server:$GLM4V_SERVER_ID")
    if [[ $value == *'"reading":true'* ]]; then exit 0; fi
    echo "not ready: $prefix:server:$GLM4V_SERVER_ID is missing or not reading" >&2
    exit 1
fi
keys=$(redis-cli -h "$host" -p "$port" --no-auth-warning --scan --pattern "$prefix:server:*")
for key in $keys; do
    value=$(redis-cli -h "$host" -p "$port" --no-auth-warning get "$key")
    if [[ $value == *"\"host\":\"$me\""* && $value == *'"reading":true'* ]]; then
        exit 0
    fi
done

# No key for this host: ready only if ranks run here and none of them is a rank 0 (whose key is
# what readiness waits for).
n_ranks=0
for pid in $(pgrep -u "$(id -u)" -x glm4v-serve || true); do
    n_ranks=$((n_ranks + 1))
    if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qxE 'OMPI_COMM_WORLD_RANK=0|PMIX_RANK=0'; then
        echo "not ready: rank 0 runs here but has no live key in $prefix:server:*" >&2
        exit 1
    fi
done
if [ "$n_ranks" -gt 0 ]; then exit 0; fi
echo "not ready: no live glm4v-serve on $me in $prefix:server:*" >&2
exit 1
