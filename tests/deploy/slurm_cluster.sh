#!/usr/bin/env bash
# A Slurm cluster for tests, from Debian's slurm-wlm and munge: munged, slurmctld and slurmd run as
# root inside network namespaces (so no daemon listens on this machine's network), with every file
# (munge key, slurm.conf, spool, state, logs) in one temporary folder. No systemd, nothing under
# /etc is changed.
#
# Source it, then:
#   slurm_up DIR        one node (this machine's short hostname) in a namespace with loopback only
#   slurm_up DIR N      N nodes glm4vs-h1..hN: fake hosts of scripts/netns-hosts.sh (198.18.79.0/24),
#                       one slurmd each under its own host name; slurmctld and munged on h1
#   slurm_in CMD...     run a command where the controller is (sbatch, squeue, scontrol, srun...)
#   slurm_down          stop the daemons, kill what is left in the namespaces, remove them
# Every node has 4 CPUs and 2 "GPUs" (1 each with N nodes): a count without devices, so that
# scripts asking for --gpus-per-node get an allocation on a machine without GPUs.
# SLURM_CONF is exported for the commands run through slurm_in.

SLURM_NS=glm4v-slurm$$
SLURM_DIR=""
SLURM_NODES=0 # 0: the one-node layout
SLURM_KIT=(bash "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/scripts/netns-hosts.sh" --prefix glm4vs --net 79)

# nsenter, not `ip netns exec`: the latter mounts a fresh /sys, without the cgroup file systems
# that slurmd insists on finding even when it tracks processes without cgroups.
slurm_on() { # slurm_on NODE_INDEX CMD...: on node i of the N-node layout, under its host name
    local i=$1
    shift
    # shellcheck disable=SC2016 # expanded by the inner shell
    nsenter --net="/run/netns/glm4vs-h$i" unshare --uts -- /bin/sh -c 'hostname "$0" && exec "$@"' \
        "glm4vs-h$i" "$@"
}
slurm_in() {
    if [ "$SLURM_NODES" -gt 0 ]; then
        slurm_on 1 "$@"
    else
        nsenter --net="/run/netns/$SLURM_NS" "$@"
    fi
}

# Waits until $1 (a command) succeeds, at most $2 seconds.
slurm_wait_for() {
    local deadline=$((SECONDS + $2))
    until eval "$1" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

slurm_write_conf() { # slurm_write_conf DIR CONTROLLER_NAME CONTROLLER_ADDR NODE_LINE... (name:addr)
    local d=$1 ctl=$2 ctl_addr=$3 spec name gpus names=""
    shift 3
    gpus=$([ $# -gt 1 ] && echo 1 || echo 2)
    cat >"$d/slurm.conf" <<EOF
ClusterName=glm4vtest
SlurmctldHost=$ctl($ctl_addr)
SlurmctldPort=6817
SlurmdPort=6818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$d/munge/munge.socket
StateSaveLocation=$d/state
SlurmdSpoolDir=$d/spool/%n
SlurmctldPidFile=$d/slurmctld.pid
SlurmdPidFile=$d/slurmd-%n.pid
SlurmctldLogFile=$d/slurmctld.log
SlurmdLogFile=$d/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmdParameters=config_overrides
GresTypes=gpu
KillWait=5
InactiveLimit=0
MinJobAge=300
EOF
    # Slurm drops a GPU without a device file: character devices like /dev/null stand in.
    mkdir -p "$d/dev"
    [ -e "$d/dev/gpu0" ] || mknod "$d/dev/gpu0" c 1 3
    [ -e "$d/dev/gpu1" ] || mknod "$d/dev/gpu1" c 1 3
    : >"$d/gres.conf"
    for spec in "$@"; do
        name=${spec%%:*}
        names="$names${names:+,}$name"
        mkdir -p "$d/spool/$name"
        echo "NodeName=$name NodeAddr=${spec#*:} CPUs=4 RealMemory=2000 Gres=gpu:$gpus State=UNKNOWN" >>"$d/slurm.conf"
        echo "NodeName=$name Name=gpu File=$d/dev/gpu[0-$((gpus - 1))]" >>"$d/gres.conf"
    done
    echo "PartitionName=test Nodes=$names Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO" >>"$d/slurm.conf"
}

slurm_up() { # slurm_up DIR [N]
    SLURM_DIR=$1
    SLURM_NODES=${2:-0}
    local d=$1 i node
    mkdir -p "$d/munge" "$d/state" "$d/spool"
    chmod 700 "$d/munge"
    head -c 1024 /dev/urandom >"$d/munge/munge.key"
    chmod 600 "$d/munge/munge.key"
    export SLURM_CONF=$d/slurm.conf
    if [ "$SLURM_NODES" -gt 0 ]; then
        "${SLURM_KIT[@]}" down >/dev/null 2>&1 # a run killed before its trap ran
        "${SLURM_KIT[@]}" up "$SLURM_NODES" >/dev/null || return 1
        local -a specs=()
        for ((i = 1; i <= SLURM_NODES; i++)); do specs+=("glm4vs-h$i:198.18.79.$i"); done
        slurm_write_conf "$d" glm4vs-h1 198.18.79.1 "${specs[@]}"
    else
        node=$(hostname -s)
        slurm_write_conf "$d" "$node" 127.0.0.1 "$node:127.0.0.1"
        ip netns add "$SLURM_NS" || return 1
        ip -n "$SLURM_NS" link set lo up
        # Slurm resolves addresses with AI_ADDRCONFIG, which finds no IPv4 at all (not even
        # 127.0.0.1) on a host whose only IPv4 address is loopback: give the namespace one more,
        # on a veth pair whose both ends stay inside it (198.18.0.0/15: benchmarking, routed nowhere).
        ip -n "$SLURM_NS" link add glm4vs0 type veth peer name glm4vs1
        ip -n "$SLURM_NS" addr add 198.18.254.1/32 dev glm4vs0
        ip -n "$SLURM_NS" link set glm4vs0 up
        ip -n "$SLURM_NS" link set glm4vs1 up
    fi
    # --force: munged refuses to run as root, or with a key outside /etc/munge, unless forced
    slurm_in munged --force --socket="$d/munge/munge.socket" --key-file="$d/munge/munge.key" \
        --pid-file="$d/munge/munged.pid" --log-file="$d/munge/munged.log" \
        --seed-file="$d/munge/munged.seed" || { cat "$d/munge/munged.log" >&2; return 1; }
    slurm_in slurmctld -f "$SLURM_CONF" -i || { cat "$d/slurmctld.log" >&2; return 1; }
    slurm_wait_for "slurm_in scontrol ping | grep -q UP" 30 || {
        echo "slurmctld did not come up" >&2
        cat "$d/slurmctld.log" >&2
        return 1
    }
    if [ "$SLURM_NODES" -gt 0 ]; then
        for ((i = 1; i <= SLURM_NODES; i++)); do
            slurm_on "$i" slurmd -f "$SLURM_CONF" -N "glm4vs-h$i" || return 1
        done
    else
        slurm_in slurmd -f "$SLURM_CONF" || { cat "$d"/slurmd-*.log >&2; return 1; }
    fi
    local want=$((SLURM_NODES > 0 ? SLURM_NODES : 1))
    slurm_wait_for "[ \"\$(slurm_in sinfo -h -N -o %t | grep -cx idle)\" = $want ]" 30 || {
        echo "not every slurmd registered as idle:" >&2
        slurm_in sinfo -N -l >&2
        tail -n 20 "$d"/slurmd-*.log "$d/slurmctld.log" >&2
        return 1
    }
}

slurm_down() {
    [ -n "$SLURM_DIR" ] || return 0
    local f pid
    for f in "$SLURM_DIR"/slurmd-*.pid "$SLURM_DIR/slurmctld.pid" "$SLURM_DIR/munge/munged.pid"; do
        pid=$(cat "$f" 2>/dev/null) || continue
        kill -TERM "$pid" 2>/dev/null || true
    done
    sleep 1
    if [ "$SLURM_NODES" -gt 0 ]; then
        "${SLURM_KIT[@]}" down >/dev/null 2>&1 || true # also kills what is left on the hosts
    elif ip netns list | awk '{print $1}' | grep -qx "$SLURM_NS"; then
        pid=$(ip netns pids "$SLURM_NS" 2>/dev/null || true)
        # shellcheck disable=SC2086 # a list of pids
        if [ -n "$pid" ]; then kill -9 $pid 2>/dev/null || true; fi
        ip netns del "$SLURM_NS" 2>/dev/null || true
    fi
    SLURM_DIR=""
}
