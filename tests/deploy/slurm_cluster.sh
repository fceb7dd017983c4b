#!/usr/bin/env bash
# A one-node Slurm for tests, from Debian's slurm-wlm and munge: munged, slurmctld and slurmd run
# as root inside a network namespace of their own that has nothing but loopback (so no daemon
# listens on this machine's network), with every file (munge key, slurm.conf, spool, state,
# logs) in one temporary folder. No systemd, nothing under /etc is changed.
#
# Source it, then:
#   slurm_up DIR      start it (DIR: an empty folder), export SLURM_CONF; fail with the logs
#   slurm_in CMD...   run a command inside the cluster's namespace (sbatch, squeue, scontrol, srun,
#                     and anything that must reach a service started by a job there)
#   slurm_down        stop the daemons, kill what is left in the namespace, remove it
# The node is this machine's short hostname, with 4 CPUs and 2 "GPUs" (a count without devices,
# so that scripts asking for --gpus-per-node=2 get an allocation on a machine without GPUs).

SLURM_NS=glm4v-slurm$$
SLURM_DIR=""

# nsenter, not `ip netns exec`: the latter mounts a fresh /sys, without the cgroup file systems
# that slurmd insists on finding even when it tracks processes without cgroups.
slurm_in() { nsenter --net="/run/netns/$SLURM_NS" "$@"; }

# Waits until $1 (a command) succeeds, at most $2 seconds.
slurm_wait_for() {
    local deadline=$((SECONDS + $2))
    until eval "$1" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

slurm_write_conf() {
    local d=$1 node
    node=$(hostname -s)
    cat >"$d/slurm.conf" <<EOF
ClusterName=glm4vtest
SlurmctldHost=$node(127.0.0.1)
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
SlurmdPidFile=$d/slurmd.pid
SlurmctldLogFile=$d/slurmctld.log
SlurmdLogFile=$d/slurmd.log
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
NodeName=$node NodeAddr=127.0.0.1 NodeHostname=$node CPUs=4 RealMemory=2000 Gres=gpu:2 State=UNKNOWN
PartitionName=test Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    # Slurm drops a GPU without a device file: two character devices like /dev/null stand in.
    mkdir -p "$d/dev"
    [ -e "$d/dev/gpu0" ] || mknod "$d/dev/gpu0" c 1 3
    [ -e "$d/dev/gpu1" ] || mknod "$d/dev/gpu1" c 1 3
    echo "NodeName=$node Name=gpu File=$d/dev/gpu[0-1]" >"$d/gres.conf"
}

slurm_up() { # slurm_up DIR
    SLURM_DIR=$1
    local d=$1
    mkdir -p "$d/munge" "$d/state" "$d/spool/$(hostname -s)"
    chmod 700 "$d/munge"
    head -c 1024 /dev/urandom >"$d/munge/munge.key"
    chmod 600 "$d/munge/munge.key"
    slurm_write_conf "$d"
    export SLURM_CONF=$d/slurm.conf
    ip netns add "$SLURM_NS" || return 1
    ip -n "$SLURM_NS" link set lo up
    # Slurm resolves addresses with AI_ADDRCONFIG, which finds no IPv4 at all (not even 127.0.0.1)
    # on a host whose only IPv4 address is loopback: give the namespace one more, on a veth pair
    # whose both ends stay inside it (198.18.0.0/15 is the benchmarking block, routed nowhere).
    ip -n "$SLURM_NS" link add glm4vs0 type veth peer name glm4vs1
    ip -n "$SLURM_NS" addr add 198.18.254.1/32 dev glm4vs0
    ip -n "$SLURM_NS" link set glm4vs0 up
    ip -n "$SLURM_NS" link set glm4vs1 up
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
    slurm_in slurmd -f "$SLURM_CONF" || { cat "$d/slurmd.log" >&2; return 1; }
    slurm_wait_for "slurm_in sinfo -h -o %t | grep -qx idle" 30 || {
        echo "slurmd did not register as idle:" >&2
        slurm_in sinfo -N -l >&2
        tail -20 "$d/slurmd.log" "$d/slurmctld.log" >&2
        return 1
    }
}

slurm_down() {
    [ -n "$SLURM_DIR" ] || return 0
    local f pid
    for f in slurmd.pid slurmctld.pid munge/munged.pid; do
        pid=$(cat "$SLURM_DIR/$f" 2>/dev/null) || continue
        kill -TERM "$pid" 2>/dev/null || true
    done
    sleep 1
    if ip netns list | awk '{print $1}' | grep -qx "$SLURM_NS"; then
        pid=$(ip netns pids "$SLURM_NS" 2>/dev/null || true)
        # shellcheck disable=SC2086 # a list of pids
        if [ -n "$pid" ]; then kill -9 $pid 2>/dev/null || true; fi
        ip netns del "$SLURM_NS" 2>/dev/null || true
    fi
    SLURM_DIR=""
}
