#!/usr/bin/env bash
# Single-node test Slurm cluster on loopback (munge + slurmctld + slurmd).
#
# Usage:
#   scripts/slurm_cluster.sh start    # install (if missing, root only), configure, start, wait idle
#   scripts/slurm_cluster.sh stop     # stop the daemons this script started, remove the state dir
#   scripts/slurm_cluster.sh status   # show daemons + sinfo; exit 0 only if the node is usable
#   scripts/slurm_cluster.sh env      # print `export SLURM_CONF=...` (eval "$(... env)")
#
# Environment:
#   GENRE_SLURM_STATE_DIR   state dir for slurm.conf, gres.conf, spool, logs, pid files
#                           (default: /tmp/genre-slurm)
#   GENRE_SLURM_WAIT        seconds to wait for the node to become idle (default: 60)
#   GENRE_SLURM_NO_INSTALL  if set to 1, never call apt-get (fail if binaries are missing)
#
# Clients (sinfo, sbatch, squeue, snakemake's slurm executor) find the cluster through
# SLURM_CONF=<state dir>/slurm.conf. If /etc/slurm/slurm.conf does not exist, it is linked to
# that file while the cluster runs (nested srun in group jobs needs it; see link_etc_conf).
#
#   GENRE_SLURM_MEMORY      how job memory is enforced: auto | cgroup | sampling (below)
#   GENRE_SLURM_PARTITIONS  space-separated partition names, the first is the default
#                           (default: "debug long"). Deliberately not `cpu`/`gpu`: the profile
#                           names no partition, so it must work with whatever a site calls them.
#
# The node advertises one fake GPU (gres.conf `Name=gpu File=/dev/null`) so that
# `--gres=gpu:1` submissions are accepted and scheduled (in the default partition: no GPU
# partition is needed), and the job sees CUDA_VISIBLE_DEVICES=0. There is no real GPU behind
# it: it tests the request path.
#
# Job memory is enforced, as on a production cluster (GENRE_SLURM_MEMORY):
#   cgroup    task/cgroup + proctrack/cgroup with ConstrainRAMSpace (cgroup v1 memory
#             controller): the kernel OOM-kills a job over its --mem, Slurm reports
#             OUT_OF_MEMORY. Works in this container (checked: a 400 MB job with --mem=100 ends
#             OUT_OF_MEMORY, the same job with --mem=1000 completes).
#   sampling  jobacct_gather/linux samples every task's RSS each second and OverMemoryKill
#             kills a step over its --mem (job FAILED, "Exceeded job memory limit"); needs no
#             cgroups, can be up to a second late.
#   auto      (default) cgroup where /sys/fs/cgroup/memory is a writable cgroup v1 hierarchy,
#             else sampling.
set -euo pipefail

STATE_DIR="${GENRE_SLURM_STATE_DIR:-/tmp/genre-slurm}"
WAIT_SECONDS="${GENRE_SLURM_WAIT:-60}"
PARTITIONS="${GENRE_SLURM_PARTITIONS:-debug long}"
MEMORY_MODE="${GENRE_SLURM_MEMORY:-auto}"
CGROUP_CONF="${STATE_DIR}/cgroup.conf"
CONF="${STATE_DIR}/slurm.conf"
GRES_CONF="${STATE_DIR}/gres.conf"
MUNGE_KEY=/etc/munge/munge.key
MUNGE_SOCKET_DIR=/run/munge
MUNGE_PID_FILE="${MUNGE_SOCKET_DIR}/genre-munged.pid"
MUNGE_OWNED_FLAG="${STATE_DIR}/munged.started-by-us"
CTLD_PID_FILE="${STATE_DIR}/slurmctld.pid"
# Default client config path compiled into Debian's Slurm. See link_etc_conf.
ETC_CONF=/etc/slurm/slurm.conf
ETC_LINK_FLAG="${STATE_DIR}/etc-link.created-by-us"
SLURMD_PID_FILE="${STATE_DIR}/slurmd.pid"
NODE_NAME="$(hostname -s)"

SERVICE_LOG_NAME=slurm_cluster
# shellcheck source=scripts/service_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/service_lib.sh"

have_binaries() {
    command -v munged >/dev/null 2>&1 || [ -x /usr/sbin/munged ] || return 1
    command -v slurmctld >/dev/null 2>&1 || [ -x /usr/sbin/slurmctld ] || return 1
    command -v slurmd >/dev/null 2>&1 || [ -x /usr/sbin/slurmd ] || return 1
    command -v sinfo >/dev/null 2>&1 || return 1
    command -v sbatch >/dev/null 2>&1 || return 1
}

ensure_installed() {
    export PATH="${PATH}:/usr/sbin:/sbin"
    if have_binaries; then
        return 0
    fi
    if [ "${GENRE_SLURM_NO_INSTALL:-0}" = "1" ]; then
        die "slurm-wlm/munge are not installed and GENRE_SLURM_NO_INSTALL=1"
    fi
    is_root || die "slurm-wlm/munge are not installed and installing them needs root (run: sudo apt-get install -y slurm-wlm munge)"
    command -v apt-get >/dev/null 2>&1 || die "slurm-wlm/munge are not installed and apt-get is not available"
    log "installing slurm-wlm and munge via apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q slurm-wlm munge
    have_binaries || die "slurm-wlm/munge installed but binaries still missing"
}

start_munge() {
    mkdir -p "$(dirname "$MUNGE_KEY")"
    if [ ! -s "$MUNGE_KEY" ]; then
        log "creating munge key ${MUNGE_KEY}"
        if command -v mungekey >/dev/null 2>&1; then
            mungekey --create --keyfile="$MUNGE_KEY" --force
        else
            dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
        fi
    fi
    local munge_user=root
    if id munge >/dev/null 2>&1; then
        munge_user=munge
    fi
    chown "$munge_user:" "$(dirname "$MUNGE_KEY")" "$MUNGE_KEY"
    chmod 700 "$(dirname "$MUNGE_KEY")"
    chmod 600 "$MUNGE_KEY"
    mkdir -p "$MUNGE_SOCKET_DIR" /var/lib/munge /var/log/munge
    chown "$munge_user:" "$MUNGE_SOCKET_DIR" /var/lib/munge /var/log/munge
    chmod 755 "$MUNGE_SOCKET_DIR"

    # A munged that is already running (systemd, a previous run) is fine as long as it works.
    if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
        log "munged already running"
        return 0
    fi
    log "starting munged as ${munge_user}"
    if [ "$munge_user" = root ]; then
        munged --force --pid-file="$MUNGE_PID_FILE" 2>"${STATE_DIR}/munged.err" || true
    else
        runuser -u munge -- munged --pid-file="$MUNGE_PID_FILE" 2>"${STATE_DIR}/munged.err" \
            || munged --force --pid-file="$MUNGE_PID_FILE" 2>>"${STATE_DIR}/munged.err" || true
    fi
    touch "$MUNGE_OWNED_FLAG"

    for _ in $(seq 1 50); do
        if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    cat "${STATE_DIR}/munged.err" >&2 || true
    die "munged did not come up (munge -n | unmunge fails)"
}

cgroup_v1_memory_usable() {
    local probe=/sys/fs/cgroup/memory/genre-slurm-probe.$$
    [ -f /sys/fs/cgroup/memory/memory.limit_in_bytes ] || return 1
    mkdir "$probe" 2>/dev/null || return 1
    rmdir "$probe"
}

memory_mode() {
    case "$MEMORY_MODE" in
        cgroup | sampling) echo "$MEMORY_MODE" ;;
        auto) if cgroup_v1_memory_usable; then echo cgroup; else echo sampling; fi ;;
        *) die "GENRE_SLURM_MEMORY must be auto, cgroup or sampling (got '${MEMORY_MODE}')" ;;
    esac
}

write_config() {
    local cpus mem_total_mb real_mem memory_mode proctrack taskplugin acct_line
    memory_mode="$(memory_mode)"
    mkdir -p "$STATE_DIR"
    if [ "$memory_mode" = cgroup ]; then
        proctrack=proctrack/cgroup taskplugin=task/cgroup
        acct_line="# JobAcctGatherParams: none (the cgroup limits memory)"
        cat >"$CGROUP_CONF" <<EOF
# Generated by scripts/slurm_cluster.sh: the kernel enforces each job's --mem.
CgroupPlugin=cgroup/v1
CgroupMountpoint=/sys/fs/cgroup
ConstrainRAMSpace=yes
ConstrainSwapSpace=no
EOF
    else
        proctrack=proctrack/linuxproc taskplugin=task/none
        acct_line=JobAcctGatherParams=OverMemoryKill
        rm -f "$CGROUP_CONF"
    fi
    log "job memory enforced by ${memory_mode}"
    cpus="$(nproc --all)"
    mem_total_mb=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024))
    # A bit under the machine's memory: slurmd drains a node whose RealMemory exceeds what it sees.
    real_mem=$((mem_total_mb * 90 / 100))
    mkdir -p "${STATE_DIR}/ctld" "${STATE_DIR}/slurmd" "${STATE_DIR}/log"
    cat >"$CONF" <<EOF
# Generated by scripts/slurm_cluster.sh -- single-node loopback test cluster.
ClusterName=genre-test
SlurmctldHost=${NODE_NAME}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=${proctrack}
TaskPlugin=${taskplugin}
# Memory enforcement (${memory_mode}): see the top of scripts/slurm_cluster.sh.
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
${acct_line}
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
# Jobs that do not ask for memory get 1 GB per CPU instead of the whole node.
DefMemPerCPU=1000
ReturnToService=2
# Keep finished jobs visible to squeue/scontrol for 10 minutes (no accounting DB here).
MinJobAge=600
KillWait=5
InactiveLimit=0
SlurmctldTimeout=60
SlurmdTimeout=60
StateSaveLocation=${STATE_DIR}/ctld
SlurmdSpoolDir=${STATE_DIR}/slurmd
SlurmctldPidFile=${CTLD_PID_FILE}
SlurmdPidFile=${SLURMD_PID_FILE}
SlurmctldLogFile=${STATE_DIR}/log/slurmctld.log
SlurmdLogFile=${STATE_DIR}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=${NODE_NAME} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${real_mem} Gres=gpu:1 State=UNKNOWN
EOF
    local default=YES name
    for name in $PARTITIONS; do
        echo "PartitionName=${name} Nodes=${NODE_NAME} Default=${default} MaxTime=INFINITE State=UP" >>"$CONF"
        default=NO
    done
    cat >"$GRES_CONF" <<EOF
# Generated by scripts/slurm_cluster.sh: one fake GPU so --gres=gpu:1 is schedulable.
NodeName=${NODE_NAME} Name=gpu File=/dev/null
EOF
}

link_etc_conf() {
    # snakemake-executor-plugin-slurm-jobstep strips every SLURM_* variable except a few
    # allocation ids (SLURM_CONF included) before its nested `srun`, so inside a group job
    # srun only finds the cluster through the compiled-in default path. Real clusters have
    # /etc/slurm/slurm.conf (or configless DNS SRV); here we link it to our config, but only
    # if that path is free or already our link, and remove the link again on stop.
    if [ -L "$ETC_CONF" ] && [ "$(readlink "$ETC_CONF")" = "$CONF" ]; then
        touch "$ETC_LINK_FLAG"
    elif [ -e "$ETC_CONF" ] || [ -L "$ETC_CONF" ]; then
        log "WARNING: ${ETC_CONF} exists and is not ours: srun inside group jobs will use it"
    else
        mkdir -p "$(dirname "$ETC_CONF")"
        ln -s "$CONF" "$ETC_CONF"
        touch "$ETC_LINK_FLAG"
    fi
}

unlink_etc_conf() {
    if [ -e "$ETC_LINK_FLAG" ]; then
        if [ -L "$ETC_CONF" ] && [ "$(readlink "$ETC_CONF")" = "$CONF" ]; then
            rm -f "$ETC_CONF"
        fi
        rm -f "$ETC_LINK_FLAG"
    fi
}

node_state() {
    SLURM_CONF="$CONF" sinfo -h -N -n "$NODE_NAME" -o '%t' 2>/dev/null | head -n1 || true
}

running() {
    pid_alive "$CTLD_PID_FILE" && pid_alive "$SLURMD_PID_FILE"
}

wait_idle() {
    local deadline state
    deadline=$((SECONDS + WAIT_SECONDS))
    while [ "$SECONDS" -lt "$deadline" ]; do
        state="$(node_state)"
        case "$state" in
            idle | mix | alloc | idle~ | mix- | alloc-) return 0 ;;
            drain* | down* | fail*)
                # ReturnToService=2 usually fixes this; nudge it once in case it did not.
                SLURM_CONF="$CONF" scontrol update nodename="$NODE_NAME" state=resume 2>/dev/null || true
                ;;
        esac
        sleep 1
    done
    log "node did not become idle within ${WAIT_SECONDS}s (state: '${state:-?}')"
    SLURM_CONF="$CONF" sinfo -N -l >&2 || true
    tail -n 30 "${STATE_DIR}/log/slurmctld.log" "${STATE_DIR}/log/slurmd.log" >&2 || true
    return 1
}

cmd_start() {
    if running && [ -n "$(node_state)" ]; then
        log "already running (state dir ${STATE_DIR}); nothing to do"
        echo "export SLURM_CONF=${CONF}"
        return 0
    fi
    ensure_installed
    is_root || die "starting slurmctld/slurmd/munged needs root"
    # Stale state from a crashed run: stop whatever is left and start clean.
    if [ -d "$STATE_DIR" ]; then
        stop_daemons
        rm -rf "${STATE_DIR:?}/ctld" "${STATE_DIR:?}/slurmd"
    fi
    mkdir -p "$STATE_DIR"
    start_munge
    write_config
    link_etc_conf
    export SLURM_CONF="$CONF"
    # Anything below that fails leaves no half-started daemons behind.
    trap 'log "start failed; stopping what was started"; stop_daemons' EXIT
    log "starting slurmctld (config ${CONF})"
    slurmctld -f "$CONF" -c -i || die "slurmctld failed to start; see ${STATE_DIR}/log/slurmctld.log"
    log "starting slurmd (node ${NODE_NAME})"
    slurmd -f "$CONF" -N "$NODE_NAME" || die "slurmd failed to start; see ${STATE_DIR}/log/slurmd.log"
    wait_idle || die "cluster did not become usable"
    trap - EXIT
    SLURM_CONF="$CONF" sinfo >&2
    log "ready. Use: export SLURM_CONF=${CONF}"
    echo "export SLURM_CONF=${CONF}"
}

stop_daemons() {
    # Cancel leftover jobs first so their processes do not outlive slurmd.
    if running; then
        SLURM_CONF="$CONF" scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
    fi
    kill_pidfile "$SLURMD_PID_FILE" slurmd
    kill_pidfile "$CTLD_PID_FILE" slurmctld
    if [ -e "$MUNGE_OWNED_FLAG" ]; then
        kill_pidfile "$MUNGE_PID_FILE" munged
        rm -f "$MUNGE_OWNED_FLAG"
    fi
    unlink_etc_conf
}

cmd_stop() {
    if [ ! -d "$STATE_DIR" ]; then
        log "not running (no state dir ${STATE_DIR})"
        return 0
    fi
    stop_daemons
    rm -rf "${STATE_DIR:?}"
    log "stopped and removed ${STATE_DIR}"
}

cmd_status() {
    local ok=0
    for pair in "slurmctld:${CTLD_PID_FILE}" "slurmd:${SLURMD_PID_FILE}"; do
        if pid_alive "${pair#*:}"; then
            echo "${pair%%:*}: running (pid $(cat "${pair#*:}"))"
        else
            echo "${pair%%:*}: not running"
            ok=1
        fi
    done
    if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
        echo "munged: running"
    else
        echo "munged: not running"
        ok=1
    fi
    if [ "$ok" -eq 0 ]; then
        echo "SLURM_CONF=${CONF}"
        SLURM_CONF="$CONF" sinfo || ok=1
    fi
    return "$ok"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) echo "export SLURM_CONF=${CONF}" ;;
    *)
        echo "usage: $0 {start|stop|status|env}" >&2
        exit 2
        ;;
esac
