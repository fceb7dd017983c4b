#!/usr/bin/env bash
# Fake hosts on one machine, to try a multi-node layout (ranks of one replica on several "hosts",
# Redis on another) without a cluster: N Linux network namespaces <prefix>-h1..hN, each with one
# veth into a bridge <prefix>-br in the root namespace, addresses 198.18.<net>.K/24 (198.18.0.0/15
# is reserved for network benchmarking; the bridge has no physical port and the namespaces have no
# default route, so no packet leaves the machine). The root namespace is 198.18.<net>.254 on the
# bridge, so mpirun and clients can run from an ordinary shell.
#
#   scripts/netns-hosts.sh up 4                  # glm4v-h1..h4 at 198.18.0.1..4
#   scripts/netns-hosts.sh hostfile h1:1 h2:1    # an Open MPI hostfile on stdout
#   eval "$(scripts/netns-hosts.sh env)"         # OMPI_MCA_* for mpirun: rsh agent, TCP subnet, keepalive
#   mpirun -np 2 --hostfile hf --map-by node glm4v-run --tp 2 ...
#   scripts/netns-hosts.sh exec h3 redis-server --bind 198.18.0.3 --protected-mode no  # on h3
#   scripts/netns-hosts.sh down                  # kills what runs in them, removes everything
#
# Options before the command: --prefix P (letters and digits, up to 8; default glm4v) and
# --net X (third octet, 0..255; default 0), so that two sets can coexist. Root only.
# Everything the kit made is listed in /run/glm4v-netns/<prefix>; only what is listed there is
# ever changed or removed, and a namespace or bridge of the same name made by anyone else is an
# error. `up` is idempotent: hosts already up are kept, missing ones added; a failed `up` removes
# what it made. The agent that Open MPI calls instead of ssh is scripts/netns-agent.sh.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
prefix=glm4v
net=0
state_root=/run/glm4v-netns

die() {
    echo "netns-hosts: $*" >&2
    exit 1
}

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
    echo "usage: netns-hosts.sh [--prefix P] [--net X] up N | down | status | env |"
    echo "       hostfile HOST[:SLOTS]... | addr HOST | exec HOST CMD..."
}

while [ $# -gt 0 ]; do
    case $1 in
    --prefix)
        [ $# -ge 2 ] || die "--prefix needs a value"
        prefix=$2
        shift 2
        ;;
    --net)
        [ $# -ge 2 ] || die "--net needs a value"
        net=$2
        shift 2
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) break ;;
    esac
done
[[ $prefix =~ ^[a-z][a-z0-9]{0,7}$ ]] || die "--prefix: 1 to 8 lower-case letters or digits, starting with a letter"
if ! [[ $net =~ ^[0-9]{1,3}$ ]] || [ "$net" -gt 255 ]; then die "--net: a number from 0 to 255"; fi
[ $# -ge 1 ] || {
    usage >&2
    exit 2
}

state=$state_root/$prefix
bridge=$prefix-br
subnet=198.18.$net.0/24
root_addr=198.18.$net.254

host_name() { echo "$prefix-h$1"; }     # namespace = host name
host_addr() { echo "198.18.$net.$1"; }  # its address
host_veth() { echo "$prefix-v$1"; }     # root-side end of its veth

need_root() {
    [ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, veth and bridge); run it with sudo"
    command -v ip >/dev/null || die "'ip' not found (Debian package iproute2)"
}

# Accepts h3, glm4v-h3 or 3; prints the index.
host_index() {
    local h=$1
    h=${h#"$prefix"-}
    h=${h#h}
    if ! [[ $h =~ ^[1-9][0-9]{0,2}$ ]] || [ "$h" -gt 250 ]; then
        die "not a host of this kit: $1 (expected h1.. or $prefix-h1..)"
    fi
    echo "$h"
}

ns_exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }
link_exists() { ip link show "$1" >/dev/null 2>&1; }
owned() { [ -e "$state/$1" ]; }

# Hosts this kit made, by index, ascending.
owned_hosts() {
    [ -d "$state" ] || return 0
    local f
    for f in "$state"/"$prefix"-h*; do
        [ -e "$f" ] || continue
        echo "${f##*-h}"
    done | sort -n
}

# Kills every process in a namespace of ours (they are the kit's users' processes: ranks, redis),
# then deletes it, its veth and its hosts file.
remove_host() {
    local i=$1 ns pids
    ns=$(host_name "$i")
    if ns_exists "$ns"; then
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        if [ -n "$pids" ]; then
            # shellcheck disable=SC2086
            kill -9 $pids 2>/dev/null || true
            sleep 0.2
        fi
        ip netns del "$ns" 2>/dev/null || true
    fi
    if link_exists "$(host_veth "$i")"; then ip link del "$(host_veth "$i")" 2>/dev/null || true; fi
    rm -rf "/etc/netns/$ns"
    rm -f "$state/$ns"
}

remove_all() {
    local i
    for i in $(owned_hosts); do remove_host "$i"; done
    if owned "$bridge"; then
        if link_exists "$bridge"; then ip link del "$bridge" 2>/dev/null || true; fi
        rm -f "$state/$bridge" "$state/net"
    fi
    rmdir "$state" 2>/dev/null || true
    rmdir "$state_root" 2>/dev/null || true
    rmdir /etc/netns 2>/dev/null || true # only when no other namespace has files there
}

# /etc/netns/<ns>/hosts is what `ip netns exec` shows as /etc/hosts inside <ns>: every host's
# name resolves there (redis://glm4v-h3:6379 works from inside a host).
write_hosts_files() {
    local i j ns
    for i in $(owned_hosts); do
        ns=$(host_name "$i")
        mkdir -p "/etc/netns/$ns"
        {
            echo "127.0.0.1 localhost"
            echo "$root_addr $prefix-root"
            for j in $(owned_hosts); do echo "$(host_addr "$j") $(host_name "$j") h$j"; done
        } >"/etc/netns/$ns/hosts"
    done
}

add_host() {
    local i=$1 ns veth
    ns=$(host_name "$i")
    veth=$(host_veth "$i")
    ip netns add "$ns"
    touch "$state/$ns"
    ip link add "$veth" type veth peer name eth0 netns "$ns"
    ip link set "$veth" master "$bridge" up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$(host_addr "$i")/24" dev eth0
    ip -n "$ns" link set eth0 up
}

cmd_up() {
    [ $# -eq 1 ] || die "usage: up N"
    local n=$1 i ns
    [[ $n =~ ^[0-9]+$ ]] || die "up: N must be a number, got '$n'"
    if [ "$n" -lt 1 ] || [ "$n" -gt 250 ]; then die "up: N must be from 1 to 250, got $n"; fi
    need_root
    # Check everything before making anything, so a refusal leaves nothing behind.
    if [ -e "$state/net" ] && [ "$(cat "$state/net")" != "$net" ]; then
        die "hosts of prefix $prefix are already up on 198.18.$(cat "$state/net").0/24; run down first"
    fi
    if link_exists "$bridge" && ! owned "$bridge"; then
        die "a link named $bridge exists and was not made by this kit; remove it or use --prefix"
    fi
    for i in $(seq 1 "$n"); do
        ns=$(host_name "$i")
        if ns_exists "$ns" && ! owned "$ns"; then
            die "namespace $ns exists and was not made by this kit; remove it (ip netns del $ns) or use --prefix"
        fi
        if link_exists "$(host_veth "$i")" && ! owned "$ns"; then
            die "a link named $(host_veth "$i") exists and was not made by this kit; use --prefix"
        fi
    done
    if ip -4 -o addr show | awk '{print $4}' | grep -q "^198\.18\.$net\." && ! owned "$bridge"; then
        die "198.18.$net.0/24 is already in use on this machine; pick another --net"
    fi

    mkdir -p "$state"
    # Globals, not locals: the EXIT trap runs after the failing function has returned.
    made_bridge=0
    up_ok=0
    made=()
    # On any failure or signal from here on, remove what this run made (not what was up before).
    rollback() {
        [ "$up_ok" = 0 ] || return 0
        local j
        echo "netns-hosts: up failed; removing what it made" >&2
        for j in ${made[@]+"${made[@]}"}; do remove_host "$j"; done
        if [ "$made_bridge" = 1 ]; then
            ip link del "$bridge" 2>/dev/null || true
            rm -f "$state/$bridge" "$state/net"
        fi
        rmdir "$state" 2>/dev/null || true
        rmdir "$state_root" 2>/dev/null || true
    }
    trap rollback EXIT
    trap 'exit 1' INT TERM
    if ! owned "$bridge"; then
        made_bridge=1
        touch "$state/$bridge"
        echo "$net" >"$state/net"
        ip link add "$bridge" type bridge
        ip addr add "$root_addr/24" dev "$bridge"
        ip link set "$bridge" up
    fi
    for i in $(seq 1 "$n"); do
        ns=$(host_name "$i")
        if owned "$ns" && ns_exists "$ns"; then continue; fi
        if owned "$ns"; then remove_host "$i"; fi # listed but gone: make it again
        made+=("$i")
        add_host "$i"
    done
    write_hosts_files
    up_ok=1
    trap - EXIT INT TERM
    echo "netns-hosts: $n host(s) up: $(host_name 1)..$(host_name "$n") = $(host_addr 1)..$(host_addr "$n"), this shell = $root_addr on $bridge"
}

cmd_down() {
    need_root
    if [ ! -d "$state" ]; then
        echo "netns-hosts: nothing of prefix $prefix is up"
        return 0
    fi
    local n
    n=$(owned_hosts | wc -l)
    remove_all
    echo "netns-hosts: $n host(s) and $bridge removed"
}

cmd_status() {
    local i ns
    if [ ! -d "$state" ]; then
        echo "netns-hosts: nothing of prefix $prefix is up"
        return 0
    fi
    for i in $(owned_hosts); do
        ns=$(host_name "$i")
        if ns_exists "$ns"; then
            echo "$ns $(host_addr "$i") $(ip -n "$ns" -br link show eth0 2>/dev/null | awk '{print $2}') pids: $(ip netns pids "$ns" | wc -l)"
        else
            echo "$ns missing (run up again)"
        fi
    done
}

# Environment for mpirun: Open MPI launches its daemons through the agent instead of ssh, and
# its control (oob) and data (btl tcp) connections use the hosts' subnet only. The OOB keepalive
# is what the launch scripts set for glm4v-serve's default 30 s step deadline
# (deploy/common/glm4v-mca.sh), so that a host cut off here ends its replica as it would there.
cmd_env() {
    echo "export OMPI_MCA_plm_rsh_agent=$here/netns-agent.sh"
    echo "export OMPI_MCA_oob_tcp_if_include=$subnet"
    echo "export OMPI_MCA_btl_tcp_if_include=$subnet"
    local mca=$here/../deploy/common/glm4v-mca.sh
    if [ -r "$mca" ]; then
        (
            # shellcheck source=deploy/common/glm4v-mca.sh
            source "$mca"
            glm4v_mca_keepalive 30000
            echo "export OMPI_MCA_oob_tcp_keepalive_time=$OMPI_MCA_oob_tcp_keepalive_time"
            echo "export OMPI_MCA_oob_tcp_keepalive_intvl=$OMPI_MCA_oob_tcp_keepalive_intvl"
            echo "export OMPI_MCA_oob_tcp_keepalive_probes=$OMPI_MCA_oob_tcp_keepalive_probes"
        )
    fi
}

# hostfile h1:2 h2:2 -> "glm4v-h1 slots=2" ... (slots default 1).
cmd_hostfile() {
    [ $# -ge 1 ] || die "usage: hostfile HOST[:SLOTS]..."
    local spec h slots i
    for spec in "$@"; do
        h=${spec%%:*}
        slots=1
        if [ "$h" != "$spec" ]; then slots=${spec#*:}; fi
        [[ $slots =~ ^[1-9][0-9]*$ ]] || die "hostfile: bad slot count in '$spec'"
        i=$(host_index "$h") || exit 1
        echo "$(host_name "$i") slots=$slots"
    done
}

cmd_exec() {
    [ $# -ge 2 ] || die "usage: exec HOST CMD..."
    need_root
    local i ns
    i=$(host_index "$1") || exit 1
    shift
    ns=$(host_name "$i")
    ns_exists "$ns" || die "$ns is not up"
    # Its own UTS namespace too, so the command sees the host's name as its hostname.
    # shellcheck disable=SC2016 # the inner shell expands $1 and $@
    exec ip netns exec "$ns" unshare --uts -- /bin/sh -c 'hostname "$1" && shift && exec "$@"' sh "$ns" "$@"
}

command=$1
shift
case $command in
up) cmd_up "$@" ;;
down) cmd_down ;;
status) cmd_status ;;
env) cmd_env ;;
hostfile) cmd_hostfile "$@" ;;
addr)
    [ $# -eq 1 ] || die "usage: addr HOST"
    if [ "$1" = root ]; then
        echo "$root_addr"
    else
        i=$(host_index "$1") || exit 1
        host_addr "$i"
    fi
    ;;
exec) cmd_exec "$@" ;;
*) die "unknown command '$command' (up, down, status, env, hostfile, addr, exec)" ;;
esac
