#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for tests/workflow/test_slurm.py (docs/DESIGN.md, "A real
# SLURM on one machine"). Needs root; no systemd.
#
#   tests/workflow/slurm/cluster.sh start    install slurm-wlm + munge with apt if missing, write
#                                   /etc/slurm/slurm.conf, start munged, slurmctld and slurmd,
#                                   wait until `srun -N1 hostname` answers
#   tests/workflow/slurm/cluster.sh stop     stop the daemons it started, by their pid files
#   tests/workflow/slurm/cluster.sh status   exit 0 when `srun -N1 hostname` answers
#
# Exit status: 0 done; 1 failed; 2 usage; 3 this machine cannot run the cluster (not root, or
# SLURM absent and apt-get unavailable or failing); the reason goes to stderr.
# State, logs and pid files live in $SLURM_TEST_DIR (default /var/lib/successor-heads-slurm).
# An /etc/slurm/slurm.conf that this script did not write is never overwritten.
set -uo pipefail

DIR=${SLURM_TEST_DIR:-/var/lib/successor-heads-slurm}
CONF=/etc/slurm/slurm.conf
# the first line of the slurm.conf it writes; matched by prefix, so a file written by an earlier
# copy of this script (another checkout or path) is recognised as ours too
MARKER="# written by successor-heads test cluster.sh"
MARKER_PREFIX="# written by successor-heads "
HOST=$(hostname -s)
MUNGE_PID=/run/munge/munged.pid

say() { echo "cluster.sh: $*" >&2; }
cannot() { say "cannot run a SLURM cluster here: $*"; exit 3; }
fail() { say "FAILED: $*"; for f in "$DIR"/slurmctld.log "$DIR"/slurmd.log /var/log/munge/munged.log; do
           [ -f "$f" ] && { say "--- tail of $f"; tail -n 20 "$f" >&2; }; done; exit 1; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

answers() { timeout 20 srun -N1 -t 1 hostname >/dev/null 2>&1; }

install_packages() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
        && command -v srun >/dev/null && return 0
    command -v apt-get >/dev/null || cannot "slurm-wlm/munge are not installed and apt-get is absent"
    say "installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends slurm-wlm munge; } \
        >"${TMPDIR:-/tmp}/successor-heads-slurm-apt.log" 2>&1 \
        || { tail -n 20 "${TMPDIR:-/tmp}/successor-heads-slurm-apt.log" >&2
             cannot "apt-get install slurm-wlm munge failed (no network or no Debian archive?)"; }
}

start_munge() {
    mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none || fail "cannot write munge key"
    fi
    chown munge:munge /etc/munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
    chmod 700 /etc/munge /var/log/munge; chmod 400 /etc/munge/munge.key
    chmod 755 /run/munge; chmod 711 /var/lib/munge
    alive "$MUNGE_PID" && return 0  # someone else's munged: use it, and leave it running
    runuser -u munge -- munged --pid-file="$MUNGE_PID" || fail "munged did not start"
    mkdir -p "$DIR"; touch "$DIR/munged.ours"
    for _ in $(seq 50); do munge -n </dev/null | unmunge >/dev/null 2>&1 && return 0; sleep 0.2; done
    fail "munge does not answer"
}

check_conf() {
    if [ -f "$CONF" ] && ! head -1 "$CONF" | grep -qF "$MARKER_PREFIX"; then
        cannot "$CONF exists and was not written by this script (a real cluster?); not touching it"
    fi
}

write_conf() {
    local mem_mb cpus
    mem_mb=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
    cpus=$(nproc)
    mkdir -p /etc/slurm "$DIR/state" "$DIR/spool"
    cat >"$CONF" <<EOF
$MARKER
# A single-node test cluster: accounting off (so no sacct: use squeue, reliable because of
# MinJobAge), no cgroups, no systemd.
ClusterName=successorheads
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
MinJobAge=600
DefMemPerCPU=1000
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
    [ "$(id -u)" = 0 ] || cannot "not root (the daemons and /etc/slurm need root)"
    if alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid" && answers; then
        say "already running"; return 0
    fi
    install_packages
    check_conf
    start_munge
    write_conf
    alive "$DIR/slurmctld.pid" || slurmctld -i || fail "slurmctld did not start"  # -i: ignore old state
    alive "$DIR/slurmd.pid" || slurmd -N "$HOST" || fail "slurmd did not start"
    local t0=$SECONDS
    until answers; do
        [ $((SECONDS - t0)) -lt 90 ] || fail "srun -N1 hostname does not answer after 90 s"
        scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
        sleep 1
    done
    say "up in $((SECONDS - t0)) s after the daemons started: $(sinfo -h -o '%P %D %t %c cpus %m MB' | head -1)"
}

stop_one() {  # pid file, name
    alive "$1" || { rm -f "$1"; return 0; }
    local pid; pid=$(cat "$1")
    kill "$pid" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || { rm -f "$1"; return 0; }; sleep 0.1; done
    say "$2 (pid $pid) ignores SIGTERM; killing it"
    kill -9 "$pid" 2>/dev/null; rm -f "$1"
}

stop() {
    stop_one "$DIR/slurmd.pid" slurmd
    stop_one "$DIR/slurmctld.pid" slurmctld
    if [ -f "$DIR/munged.ours" ]; then stop_one "$MUNGE_PID" munged; rm -f "$DIR/munged.ours"; fi
    say "stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) answers && { sinfo -h -o '%P %D %t' ; exit 0; }; exit 1 ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
