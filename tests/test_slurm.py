"""The micro grid through a real SLURM cluster: every job but `all` submitted with sbatch, via profiles/slurm.

tools/slurm/start.sh starts a single-node cluster on this machine (root; it installs slurm-wlm and munge when they
are missing), tools/slurm/stop.sh stops it. Runs only with JOULEBENCH_SLURM=1 (`make test-slurm`).
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from .conftest import ROOT

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(
        os.environ.get("JOULEBENCH_SLURM") != "1",
        reason="needs JOULEBENCH_SLURM=1 (make test-slurm): starts a single-node SLURM cluster as root",
    ),
]

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
TOOLS = ROOT / "tools" / "slurm"
SKIP = 77  # start.sh: SLURM cannot be had on this machine
LOCAL_RULES = {"all", "run_status"}  # run on the submitting node (localrules)
# profiles/slurm groups: one sbatch job each runs both of its rules (the micro grid has one dataset).
GROUPS = {"data": {"rca_tickets", "prepare_data"}, "summary": {"aggregate", "report"}}
# The local cluster has no accounting storage: no account, and job states from squeue instead of sacct.
LOCAL_CLUSTER = ["--slurm-no-account", "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks",
                 "2", "--jobs", "2"]  # fmt: skip
SUBMITTED = re.compile(r"Job (\S+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")


@pytest.fixture(scope="module")
def slurm_conf(tmp_path_factory) -> Path:
    """A running single-node cluster for the module; its slurm.conf. Stopped, and its folder removed, afterwards."""
    state = tmp_path_factory.mktemp("slurm") / "cluster"
    started = subprocess.run([str(TOOLS / "start.sh"), str(state)], capture_output=True, text=True, timeout=1200)
    if started.returncode == SKIP:
        reason = (started.stderr.strip().splitlines() or ["tools/slurm/start.sh exited 77"])[-1]
        pytest.skip(f"no SLURM cluster here: {reason}")
    try:
        assert started.returncode == 0, started.stderr[-5000:]
        conf = Path(started.stdout.strip().removeprefix("export SLURM_CONF="))
        assert conf.is_file(), started.stdout
        yield conf
    finally:
        stopped = subprocess.run([str(TOOLS / "stop.sh"), str(state)], capture_output=True, text=True, timeout=300)
        assert stopped.returncode == 0 and not state.exists(), stopped.stderr


def test_micro_grid_runs_through_sbatch(slurm_conf, tmp_path):
    env = {**os.environ, "SLURM_CONF": str(slurm_conf)}
    command = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
               "--configfile", str(ROOT / "configs" / "micro.yaml"),
               "--profile", str(ROOT / "profiles" / "slurm"), *LOCAL_CLUSTER]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=2400, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]

    with open(tmp_path / "results" / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and all(row["status"] == "ok" for row in rows), rows
    assert (tmp_path / "results" / "report.pdf").stat().st_size > 0

    # Every job Snakemake ran, but the local ones, went through sbatch, a group's jobs in one ...
    # A group job's log folder is group_<group>_<its rules, sorted>: it names what ran in that one submission.
    group_folders = {f"group_{group}_{'_'.join(sorted(rules))}": group for group, rules in GROUPS.items()}
    folders = {int(m.group(2)): re.search(r"/((?:rule|group)_\w+)/", m.group(3)).group(1)
               for m in SUBMITTED.finditer(output)}  # fmt: skip
    submitted = {job: group_folders.get(folder, folder.removeprefix("rule_")) for job, folder in folders.items()}
    steps = int(re.findall(r"(\d+) of (\d+) steps \(100%\) done", output)[-1][1])
    per_rule = Counter(submitted.values())
    in_groups = sum(len(rules) - 1 for rules in GROUPS.values())
    assert len(submitted) == steps - len(LOCAL_RULES) - in_groups >= 10, (per_rule, steps)
    assert per_rule["evaluate"] == len(rows) and per_rule["finetune"] == 4, per_rule
    assert per_rule["data"] == per_rule["summary"] == 1, per_rule
    assert per_rule["finalists"] == 1 and per_rule["probe_reference"] >= 3, per_rule
    assert set(per_rule) == {"data", "class_centroids", "embedded_model", "finetune", "evaluate", "probe_reference",
                             "select_for_pruning", "finalists", "summary"}, per_rule  # fmt: skip

    # ... and slurmctld accepted each one and saw it finish.
    controller_log = (slurm_conf.parent / "slurmctld.log").read_text()
    accepted = {int(i) for i in re.findall(r"_slurm_rpc_submit_batch_job: JobId=(\d+)", controller_log)}
    finished = {int(i) for i in re.findall(r"_job_complete: JobId=(\d+) done", controller_log)}
    assert set(submitted) <= accepted and set(submitted) <= finished, (sorted(submitted), controller_log[-3000:])
