#!/usr/bin/env bash
# Single-node SLURM cluster for local use and for the test-suite.
#
#   bash slurm/cluster.sh start    # install (if needed), configure, start; idempotent
#   bash slurm/cluster.sh stop     # stop slurmd, slurmctld and munged
#   bash slurm/cluster.sh status   # print sinfo; non-zero exit when the cluster is down
#   bash slurm/cluster.sh restart  # stop + start
#
# Targets a Debian (bookworm) machine/container where we are root and there is
# no service manager: the daemons are started directly and tracked by pid file.
# Everything runs on 127.0.0.1; jobs run as the submitting user (root here).
set -euo pipefail

# Debian's daemons and client tools read the config from here; no SLURM_CONF
# juggling is needed by the callers when we write it in the default place.
readonly SLURM_CONF=/etc/slurm/slurm.conf
readonly LOG_DIR=/var/log/slurm
readonly STATE_DIR=/var/spool/slurmctld
readonly SPOOL_DIR=/var/spool/slurmd
readonly CTLD_PID=/run/slurmctld.pid
readonly SLURMD_PID=/run/slurmd.pid
readonly MUNGE_RUN=/run/munge
readonly MUNGE_PID=/run/munge/munged.pid
readonly PARTITION=debug
readonly START_TIMEOUT=${SLURM_START_TIMEOUT:-60}

log() { echo "[slurm/cluster.sh] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

require_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (starts system daemons, writes /etc/slurm)"
}

# --- helpers ---------------------------------------------------------------

# True when the pid file exists and names a live process.
pid_alive() {
    local pidfile=$1 pid
    [[ -s $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

# SIGTERM every process named in the given pid files, wait for all of them
# (in parallel: slurmd alone takes a few seconds to shut down), and SIGKILL
# whatever is still alive after ~10 s.
stop_pidfiles() {
    local pidfile pid i alive
    local -a pids=()
    for pidfile in "$@"; do
        if pid_alive "$pidfile"; then
            pid=$(<"$pidfile")
            log "stopping $(basename "$pidfile" .pid) (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
    done
    for ((i = 0; i < 50; i++)); do
        alive=0
        for pid in "${pids[@]}"; do
            kill -0 "$pid" 2>/dev/null && alive=1
        done
        ((alive)) || break
        sleep 0.2
    done
    for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            log "pid $pid did not exit after SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    rm -f "$@"
}

node_name() { hostname -s; }

# Epoch seconds at which we last launched slurmd (0: not launched by this run).
SLURMD_LAUNCHED_AT=0

# True once the slurmd we launched has registered with slurmctld.  Needed
# because after a restart slurmctld restores the node as IDLE from its state
# file before slurmd has reported in.
slurmd_registered() {
    ((SLURMD_LAUNCHED_AT == 0)) && return 0
    local started
    started=$(scontrol show node "$(node_name)" 2>/dev/null \
        | sed -n 's/.*SlurmdStartTime=\([^ ]*\).*/\1/p')
    [[ -n $started && $started != None ]] || return 1
    (($(date -d "$started" +%s) >= SLURMD_LAUNCHED_AT - 1))
}

# State of our node as sinfo reports it (e.g. "idle", "mixed", "down*", "drained").
node_state() {
    sinfo --noheader --nodes="$(node_name)" --format=%T 2>/dev/null | head -n1
}

# Healthy = all three daemons alive and the node able to take jobs.
healthy() {
    pid_alive "$MUNGE_PID" && pid_alive "$CTLD_PID" && pid_alive "$SLURMD_PID" || return 1
    case "$(node_state)" in
        idle | mixed | allocated | completing) return 0 ;;
        *) return 1 ;;
    esac
}

# --- install ---------------------------------------------------------------

install_packages() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v munged >/dev/null && return 0
    log "installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    local apt_install=(apt-get install -y -q slurm-wlm munge)
    # Only refresh the package lists when they are missing or the install
    # fails: 'apt-get update' is the slow part and usually unnecessary.
    # apt output goes to stderr so that stdout stays clean for callers.
    if compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null && "${apt_install[@]}" >&2; then
        return 0
    fi
    apt-get update -q >&2
    "${apt_install[@]}" >&2
}

# --- munge -----------------------------------------------------------------

start_munge() {
    if pid_alive "$MUNGE_PID"; then
        return 0
    fi
    # The Debian postinst normally creates the key; make one if it is absent.
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating /etc/munge/munge.key"
        install -d -o munge -g munge -m 0700 /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    fi
    # /run is a tmpfs on most systems: the socket directory has to be
    # recreated on every boot, and munged refuses to run as root.
    install -d -o munge -g munge -m 0755 "$MUNGE_RUN"
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
    log "starting munged"
    # --force: start even if a stale socket from a killed munged is left over.
    runuser -u munge -- munged --force
    local i
    for ((i = 0; i < 50; i++)); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "munged did not come up (see /var/log/munge/munged.log)"
}

# --- slurm.conf ------------------------------------------------------------

# Hardware line from slurmd -C (drops the UpTime line).  RealMemory is lowered
# by ~2% because the value may wobble between runs and a node that reports
# less memory than configured is drained by slurmctld ("Low RealMemory").
node_line() {
    local line
    line=$(slurmd -C | grep '^NodeName=')
    [[ $line =~ ^(.*RealMemory=)([0-9]+)(.*)$ ]] || die "unexpected 'slurmd -C' output: $line"
    echo "${BASH_REMATCH[1]}$((BASH_REMATCH[2] * 98 / 100))${BASH_REMATCH[3]}"
}

render_conf() {
    local host
    host=$(node_name)
    cat <<EOF
# Generated by slurm/cluster.sh -- local single-node test cluster. Edits are overwritten.
ClusterName=saepipe
SlurmctldHost=${host}(127.0.0.1)

# Daemons run as root: no service accounts/permission setup needed, and jobs
# run as whoever submits them (root in the test container).
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
# No mail on this machine; avoids "Configured MailProg is invalid" errors.
MailProg=/bin/true

# No cgroups in the containers we target: track processes through /proc and
# do no CPU/memory binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none

StateSaveLocation=${STATE_DIR}
SlurmdSpoolDir=${SPOOL_DIR}
SlurmctldPidFile=${CTLD_PID}
SlurmdPidFile=${SLURMD_PID}
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${LOG_DIR}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info

# Bring the node back automatically after a restart instead of leaving it DOWN.
ReturnToService=2
# Keep finished jobs in slurmctld for an hour: there is no accounting
# database (sacct fails), so 'scontrol show job' is the only source of
# final states and exit codes.
MinJobAge=3600
# Grace period between SIGTERM and SIGKILL (scancel, time limit, pre-emption).
KillWait=10
SlurmdTimeout=60
InactiveLimit=0
Waittime=0

# Schedule individual cores and memory so several small jobs share the node.
# Without DefMemPerCPU each job would claim all node memory and they would
# run one at a time.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
SchedulerType=sched/backfill
# Short periodic intervals (defaults: 60 s main, 30 s backfill) so pending
# jobs start and dependency changes are acted on within a couple of seconds.
SchedulerParameters=sched_interval=2,bf_interval=2,batch_sched_delay=0

# No accounting database.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none

$(node_line) NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=${PARTITION} Nodes=${host} Default=YES MaxTime=INFINITE State=UP
EOF
}

# Write slurm.conf; returns 0 if it changed (daemons must be restarted).
write_conf() {
    local new
    new=$(render_conf)
    if [[ -f $SLURM_CONF ]] && [[ $new == "$(<"$SLURM_CONF")" ]]; then
        return 1
    fi
    log "writing $SLURM_CONF"
    install -d -m 0755 "$(dirname "$SLURM_CONF")"
    printf '%s\n' "$new" >"$SLURM_CONF"
    return 0
}

# --- slurm daemons ---------------------------------------------------------

make_dirs() {
    install -d -m 0755 "$LOG_DIR" "$SPOOL_DIR"
    install -d -m 0700 "$STATE_DIR"
}

start_slurm_daemons() {
    make_dirs
    # Both daemonise themselves and write their pid files.
    if ! pid_alive "$CTLD_PID"; then
        log "starting slurmctld"
        slurmctld || die "slurmctld failed to start (see $LOG_DIR/slurmctld.log)"
    fi
    if ! pid_alive "$SLURMD_PID"; then
        log "starting slurmd"
        SLURMD_LAUNCHED_AT=$(date +%s)
        slurmd || die "slurmd failed to start (see $LOG_DIR/slurmd.log)"
    fi
}

# Wait until the node accepts jobs.  A node left DOWN/DRAINED by an earlier
# unclean stop is resumed once; ReturnToService=2 handles most other cases.
wait_for_idle() {
    local deadline=$((SECONDS + START_TIMEOUT)) state resumed=0
    while ((SECONDS < deadline)); do
        state=$(node_state || true)
        case "$state" in
            idle | mixed | allocated | completing)
                slurmd_registered && return 0 ;;
            down* | drain* | fail*)
                if ((resumed == 0)) && pid_alive "$SLURMD_PID"; then
                    log "node is '$state'; resuming it"
                    scontrol update NodeName="$(node_name)" State=RESUME 2>/dev/null || true
                    resumed=1
                fi ;;
        esac
        pid_alive "$CTLD_PID" || die "slurmctld exited (see $LOG_DIR/slurmctld.log)"
        pid_alive "$SLURMD_PID" || die "slurmd exited (see $LOG_DIR/slurmd.log)"
        sleep 0.5
    done
    sinfo >&2 || true
    die "node did not become idle within ${START_TIMEOUT}s (state: '${state:-unknown}'); see $LOG_DIR/"
}

stop_slurm_daemons() {
    stop_pidfiles "$SLURMD_PID" "$CTLD_PID"
}

# --- commands --------------------------------------------------------------

cmd_start() {
    require_root
    local t0=$SECONDS
    install_packages
    if write_conf; then
        # New or changed config: make sure no daemon runs with the old one.
        stop_slurm_daemons
    elif healthy; then
        log "already running"
        return 0
    fi
    start_munge
    start_slurm_daemons
    wait_for_idle
    log "cluster up in $((SECONDS - t0))s: partition '$PARTITION', node '$(node_name)'"
}

cmd_stop() {
    require_root
    # Note: slurmstepd processes of still-running jobs are not killed here;
    # they reattach when slurmd starts again (scancel jobs first if needed).
    stop_pidfiles "$SLURMD_PID" "$CTLD_PID" "$MUNGE_PID"
}

cmd_status() {
    if healthy; then
        sinfo
        return 0
    fi
    # Without slurmctld, sinfo only retries for ~10 s before failing.
    pid_alive "$CTLD_PID" && { sinfo 2>&1 || true; }
    log "cluster is down or unhealthy" \
        "(munged:$(pid_alive "$MUNGE_PID" && echo up || echo down)" \
        "slurmctld:$(pid_alive "$CTLD_PID" && echo up || echo down)" \
        "slurmd:$(pid_alive "$SLURMD_PID" && echo up || echo down))"
    return 1
}

main() {
    case "${1:-}" in
        start) cmd_start ;;
        stop) cmd_stop ;;
        status) cmd_status ;;
        restart) cmd_stop; cmd_start ;;
        *) echo "usage: $0 {start|stop|status|restart}" >&2; exit 2 ;;
    esac
}

main "$@"
