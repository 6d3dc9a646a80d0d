#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, to try (and test) `executor = "slurm"` for real.
#
#   bash scripts/slurm-local-cluster.sh start    install slurm-wlm + munge if missing, write the config,
#                                                start munged, slurmctld and slurmd, wait for the node
#   bash scripts/slurm-local-cluster.sh status   sinfo and squeue of the local cluster
#   bash scripts/slurm-local-cluster.sh stop     stop the three daemons (the config and state stay)
#   bash scripts/slurm-local-cluster.sh env      print the `export SLURM_CONF=...` line for your shell
#
# Runs as root (the daemons run as root, jobs run as the submitting user). Everything lives in
# $DEEPSCOPE_SLURM_DIR (default /tmp/deepscope-slurm): slurm.conf, logs, pid files, state. Commands
# such as sbatch, squeue and sinfo find the cluster through SLURM_CONF=$DEEPSCOPE_SLURM_DIR/slurm.conf.
# One partition `debug` with this host as its only node: its real CPU count and memory, no GPUs.
# `start` and `stop` are idempotent.
set -euo pipefail

DIR=${DEEPSCOPE_SLURM_DIR:-/tmp/deepscope-slurm}
CONF=$DIR/slurm.conf
export SLURM_CONF=$CONF
NODE=$(hostname -s)

say() { echo "slurm-local-cluster: $*" >&2; }

need_root() {
    if [ "$(id -u)" != 0 ]; then
        say "needs root (the daemons run as root): sudo bash $0 $1"
        exit 1
    fi
}

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
        && command -v sbatch >/dev/null; then
        return
    fi
    say "installing slurm-wlm and munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

write_config() {
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
    local cpus mem_mb
    cpus=$(nproc --all)
    mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)  # leave the OS a tenth
    cat >"$CONF.new" <<EOF
# written by scripts/slurm-local-cluster.sh: a one-node cluster for trying deepscope's slurm executor
ClusterName=deepscope-local
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# a requeued job waits cred_expire seconds before it may start again (default 120)
AuthInfo=cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=1,sched_min_interval=100000,batch_sched_delay=0
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=10
MinJobAge=600
DefMemPerCPU=$((mem_mb / cpus))
MessageTimeout=10
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.new" "$CONF"
}

pid_alive() {  # pid file -> running?
    [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

start_munge() {
    if [ -S /run/munge/munge.socket.2 ] && munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
        return
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
    if [ ! -s /etc/munge/munge.key ]; then
        if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key
        else dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none; fi
    fi
    chmod 0400 /etc/munge/munge.key
    chown -R root:root /etc/munge /run/munge /var/log/munge /var/lib/munge
    munged --force
}

wait_idle() {
    local state=""
    for _ in $(seq 1 60); do
        state=$(sinfo -h -N -n "$NODE" -o '%t' 2>/dev/null | head -n1 || true)
        case "$state" in
            idle|mix|alloc) say "node $NODE is $state; export SLURM_CONF=$CONF"; return 0 ;;
            down*|drain*|fail*) scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true ;;
        esac
        sleep 1
    done
    say "node $NODE did not become idle (state: ${state:-unknown}); see $DIR/log/"
    return 1
}

start() {
    need_root start
    install_packages
    write_config
    start_munge
    if ! pid_alive "$DIR/slurmctld.pid"; then
        slurmctld -f "$CONF"
    else
        scontrol reconfigure >/dev/null  # already running: pick up the config just written
    fi
    if ! pid_alive "$DIR/slurmd.pid"; then
        slurmd -f "$CONF"
    fi
    wait_idle
}

stop_daemon() {  # name pidfile
    if pid_alive "$2"; then
        local pid
        pid=$(cat "$2")
        kill "$pid"
        for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        say "stopped $1 ($pid)"
    fi
    rm -f "$2"
}

stop() {
    need_root stop
    if [ -f "$CONF" ]; then
        scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
    fi
    stop_daemon slurmd "$DIR/slurmd.pid"
    stop_daemon slurmctld "$DIR/slurmctld.pid"
    if [ -f /run/munge/munged.pid ]; then stop_daemon munged /run/munge/munged.pid; fi
}

status() {
    if [ ! -f "$CONF" ] || ! pid_alive "$DIR/slurmctld.pid"; then
        say "not running (start it with: bash $0 start)"
        return 1
    fi
    sinfo -N -o '%N %P %t %c %m %G'
    squeue
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) echo "usage: bash $0 start|stop|status|env" >&2; exit 2 ;;
esac
