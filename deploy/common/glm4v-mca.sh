# shellcheck shell=bash
# Open MPI settings that let a replica spread over several hosts end whole when one host drops off
# the network. Sourced by the launch scripts (deploy/slurm/glm4v-slurm.sh) and the multi-host tests.
#
# Why: when a rank aborts, mpirun (Open MPI 4.1's ORTE) sends the order to kill the replica to the
# daemon (orted) of every host and waits until each one has reported or its out-of-band (OOB) TCP
# connection has failed. A host whose link silently stops passing packets never reports, and the
# connection only fails once TCP gives up retransmitting that order (net.ipv4.tcp_retries2: about
# 15 minutes) or the link comes back; meanwhile mpirun, and the orted on the cut host (whose own
# messages to mpirun are stuck the same way), keep running. TCP keepalive on the OOB connections
# (Open MPI's defaults: 300 s idle, then 9 probes 20 s apart) detects a dead peer only while the
# connection is idle: a queued message suspends it. So the keepalive must find the lost host
# before anything is sent to it, that is before the step watchdog's deadline: then mpirun marks
# the host lost, aborts the replica without waiting for it ("ORTE has lost communication with a
# remote daemon"), and the cut host's orted exits on its lost lifeline. Its ranks, cut off, end by
# their own step watchdog.
#
# glm4v_mca_keepalive STEP_TIMEOUT_MS exports OMPI_MCA_oob_tcp_keepalive_{time,intvl,probes}
# (mpirun passes OMPI_MCA_* on to its daemons) so that a silent host is detected after about
# time + intvl x (probes + 1) = 4 x max(1 s, deadline / 10): 12 s for the default 30 s deadline,
# under the 0.75 x deadline after which a rank waiting idle for a step plan may give up.
# Deadlines under 6 s are refused (the keepalive's unit is a second); 0 (no deadline) gets the
# settings of the default deadline. Probes are answered by the
# peer's kernel, so a stopped or busy rank does not trip them; only a host that does not answer
# at all for that long does, and the step watchdog would end that replica anyway.
glm4v_mca_keepalive() {
    local ms=${1:-30000}
    if [ "$ms" = 0 ]; then ms=30000; fi
    if ! [[ $ms =~ ^[0-9]+$ ]] || [ "$ms" -lt 6000 ]; then
        echo "glm4v_mca_keepalive: step deadline '$ms' ms: need a number of ms >= 6000" >&2
        return 1
    fi
    local unit=$((ms / 10000))
    [ "$unit" -ge 1 ] || unit=1
    export OMPI_MCA_oob_tcp_keepalive_time=$unit
    export OMPI_MCA_oob_tcp_keepalive_intvl=$unit
    export OMPI_MCA_oob_tcp_keepalive_probes=2
}

# The --step-timeout-ms value among glm4v-serve arguments (30000, its default, when absent).
glm4v_step_timeout_of() {
    local ms=30000
    while [ $# -gt 0 ]; do
        case $1 in
        --step-timeout-ms)
            ms=${2:-}
            shift
            ;;
        --step-timeout-ms=*) ms=${1#*=} ;;
        esac
        shift
    done
    echo "$ms"
}
