"""Does the answer survive a second run? The noise floor and the finalists' paired intervals of two default runs.

Runs the default config from scratch twice in scratch working directories (or takes a finished run's directory for
either with --runs), then compares, per dataset and model, the two runs' noise floors (energy per token, tokens/s)
and, per finalist present in both, its paired ratios against the base model (energy per query at real answer
lengths, tokens/s): the two estimates, whether each run's 95 % interval holds the other run's estimate, and whether
the verdicts agree. Writes results/bench/noise.json and results/bench/noise.md; with --readme, also the README's
table between its noise markers.

Usage: python benchmarks/noise_agreement.py [--config config.yaml] [--runs DIR_A DIR_B] [--readme README.md]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import ROOT, commit, machine, publish, snakemake  # noqa: E402

README_BEGIN, README_END = "<!-- noise:begin -->", "<!-- noise:end -->"


def run(config: Path, workdir: Path) -> dict[str, Any]:
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    wall, _ = snakemake(workdir, config, "--cores", "all")
    summary = json.loads((workdir / "results" / "summary.json").read_text())
    return {"workdir": str(workdir), "wall_s": wall, "summary": summary}


def load(workdir: Path) -> dict[str, Any]:
    summary = json.loads((workdir / "results" / "summary.json").read_text())
    return {"workdir": str(workdir), "wall_s": None, "summary": summary}


def _holds(figure: dict[str, Any], value: float) -> bool | None:
    if figure.get("low") is None or figure.get("high") is None:
        return None
    return figure["low"] <= value <= figure["high"]


def compare(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """The two runs' floors side by side, and each finalist's paired figures in both with their agreement."""
    floors = []
    for key in sorted(set(first["noise_floor"]) & set(second["noise_floor"])):
        a, b = first["noise_floor"][key], second["noise_floor"][key]
        floors.append({"key": key, **{f"{figure}_{run}": floor[figure]["floor"] for figure in
                                      ("energy_per_token", "tokens_per_s") for run, floor in (("a", a), ("b", b))},
                       "measurements": [len(a["measurements"]), len(b["measurements"])]})  # fmt: skip
    finalists = []
    sections = {s["dataset"]: s for s in first["finalists"] if s.get("status") == "ok"}
    for section in second["finalists"]:
        other = sections.get(section.get("dataset"))
        if section.get("status") != "ok" or other is None:
            continue
        mine = {f["label"]: f for f in other["finalists"] if "vs_base" in f}
        for finalist in section["finalists"]:
            if finalist["label"] not in mine or "vs_base" not in finalist:
                continue
            a, b = mine[finalist["label"]]["vs_base"], finalist["vs_base"]
            entry: dict[str, Any] = {"dataset": section["dataset"], "cell": finalist["label"],
                                     "roles": [mine[finalist["label"]]["roles"], finalist["roles"]]}  # fmt: skip
            for figure in ("energy", "speed"):
                entry[figure] = {
                    "a": a[figure], "b": b[figure],
                    "a_holds_b": _holds(a[figure], b[figure]["estimate"]),
                    "b_holds_a": _holds(b[figure], a[figure]["estimate"]),
                    "verdicts": [a[f"{figure}_verdict"]["verdict"], b[f"{figure}_verdict"]["verdict"]],
                }  # fmt: skip
                entry[figure]["verdicts_agree"] = len(set(entry[figure]["verdicts"])) == 1
            finalists.append(entry)
    return {"floors": floors, "finalists": finalists}


def _ratio(figure: dict[str, Any]) -> str:
    if figure.get("low") is None:
        return f"×{figure['estimate']:.3f}"
    return f"×{figure['estimate']:.3f} [{figure['low']:.3f}, {figure['high']:.3f}]"


def table(bench: dict[str, Any]) -> str:
    found = bench["comparison"]
    rows = ["| noise floor | run A | run B |", "|---|---|---|"]
    for floor in found["floors"]:
        for figure, name in (("energy_per_token", "energy per token"), ("tokens_per_s", "tokens/s")):
            values = [floor[f"{figure}_{run}"] for run in ("a", "b")]
            shown = ["" if v is None else f"±{100 * v:.1f} %" for v in values]
            rows.append(f"| {floor['key']}: {name} ({floor['measurements'][0]} and {floor['measurements'][1]} "
                        f"measurements) | {shown[0]} | {shown[1]} |")  # fmt: skip
    rows += ["", "| finalist against the base | figure | run A | run B | each interval holds the other's estimate "
                 "| verdicts |", "|---|---|---|---|---|---|"]  # fmt: skip
    for entry in found["finalists"]:
        for figure, name in (("energy", "energy per query"), ("speed", "tokens/s")):
            e = entry[figure]
            holds = {True: "yes", False: "no", None: "no interval"}
            both = f"{holds[e['a_holds_b']]} / {holds[e['b_holds_a']]}"
            verdicts = " / ".join(e["verdicts"]) + ("" if e["verdicts_agree"] else " (disagree)")
            rows.append(f"| {entry['cell']} | {name} | {_ratio(e['a'])} | {_ratio(e['b'])} | {both} | {verdicts} |")
    agree = [entry[f]["verdicts_agree"] for entry in found["finalists"] for f in ("energy", "speed")]
    walls = [r["wall_s"] for r in bench["runs"]]
    timing = ", ".join(f"{w / 60:.1f} min" for w in walls if w is not None)
    return "\n".join([
        *rows, "",
        f"Verdicts agree in {sum(agree)} of {len(agree)} paired comparisons. Runs: {timing or 'given'}. "
        f"Measured {bench['date']} on {bench['machine']}, commit {bench['commit']}.",
    ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--workdir", default="results/bench/work", help="scratch folder for the runs")
    parser.add_argument("--runs", nargs=2, metavar="DIR", help="two finished runs' working directories to compare")
    parser.add_argument("--reuse-first", metavar="DIR", help="a finished run to take as run A; only run B runs")
    parser.add_argument("--out", default="results/bench/noise.json")
    parser.add_argument("--readme", help="also put the table between the noise markers of this file")
    args = parser.parse_args()
    config = (ROOT / args.config).resolve()
    workdir = (ROOT / args.workdir).resolve()
    if args.runs:
        runs = [load(Path(path).resolve()) for path in args.runs]
    else:
        first = load(Path(args.reuse_first).resolve()) if args.reuse_first else run(config, workdir / "noise-a")
        runs = [first, run(config, workdir / "noise-b")]
    bench = {
        "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M %Z"), "commit": commit(), "config": args.config,
        "runs": [{"workdir": r["workdir"], "wall_s": r["wall_s"]} for r in runs],
        "comparison": compare(runs[0]["summary"], runs[1]["summary"]),
    }  # fmt: skip
    publish(bench, table(bench), ROOT / args.out, args.readme and ROOT / args.readme, README_BEGIN, README_END)


if __name__ == "__main__":
    main()
