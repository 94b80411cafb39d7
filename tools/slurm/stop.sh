#!/usr/bin/env bash
# Stop the single-node SLURM cluster of tools/slurm/start.sh and remove its state folder.
#
#   tools/slurm/stop.sh [STATE_DIR]       # default: $JOULEBENCH_SLURM_DIR or ${TMPDIR:-/tmp}/joulebench-slurm
#
# Cancels the cluster's jobs, then stops exactly the daemons listed in STATE_DIR/pids (slurmd, slurmctld and munged,
# the last only when start.sh started it), never anything found by name. A recorded pid whose command line no longer
# names its daemon is left alone (the pid was reused). Safe to run twice, and on a folder that does not exist.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

STATE_DIR="${1:-${JOULEBENCH_SLURM_DIR:-${TMPDIR:-/tmp}/joulebench-slurm}}"
MARKER="$STATE_DIR/.joulebench-slurm"
PIDS="$STATE_DIR/pids"
CONF="$STATE_DIR/slurm.conf"

say() { echo "slurm: $*" >&2; }

if [ ! -e "$STATE_DIR" ]; then
    say "nothing to stop ($STATE_DIR does not exist)"
    exit 0
fi
if [ ! -f "$MARKER" ]; then
    say "error: $STATE_DIR was not made by tools/slurm/start.sh; leaving it alone"
    exit 1
fi

ours() {
    local cmdline
    cmdline="$(tr '\0' ' ' 2>/dev/null <"/proc/$2/cmdline")" || return 1
    [[ "$cmdline" == *"$1"* ]]
}

names=()
pids=()
if [ -f "$PIDS" ]; then
    while read -r name pid; do
        [ -n "${pid:-}" ] || continue
        names+=("$name")
        pids+=("$pid")
    done <"$PIDS"
fi

ctld_up=0
for i in "${!names[@]}"; do
    [ "${names[$i]}" = slurmctld ] && ours slurmctld "${pids[$i]}" && ctld_up=1
done

# Jobs first, while slurmctld and slurmd can still end them cleanly (a failed test may leave some behind).
if [ "$ctld_up" = 1 ] && [ -f "$CONF" ]; then
    export SLURM_CONF="$CONF"
    jobs="$(timeout 10 squeue -h -t PENDING,RUNNING,SUSPENDED,COMPLETING -o %i 2>/dev/null || true)"
    if [ -n "$jobs" ]; then
        say "cancelling jobs: $(echo "$jobs" | tr '\n' ' ')"
        # shellcheck disable=SC2086
        timeout 10 scancel $jobs 2>/dev/null || true
        for _ in $(seq 40); do
            [ -z "$(timeout 10 squeue -h -o %i 2>/dev/null -t PENDING,RUNNING,SUSPENDED,COMPLETING || true)" ] && break
            sleep 0.5
        done
    fi
fi

# Then the daemons, last started first: slurmd, slurmctld, munged. TERM, up to 15 s, then KILL.
for ((i = ${#names[@]} - 1; i >= 0; i--)); do
    name="${names[$i]}"
    pid="${pids[$i]}"
    if ! ours "$name" "$pid"; then
        say "$name (pid $pid) is not running"
        continue
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 30); do
        ours "$name" "$pid" || break
        sleep 0.5
    done
    if ours "$name" "$pid"; then
        say "$name (pid $pid) ignored TERM for 15 s: killing it"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    say "stopped $name (pid $pid)"
done

# The link our configless slurmd made (a later slurmd would replace it, but leave nothing pointing at nothing).
if [ -L /run/slurm/conf ] && [[ "$(readlink -f /run/slurm/conf)" == "$(readlink -f "$STATE_DIR")"/* ]]; then
    rm -f /run/slurm/conf
fi
rm -rf -- "$STATE_DIR"
say "removed $STATE_DIR"
