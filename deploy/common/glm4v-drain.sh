#!/usr/bin/env bash
# Drains one glm4v-serve replica: sends SIGTERM to its rank 0 and waits until the replica exits.
#
# Why not just SIGTERM mpirun: Open MPI 4's mpirun treats SIGTERM as "abort the job": it forwards
# the signal to every rank and SIGKILLs them about a second later, which cuts the drain short and
# makes mpirun exit 1. glm4v-serve drains when its rank 0 gets SIGTERM (it stops reading jobs,
# finishes or hands back running ones, tells the other ranks to stop, and every rank exits 0), so
# this script signals rank 0 only and then waits for mpirun to exit on its own.
#
# Used by deploy/local/down.sh, the systemd unit (ExecStop), the Slurm scripts and the Kubernetes
# preStop hook. Exit: 0 drained, 1 timed out (the replica was then killed), 2 usage.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: glm4v-drain.sh [--mpirun-pid PID] [--timeout SEC] [--kill-after SEC]

  --mpirun-pid PID  the replica's mpirun (or srun); its glm4v-serve descendants are the ranks.
                    Without it: every glm4v-serve process of this user on this host (meant for a
                    container, where the pod holds one replica's ranks and nothing else).
  --timeout SEC     how long the drain may take before the replica is killed (default 300)
  --kill-after SEC  after the timeout: SIGTERM to mpirun, then SIGKILL this much later (default 10)

Rank 0 is the glm4v-serve process whose environment says OMPI_COMM_WORLD_RANK=0 (mpirun),
PMIX_RANK=0 or SLURM_PROCID=0 (srun). A host without rank 0 (a worker pod or node of a
multi-node replica) sends nothing and waits for its ranks to exit once rank 0 tells them to.
EOF
}

mpirun_pid=""
timeout_s=300
kill_after_s=10
while [ $# -gt 0 ]; do
    case $1 in
    --mpirun-pid) mpirun_pid=${2:?--mpirun-pid needs a value}; shift 2 ;;
    --timeout) timeout_s=${2:?--timeout needs a value}; shift 2 ;;
    --kill-after) kill_after_s=${2:?--kill-after needs a value}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "glm4v-drain: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
for n in "$timeout_s" "$kill_after_s" ${mpirun_pid:+"$mpirun_pid"}; do
    [[ $n =~ ^[0-9]+$ ]] || { echo "glm4v-drain: '$n' is not a number" >&2; exit 2; }
done

# Prints the pids of the glm4v-serve processes that descend from $1 (one per line).
serve_descendants() {
    local root=$1
    # pid, parent pid and command name of every process, walked breadth first from root.
    ps -e -o pid=,ppid=,comm= | awk -v root="$root" '
        { parent[$1] = $2; name[$1] = $3 }
        END {
            frontier[root] = 1
            changed = 1
            while (changed) {
                changed = 0
                for (p in parent)
                    if (!(p in frontier) && (parent[p] in frontier)) { frontier[p] = 1; changed = 1 }
            }
            for (p in frontier) if (name[p] == "glm4v-serve") print p
        }'
}

rank_pids() {
    if [ -n "$mpirun_pid" ]; then
        serve_descendants "$mpirun_pid"
    else
        pgrep -u "$(id -u)" -x glm4v-serve || true
    fi
}

# True when the process's environment names it rank 0 of its job. The first of these variables
# that is set decides: ranks that mpirun starts inside a Slurm job all inherit the batch step's
# SLURM_PROCID=0, whatever their MPI rank.
is_rank0() {
    local env_file=/proc/$1/environ v line
    [ -r "$env_file" ] || return 1
    for v in OMPI_COMM_WORLD_RANK PMIX_RANK SLURM_PROCID; do
        if line=$(tr '\0' '\n' <"$env_file" | grep -m 1 "^$v="); then
            [ "$line" = "$v=0" ]
            return
        fi
    done
    return 1
}

replica_running() {
    if [ -n "$mpirun_pid" ]; then
        kill -0 "$mpirun_pid" 2>/dev/null
    else
        [ -n "$(rank_pids)" ]
    fi
}

if ! replica_running; then
    echo "glm4v-drain: nothing to drain"
    exit 0
fi

rank0=""
for pid in $(rank_pids); do
    if is_rank0 "$pid"; then rank0=$pid; fi
done
if [ -n "$rank0" ]; then
    echo "glm4v-drain: SIGTERM to rank 0 (pid $rank0), waiting up to ${timeout_s}s"
    kill -TERM "$rank0" 2>/dev/null || true
else
    echo "glm4v-drain: rank 0 is not on this host; waiting up to ${timeout_s}s for the ranks here"
fi

deadline=$((SECONDS + timeout_s))
while replica_running; do
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "glm4v-drain: drain did not finish in ${timeout_s}s; killing the replica" >&2
        if [ -n "$mpirun_pid" ]; then kill -TERM "$mpirun_pid" 2>/dev/null || true; fi
        sleep "$kill_after_s"
        for pid in $(rank_pids); do kill -KILL "$pid" 2>/dev/null || true; done
        if [ -n "$mpirun_pid" ]; then kill -KILL "$mpirun_pid" 2>/dev/null || true; fi
        exit 1
    fi
    sleep 0.5
done
echo "glm4v-drain: replica exited"
