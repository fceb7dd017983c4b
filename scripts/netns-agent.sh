#!/usr/bin/env bash
# The "ssh" of scripts/netns-hosts.sh: Open MPI's rsh launcher runs `AGENT HOST COMMAND...` to start
# its daemon on HOST (mpirun --mca plm_rsh_agent scripts/netns-agent.sh, or the environment that
# `netns-hosts.sh env` prints). This runs COMMAND inside the network namespace HOST, in a UTS
# namespace of its own whose hostname is HOST, so that Open MPI sees one node per fake host (and
# never uses shared memory between them). Like ssh, the words of COMMAND are joined and read by
# a shell: Open MPI quotes the daemon's arguments for one.
set -euo pipefail
die() {
    echo "netns-agent: $*" >&2
    exit 255 # what ssh returns when it cannot connect
}
[ $# -ge 2 ] || die "usage: netns-agent.sh HOST COMMAND..."
host=$1
shift
[[ $host =~ ^[a-z][a-z0-9]{0,7}-h[1-9][0-9]{0,2}$ ]] || die "'$host' is not a host of scripts/netns-hosts.sh"
ip netns list | awk '{print $1}' | grep -qx "$host" || die "no namespace $host (scripts/netns-hosts.sh up N)"
[ -e "/run/glm4v-netns/${host%-h*}/$host" ] || die "namespace $host was not made by scripts/netns-hosts.sh"
# shellcheck disable=SC2016 # the inner shell expands $1 and $*
exec ip netns exec "$host" unshare --uts -- /bin/sh -c 'hostname "$1" || exit 255; shift; eval "exec $*"' sh "$host" "$@"
