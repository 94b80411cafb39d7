"""Benchmarks of the harness itself, in one run on this machine (issue 9); writes results/bench.json and a table.

P5  the default config from scratch (`--profile profiles/default`, in a scratch working directory), wall time;
P1  harness overhead of that run: the share of the machine's core-time not spent inside training or generation loops,
    1 − Σ(loop s × threads) / (wall s × cores). With one core and one thread per job this is the plain
    (wall − Σ loops) / wall; jobs run side by side on more cores, so each core's time is counted once;
P2  the same command again, nothing changed (it must schedule nothing);
P3  a dry run (`-n`) of a grid of about 1,000 evaluated cells;
P4  generation throughput as the harness measures it (pinned tokens, energy meters sampling, timed windows) against a
    bare `model.generate` loop on the same model, batch, prompts and token counts, alternated, medians;
P5b each registered metric's time per 1,000 (prediction, reference) pairs of the run's own predictions, its model
    (if any) loaded once beforehand; the load is reported beside it.

Usage: python benchmarks/harness.py [--config config.yaml] [--only P1,P2,...] [--readme README.md]
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from joulebench.io import atomic_write_json, atomic_write_text
from joulebench.jobs import cpu_model, process_started

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
TARGETS = {  # (figure in bench.json, comparison, target)
    "P1": ("overhead", "<=", 0.10),
    "P2": ("wall_s", "<=", 3.0),
    "P3": ("wall_s", "<=", 10.0),
    "P4": ("ratio", ">=", 0.95),
    "P5": ("wall_s", "<=", 480.0),
}
README_BEGIN, README_END = "<!-- bench:begin -->", "<!-- bench:end -->"


def snakemake(workdir: Path, config: Path, *extra: str) -> tuple[float, str]:
    """Run the workflow of this checkout in `workdir` with `config` as the whole config; (wall s, its output)."""
    command = [*SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
               "--configfile", str(config), "--profile", str(ROOT / "profiles" / "default"), *extra]  # fmt: skip
    began = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        sys.exit(f"benchmark: {' '.join(command[2:])} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return wall, done.stdout + done.stderr


def records(workdir: Path) -> list[tuple[str, dict[str, Any]]]:
    """(rule, record) of every measured job of a run."""
    found = [("embedded_model", p) for p in workdir.glob("results/models/*/*/pretrain.json")]
    found += [("finetune", p) for p in workdir.glob("results/finetune/**/train.json")]
    found += [("evaluate", p) for p in workdir.glob("results/eval/**/eval.json")]
    found += [("probe_reference", p) for p in workdir.glob("results/probes/**/probe.json")]
    found += [("finalists", p) for p in workdir.glob("results/finalists/*/finalists.json")]
    return [(rule, json.loads(path.read_text())) for rule, path in found]


GENERATING_RULES = ("evaluate", "probe_reference")


def loop_seconds(rule: str, record: dict[str, Any]) -> float:
    if rule == "finalists":
        return float(record.get("generation_loop_s", 0.0))
    result = record.get("result", {})
    return float(result.get("generation_loop_s" if rule in GENERATING_RULES else "loop_s", 0.0))


def overlapping_spans(found: list[tuple[str, dict[str, Any]]]) -> int:
    """How many measured jobs held the machine's measurement lock while an earlier one still held it (from each
    record's `provenance.measurement.exclusive` span): 0 when no two jobs' measured windows overlapped."""
    spans = sorted(
        (float(held["held_from_utc"]), float(held["held_until_utc"]))
        for _, record in found
        if (held := record.get("provenance", {}).get("measurement", {}).get("exclusive", {})).get("held_from_utc")
        is not None
    )
    overlaps, until = 0, float("-inf")
    for start, end in spans:
        overlaps += start < until
        until = max(until, end)
    return overlaps


def techniques_shown(workdir: Path) -> dict[str, bool]:
    """Whether the run's summary and report show each technique the default must show (issue 19)."""
    with (workdir / "results" / "summary.csv").open() as lines:
        rows = list(csv.DictReader(lines))
    report = (workdir / "results" / "report.html").read_text()
    tuned = [r for r in rows if r.get("is_reference") not in ("True", "true", "1")]
    variants = {r.get("pruning", "") for r in tuned}  # the variants' labels: "magnitude 30%", "wanda 2:4", ...
    return {
        "bits 4/8/16/32": {r.get("bits") for r in tuned} >= {"4", "8", "16", "32"},
        "two epoch values": len({r.get("epochs") for r in tuned}) >= 2,
        "magnitude unstructured": any(re.fullmatch(r"magnitude \d+%( \(global\))?", v) for v in variants),
        "magnitude 2:4": "magnitude 2:4" in variants,
        "wanda": any(v.startswith("wanda ") for v in variants),
        "sparsegpt": any(v.startswith("sparsegpt ") for v in variants),
        "mixed-precision sparse training": any(r.get("training", "").split("_")[0] != "32-true"
                                               and not r.get("training", "").endswith("_dense") for r in tuned),
        "early exit": any(v.startswith("early exit ") for v in variants),
        "lifecycle table": 'class="lifecycle' in report,
        "paired finalists": 'class="finalists"' in report,
    }  # fmt: skip


def run_default(config: Path, workdir: Path) -> dict[str, Any]:
    """P5 and P1: the config from scratch, then where the machine's core-time went."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    wall, output = snakemake(workdir, config, "--cores", "all")
    cores = os.cpu_count() or 1
    per_rule: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    found = records(workdir)
    for rule, record in found:
        provenance = record.get("provenance", {})
        threads = int(provenance.get("threads", 1))
        row = per_rule[rule]
        row["jobs"] += 1
        row["loop_core_s"] += loop_seconds(rule, record) * threads
        row["job_core_s"] += float(provenance.get("process_seconds", provenance.get("job_seconds", 0.0))) * threads
        row["startup_s"] += float(provenance.get("process_seconds", 0.0)) - float(provenance.get("job_seconds", 0.0))
        row["idle_baseline_s"] += float(provenance.get("measurement", {}).get("idle_seconds", 0.0))
        row["metrics_s"] += float(record.get("result", {}).get("metrics_s", 0.0))
    loops = sum(row["loop_core_s"] for row in per_rule.values())
    measured_jobs = sum(row["job_core_s"] for row in per_rule.values())
    core_s = wall * cores
    jobs = re.findall(r"(\d+) of (\d+) steps \(100%\) done", output)
    return {
        "P5": {"wall_s": wall, "jobs": int(jobs[-1][1]) if jobs else None, "cores": cores,
               "measured_jobs": len(found), "overlapping_measured_jobs": overlapping_spans(found),
               "techniques_shown": techniques_shown(workdir)},
        "P1": {
            "overhead": 1 - loops / core_s,
            "core_s": core_s,
            "loop_core_s": loops,
            "measured_jobs_outside_loops_core_s": measured_jobs - loops,
            "rest_core_s": core_s - measured_jobs,  # small jobs, Snakemake itself, cores left idle
            "per_rule": {rule: dict(row) for rule, row in sorted(per_rule.items())},
        },
    }


def rerun(config: Path, workdir: Path) -> dict[str, Any]:
    """P2: the same command once more; it must find nothing to do."""
    wall, output = snakemake(workdir, config, "--cores", "all")
    if "Nothing to be done" not in output:
        sys.exit(f"benchmark: the re-run with nothing changed scheduled jobs:\n{output[-3000:]}")
    return {"wall_s": wall}


def thousand_cell_config(config: dict[str, Any]) -> dict[str, Any]:
    """The default config widened to 4 bits × 5 epochs × 5 training variants × (unpruned + 9 pruning settings):
    100 fine-tuned cells, 1,000 evaluated ones, and the reference."""
    grid = copy.deepcopy(config)
    grid.update(
        bits=[4, 8, 16, 32],
        epochs=[1, 2, 3, 4, 5],
        training_variants=[
            {"precision": "32-true"}, {"precision": "bf16-mixed"}, {"precision": "16-mixed"},
            {"precision": "bf16-mixed", "sparsity": {"method": "gradual", "target": 0.5}},
            {"precision": "32-true", "sparsity": {"method": "gradual", "target": 0.3}},
        ],
        early_exit=[],
        merge=[],
    )  # fmt: skip
    grid["pruning"] = {
        **config["pruning"],
        "select": "all",
        "methods": [
            *({"method": "magnitude", "ratio": ratio} for ratio in (0.1, 0.2, 0.3, 0.4, 0.5)),
            {"method": "magnitude", "n": 2, "m": 4}, {"method": "magnitude", "n": 4, "m": 8},
            {"method": "wanda", "n": 2, "m": 4}, {"method": "sparsegpt", "n": 2, "m": 4},
        ],
    }  # fmt: skip
    return grid


def dry_run(config: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """P3: `snakemake -n` of the 1,000-cell grid in an empty working directory."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    grid_file = workdir / "config.yaml"
    grid_file.write_text(yaml.safe_dump(thousand_cell_config(config), sort_keys=False))
    wall, output = snakemake(workdir, grid_file, "-n", "--cores", "all")
    counts = {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)\s*$", output, re.MULTILINE)}
    return {"wall_s": wall, "evaluated_cells": counts.get("evaluate"), "jobs": counts.get("total")}


def generation_throughput(config: dict[str, Any], workdir: Path, rounds: int) -> dict[str, Any]:
    """P4 on the run's own embedded model (float32) and test prompts, with the threads an evaluation job gets: every
    core when measured jobs run alone (the default), one when they may overlap."""
    import torch

    from joulebench.data import read_examples
    from joulebench.energy import EnergySettings, open_monitor
    from joulebench.models import Precision, load_model, load_tokenizer, offline_environment
    from joulebench.serving import GenerationSettings, Server, measure_serving

    offline_environment()
    torch.set_num_threads(1 if config["energy"].get("allow_overlap") else os.cpu_count() or 1)
    dataset = next(iter(config["datasets"]))
    model_name = next(iter(config["models"]))
    model_dir = str(workdir / "results" / "models" / dataset / model_name / "base")
    if not Path(model_dir).is_dir():
        sys.exit(f"benchmark: P4 needs the default run's model at {model_dir}: run P5 first")
    prompts = [e.prompt for e in read_examples(workdir / "results" / "data" / dataset / "test.jsonl")]
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir, Precision(32)).eval()
    generation = GenerationSettings.from_config(config["generation"])
    max_prompt = int(config["training"]["max_prompt_tokens"])
    measurement = EnergySettings(warmup=1, repeats=3)

    @torch.no_grad()
    def bare() -> tuple[int, float]:
        tokens, seconds = 0, 0.0
        for start in range(0, len(prompts), generation.batch_size):
            batch = [(tokenizer.bos_token or "") + p for p in prompts[start : start + generation.batch_size]]
            encoded = tokenizer(batch, return_tensors="pt", padding=True, truncation=True,
                                max_length=max_prompt + 1, add_special_tokens=False)  # fmt: skip
            began = time.perf_counter()
            output = model.generate(**encoded, do_sample=False, max_new_tokens=generation.max_new_tokens,
                                    min_new_tokens=generation.max_new_tokens, pad_token_id=tokenizer.pad_token_id)
            seconds += time.perf_counter() - began
            tokens += output[:, encoded["input_ids"].shape[1] :].numel()
        return tokens, seconds

    tokenizer.padding_side = tokenizer.truncation_side = "left"
    bare()  # warm-up
    harness_rates, bare_rates = [], []
    monitor = open_monitor(config["energy"])
    server = Server(model, tokenizer, prompts, generation, max_prompt)
    with monitor:
        for _ in range(rounds):
            serving = measure_serving(monitor, {"p4": server}, measurement.warmup, measurement.repeats, name="p4")
            harness_rates += [p.tokens_per_s for p in serving.rounds.passes["p4"]]
            for _ in range(measurement.repeats):
                tokens, seconds = bare()
                bare_rates.append(tokens / seconds)
    harness, plain = statistics.median(harness_rates), statistics.median(bare_rates)
    return {"ratio": harness / plain, "harness_tokens_per_s": harness, "bare_tokens_per_s": plain,
            "passes_each": len(bare_rates), "prompts": len(prompts), "batch_size": generation.batch_size,
            "new_tokens": generation.max_new_tokens, "meters": [m.name for m in monitor.meters]}  # fmt: skip


def metric_times(config: dict[str, Any], workdir: Path, pairs: int) -> dict[str, Any]:
    """Seconds per 1,000 pairs for each registered metric, scored as the evaluation jobs score them: one cell's
    answers at a time (the run's own, cell after cell until `pairs`), one thread, no embedding remembered between
    cells; each metric's model is loaded by a first call beforehand."""
    import torch

    from joulebench.metrics import METRICS, MetricSettings, forget_embeddings

    torch.set_num_threads(1)
    cells = [[json.loads(line) for line in path.read_text().splitlines() if line.strip()]
             for path in sorted(workdir.glob("results/eval/**/predictions.jsonl"))]  # fmt: skip
    cells = [lines for lines in cells if lines]
    if not cells:
        sys.exit(f"benchmark: metric times need the default run's predictions under {workdir}: run P5 first")
    chunks, taken = [], 0
    while taken < pairs:
        lines = cells[len(chunks) % len(cells)][: pairs - taken]
        chunks.append(([x["prediction"] for x in lines], [x["target"] for x in lines]))
        taken += len(lines)
    settings = MetricSettings.from_config(config["metrics"])
    times = {}
    for name in METRICS.names():
        metric = METRICS.get(name)
        began = time.perf_counter()
        metric.samples(*chunks[0], settings)  # loads its model, its word lists
        load = time.perf_counter() - began
        seconds = 0.0
        for predictions, references in chunks:
            forget_embeddings()
            began = time.perf_counter()
            metric.samples(predictions, references, settings)
            seconds += time.perf_counter() - began
        times[name] = {"s_per_1000": seconds * 1000 / pairs, "first_call_s": load}
    return {"pairs": pairs, "cells": len(chunks), "threads": 1, "metrics": times}


def judge(bench: dict[str, Any]) -> None:
    """Mark each measured figure met or missed against its target."""
    for key, (figure, sign, target) in TARGETS.items():
        if key in bench:
            value = bench[key][figure]
            bench[key]["met"] = value <= target if sign == "<=" else value >= target
            bench[key]["target"] = f"{sign} {target}"
    if "P5" in bench:  # the default run counts only with its measured windows alone and every technique shown
        shown = bench["P5"].get("techniques_shown", {})
        bench["P5"]["met"] = (bench["P5"]["met"] and bench["P5"].get("overlapping_measured_jobs") == 0
                              and all(shown.values()))  # fmt: skip


def _missing(p5: dict[str, Any]) -> str:
    missing = [name for name, shown in p5.get("techniques_shown", {}).items() if not shown]
    return f"; not shown: {', '.join(missing)}" if missing else ""


def machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} cores, {platform.platform()}"


def table(bench: dict[str, Any]) -> str:
    """The README's table."""
    described = {
        "P1": ("harness overhead on the default config", lambda b: f"{b['overhead']:.1%}"),
        "P2": ("no-op re-run", lambda b: f"{b['wall_s']:.1f} s"),
        "P3": (f"dry run, {(bench.get('P3') or {}).get('evaluated_cells')} evaluated cells",
               lambda b: f"{b['wall_s']:.1f} s"),
        "P4": ("harness / bare `generate` throughput", lambda b: f"{b['ratio']:.3f}"),
        "P5": (f"default run, {(bench.get('P5') or {}).get('jobs')} jobs, measured windows alone",
               lambda b: f"{b['wall_s'] / 60:.1f} min ({b.get('overlapping_measured_jobs')} of "
                         f"{b.get('measured_jobs')} measured jobs overlapped another{_missing(b)})"),
    }  # fmt: skip
    rows = ["| | what | measured | target | met |", "|---|---|---|---|---|"]
    for key, (_, sign, target) in TARGETS.items():
        if key not in bench:
            continue
        what, show = described[key]
        shown = {"P1": f"{target:.0%}", "P4": f"{target:g}", "P5": f"{target / 60:g} min"}.get(key, f"{target:g} s")
        shown_target = f"{sign} {shown}"
        met = "yes" if bench[key]["met"] else "no"
        rows.append(f"| {key} | {what} | {show(bench[key])} | {shown_target} | {met} |")
    if "metrics" in bench:
        for name, timing in bench["metrics"]["metrics"].items():
            rows.append(f"| P5 | {name}: time per 1,000 pairs (its first call, which loads it: "
                        f"{timing['first_call_s']:.1f} s) | {timing['s_per_1000']:.2f} s | | |")  # fmt: skip
    return "\n".join([*rows, "", f"Measured {bench['date']} on {bench['machine']}, commit {bench['commit']}."])


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return (done.stdout.strip() or "unknown") + (" (uncommitted changes)" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--only", default="P1,P2,P3,P4,P5,metrics",
                        help="comma-separated; P1 and P5 are the same run; P2, P4 and metrics use its results")
    parser.add_argument("--workdir", default="results/bench/work", help="scratch folder for the runs")
    parser.add_argument("--rounds", type=int, default=3, help="P4: alternations of harness and bare passes")
    parser.add_argument("--pairs", type=int, default=1000, help="metric times: pairs scored")
    parser.add_argument("--out", default="results/bench.json")
    parser.add_argument("--readme", help="also put the table between the bench markers of this file")
    args = parser.parse_args()
    started = process_started() or time.time()
    wanted = set(args.only.split(","))
    config_path = (ROOT / args.config).resolve()
    config = yaml.safe_load(config_path.read_text())
    workdir = (ROOT / args.workdir).resolve()
    bench: dict[str, Any] = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M %Z"), "commit": commit(),
                             "config": str(args.config)}  # fmt: skip
    if wanted & {"P1", "P5"}:
        bench.update(run_default(config_path, workdir / "default"))
        print(f"P5 default run {bench['P5']['wall_s']:.0f} s; P1 overhead {bench['P1']['overhead']:.1%}", flush=True)
    if "P2" in wanted:
        bench["P2"] = rerun(config_path, workdir / "default")
        print(f"P2 no-op re-run {bench['P2']['wall_s']:.2f} s", flush=True)
    if "P3" in wanted:
        bench["P3"] = dry_run(config, workdir / "grid")
        print(f"P3 dry run of {bench['P3']['evaluated_cells']} cells {bench['P3']['wall_s']:.2f} s", flush=True)
    if "P4" in wanted:
        bench["P4"] = generation_throughput(config, workdir / "default", args.rounds)
        print(f"P4 harness/bare throughput {bench['P4']['ratio']:.3f}", flush=True)
    if "metrics" in wanted:
        bench["metrics"] = metric_times(config, workdir / "default", args.pairs)
    judge(bench)
    bench["bench_wall_s"] = time.time() - started
    atomic_write_json(ROOT / args.out, bench)
    text = table(bench)
    (ROOT / args.out).with_suffix(".md").write_text(text + "\n")
    print(text)
    if args.readme:
        write_between(ROOT / args.readme, README_BEGIN, README_END, text)


def write_between(readme: Path, begin: str, end: str, text: str) -> None:
    """Replace what stands between the markers `begin` and `end` of `readme` by `text`."""
    content = readme.read_text()
    if begin not in content or end not in content:
        sys.exit(f"benchmark: {readme} has no {begin} … {end} block")
    head, rest = content.split(begin, 1)
    readme.write_text(f"{head}{begin}\n{text}\n{end}{rest.split(end, 1)[1]}")


def publish(bench: dict[str, Any], table: str, out: Path, readme: Path | None, begin: str, end: str) -> None:
    """Write a benchmark's figures (`out`, JSON) and its table (`out` as .md), print the table, and, with `readme`,
    put it between that file's markers."""
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, bench)
    atomic_write_text(out.with_suffix(".md"), table + "\n")
    print(table)
    if readme is not None:
        write_between(readme, begin, end, table)


if __name__ == "__main__":
    main()
