#!/usr/bin/env bash
# Start a throw-away single-node SLURM cluster on this machine (for tests/test_slurm.py and `make test-slurm`).
#
#   tools/slurm/start.sh [STATE_DIR]      # default: $JOULEBENCH_SLURM_DIR or ${TMPDIR:-/tmp}/joulebench-slurm
#   eval "$(tools/slurm/start.sh)"        # stdout is one line: export SLURM_CONF=STATE_DIR/slurm.conf
#   tools/slurm/stop.sh [STATE_DIR]       # stops exactly the daemons started here and removes STATE_DIR
#
# Installs slurm-wlm and munge with apt-get when they are missing, creates /etc/munge/munge.key when absent, starts
# munged (as the munge user; an already working munged is reused and left alone), slurmctld and slurmd on loopback
# with a slurm.conf generated from slurm.conf.in (one node named `hostname -s`, CPUs = nproc, RealMemory = 90 % of
# MemTotal, one default partition), waits until sinfo shows the node idle, and writes the pids of the daemons it
# started to STATE_DIR/pids ("name pid" per line). Running it again while the cluster is up changes nothing.
# Nothing is written to /etc/slurm: clients on this machine find the config through SLURM_CONF, and srun inside a
# job (which does not get SLURM_CONF) through /run/slurm/conf, the link slurmd makes in configless mode.
#
# Exit status: 0 the cluster is up; 77 SLURM cannot be had here (not root, no apt-get, the packages cannot be
# installed, or this machine already runs another SLURM); 1 anything else (the daemons' logs are printed, the partial
# cluster is stopped).
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE_DIR="${1:-${JOULEBENCH_SLURM_DIR:-${TMPDIR:-/tmp}/joulebench-slurm}}"
PARTITION="${JOULEBENCH_SLURM_PARTITION:-debug}"
MARKER="$STATE_DIR/.joulebench-slurm"
PIDS="$STATE_DIR/pids"
CONF="$STATE_DIR/slurm.conf"
NODE="$(hostname -s)"

say() { echo "slurm: $*" >&2; }
skip() { echo "slurm: skipped: $*" >&2; exit 77; }
die() { echo "slurm: error: $*" >&2; exit 1; }

# The daemon behind a recorded pid is ours only while its command line still names it (guards against pid reuse).
ours() {
    local cmdline
    cmdline="$(tr '\0' ' ' 2>/dev/null <"/proc/$2/cmdline")" || return 1
    [[ "$cmdline" == *"$1"* ]]
}

cluster_answers() {
    local state
    state="$(SLURM_CONF="$CONF" timeout 10 sinfo -h -n "$NODE" -o %T 2>/dev/null)" || return 1
    [[ "$state" == idle || "$state" == mixed || "$state" == allocated ]]
}

[ "$(id -u)" -eq 0 ] || skip "tools/slurm/start.sh must run as root (it starts munged, slurmctld and slurmd)"

# --- 1. packages ----------------------------------------------------------------------------------------------------
have_packages() {
    local tool
    for tool in slurmctld slurmd sinfo sbatch squeue scancel munged munge unmunge; do
        command -v "$tool" >/dev/null 2>&1 || return 1
    done
}
if ! have_packages; then
    command -v apt-get >/dev/null 2>&1 || skip "slurm-wlm/munge are not installed and there is no apt-get"
    say "installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    install_log="$(mktemp)"
    if ! apt-get install -y -q --no-install-recommends slurm-wlm munge >"$install_log" 2>&1; then
        apt-get update -q >>"$install_log" 2>&1 || true
        if ! apt-get install -y -q --no-install-recommends slurm-wlm munge >>"$install_log" 2>&1; then
            reason="$(grep -E '^(E|W):' "$install_log" | head -n 1)"
            rm -f "$install_log"
            skip "apt-get could not install slurm-wlm munge${reason:+ ($reason)}"
        fi
    fi
    rm -f "$install_log"
    have_packages || skip "slurm-wlm/munge installed but their commands are missing"
fi

# --- 2. no other SLURM on this machine ------------------------------------------------------------------------------
# srun inside a job reads /etc/slurm/slurm.conf, else /run/slurm/conf (the link our configless slurmd makes), and
# never SLURM_CONF (Snakemake's job step plugin drops it): both must be free or ours.
[ -e /etc/slurm/slurm.conf ] && skip "/etc/slurm/slurm.conf exists: this machine is already a SLURM node"
RUN_CONF=/run/slurm/conf
if [ -L "$RUN_CONF" ] && [ ! -e "$RUN_CONF" ]; then
    rm -f "$RUN_CONF"  # left behind by a slurmd that is gone
elif [ -e "$RUN_CONF" ] && [[ "$(readlink -f "$RUN_CONF")" != "$(readlink -f "$STATE_DIR")"/* ]]; then
    skip "another slurmd serves $RUN_CONF -> $(readlink -f "$RUN_CONF") on this machine"
fi

# --- 3. an existing state folder --------------------------------------------------------------------------------------
if [ -e "$STATE_DIR" ]; then
    [ -f "$MARKER" ] || die "$STATE_DIR exists and was not made by tools/slurm/start.sh; pick another folder"
    up=1
    if [ -s "$PIDS" ]; then
        while read -r name pid; do ours "$name" "$pid" || up=0; done <"$PIDS"
    else
        up=0
    fi
    if [ "$up" = 1 ] && cluster_answers; then
        say "already running (state in $STATE_DIR)"
        echo "export SLURM_CONF=$CONF"
        exit 0
    fi
    say "stale state in $STATE_DIR: cleaning it up first"
    "$HERE/stop.sh" "$STATE_DIR" >&2
fi

mkdir -p "$STATE_DIR/state" "$STATE_DIR/spool"
touch "$MARKER"
: >"$PIDS"

failed() {
    local status=$?
    [ "$status" -eq 0 ] && return
    say "start failed (status $status); the daemons' last log lines:"
    local log
    for log in "$STATE_DIR"/*.log "$STATE_DIR"/*.out; do
        [ -f "$log" ] && { echo "--- $log" >&2; tail -n 20 "$log" >&2; }
    done
    "$HERE/stop.sh" "$STATE_DIR" >&2 || true
    exit 1
}
trap failed EXIT

# Start a daemon in its own session, detached from our stdin/stdout (a caller reading our output must not wait for
# it), and record its pid. A background child of a non-interactive shell is no process-group leader, so setsid (and
# setpriv) exec in place: $! is the daemon's own pid.
launch() {
    local name="$1" out="$2"
    shift 2
    setsid "$@" </dev/null >"$out" 2>&1 &
    echo "$name $!" >>"$PIDS"
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local seconds="$1" what="$2"
    shift 2
    local i
    for ((i = 0; i < seconds * 2; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    die "timed out after ${seconds}s waiting for $what"
}

# --- 4. munge ---------------------------------------------------------------------------------------------------------
munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
if munge_works; then
    say "reusing the munged already running on this machine"
else
    id munge >/dev/null 2>&1 || die "the munge package did not create the munge user"
    install -d -o munge -g munge -m 0700 /etc/munge
    if [ ! -s /etc/munge/munge.key ]; then
        say "creating /etc/munge/munge.key"
        (umask 077 && dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none)
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    fi
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/log/munge
    install -d -o munge -g munge -m 0711 /var/lib/munge
    launch munged "$STATE_DIR/munged.out" setpriv --reuid=munge --regid=munge --init-groups \
        /usr/sbin/munged --foreground
    wait_for 20 "munged to answer" munge_works
fi

# --- 5. slurm.conf ----------------------------------------------------------------------------------------------------
port_free() { [ -z "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }
free_port() {
    local port="$1"
    while ! port_free "$port"; do port=$((port + 1)); done
    echo "$port"
}
CTLD_PORT="$(free_port "${JOULEBENCH_SLURM_PORT:-6817}")"
SLURMD_PORT="$(free_port $((CTLD_PORT + 1)))"
CPUS="$(nproc)"
MEM_MB="$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.9 }' /proc/meminfo)"
sed -e "s|@STATE_DIR@|$STATE_DIR|g" -e "s|@NODE@|$NODE|g" -e "s|@CPUS@|$CPUS|g" -e "s|@MEM_MB@|$MEM_MB|g" \
    -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" -e "s|@PARTITION@|$PARTITION|g" \
    "$HERE/slurm.conf.in" >"$CONF"

# --- 6. slurmctld and slurmd ------------------------------------------------------------------------------------------
export SLURM_CONF="$CONF"
launch slurmctld "$STATE_DIR/slurmctld.out" slurmctld -D -c -f "$CONF"
wait_for 30 "slurmctld to answer" timeout 5 scontrol ping
launch slurmd "$STATE_DIR/slurmd.out" slurmd -D --conf-server "127.0.0.1:$CTLD_PORT"
wait_for 60 "node $NODE to be idle in sinfo" cluster_answers
wait_for 10 "slurmd to link $RUN_CONF" test -e "$RUN_CONF/slurm.conf"

while read -r name pid; do ours "$name" "$pid" || die "$name (pid $pid) is not running"; done <"$PIDS"
trap - EXIT
say "up: node $NODE ($CPUS CPUs, $MEM_MB MB), partition $PARTITION, slurmctld port $CTLD_PORT, state in $STATE_DIR"
echo "export SLURM_CONF=$CONF"
