"""Do 4 and 8 bits serve faster than 16 on a backend with real low-bit kernels? One run of the default model with
`inference.backends: [transformers, llama.cpp]` at bits 4, 8 and 16 (2 epochs, no pruning, no early exit: only what
the comparison needs), in a scratch working directory. From its summary: per bit width, llama.cpp's tokens/s and
energy per token against its own 16-bit (F16) and against transformers + bitsandbytes at the same bits, as ratios of
the timed passes' means with their 95 % intervals and the verdict against the run's own noise floor at those bits; and
per cell, Δρ against transformers at the same bits (its paired bootstrap interval). Writes results/bench/backends.json
and .md; with --readme, the README's table between its backends markers.

Usage: python benchmarks/backends.py [--config config.yaml] [--reuse DIR] [--readme README.md]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ROOT, commit, machine, publish, snakemake  # noqa: E402

from joulebench.comparisons import compare_rows, noise_floors  # noqa: E402

README_BEGIN, README_END = "<!-- backends:begin -->", "<!-- backends:end -->"
BITS = (4, 8, 16)


def bench_config(config: dict[str, Any]) -> dict[str, Any]:
    return {**config, "bits": list(BITS), "epochs": [2], "training_variants": [{"precision": "32-true"}],
            "pruning": {**config["pruning"], "methods": []}, "early_exit": [], "merge": [],
            "inference": {"backends": ["transformers", "llama.cpp"]}}  # fmt: skip


def run(config_path: Path, workdir: Path) -> float:
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump(bench_config(yaml.safe_load(config_path.read_text()))))
    wall, _ = snakemake(workdir, config, "--cores", "all")
    return wall


def _figure(found: dict[str, Any], key: str) -> dict[str, Any]:
    ratio, judged = found[key], found[f"{key}_verdict"]
    return {"estimate": ratio.estimate, "low": ratio.low, "high": ratio.high, "verdict": judged.verdict,
            "floor": found[f"{key}_floor"]}  # fmt: skip


def compare(workdir: Path) -> dict[str, Any]:
    summary = json.loads((workdir / "results" / "summary.json").read_text())
    rows = [r for r in summary["rows"] if r["status"] == "ok"]
    probes = [json.loads(p.read_text()) for p in sorted(workdir.glob("results/probes/**/probe.json"))]
    floors = noise_floors(rows, probes)
    cells = {(r["backend"], int(r["bits"])): r for r in rows if int(r["epochs"]) > 0 and r["pruning"] == "none"}
    out: dict[str, Any] = {"cells": {}, "comparisons": []}
    for (backend, bits), row in sorted(cells.items()):
        out["cells"][f"{backend} b{bits}"] = {
            "format": row["format"], "format_detail": row.get("format_detail", ""),
            "tokens_per_s": row["tokens_per_s"], "j_per_token": row["infer_j_per_token"],
            "energy_source": row["energy_source"], "rho": row.get("rho"),
            "delta_rho": [row.get(f"delta_backend_rho{end}") for end in ("", "_lo", "_hi")],
            "delta_rho_verdict": row.get("verdict_backend_rho") or "",
        }  # fmt: skip
    for bits in BITS:
        mine = cells.get(("llama.cpp", bits))
        for against, label in ((("llama.cpp", 16), "llama.cpp F16"), (("transformers", bits), f"transformers b{bits}")):
            other = cells.get(against)
            if mine is None or other is None or other is mine:
                continue
            found = compare_rows(mine, other, floors)
            out["comparisons"].append({"cell": f"llama.cpp b{bits} ({mine['format']})", "against": label,
                                       "against_format": other["format"], "speed": _figure(found, "speed"),
                                       "energy": _figure(found, "energy")})  # fmt: skip
    return out


def _ratio(figure: dict[str, Any]) -> str:
    floor = "" if figure["floor"] is None else f"±{100 * figure['floor']:.1f} %"
    return f"×{figure['estimate']:.2f} [{figure['low']:.2f}, {figure['high']:.2f}] | {floor} | {figure['verdict']}"


def _delta(cell: dict[str, Any]) -> str:
    estimate, low, high = cell.get("delta_rho") or (None, None, None)
    if estimate is None:
        return ""
    return f"{estimate:+.3f} [{low:+.3f}, {high:+.3f}] {cell['delta_rho_verdict']}".rstrip()


def table(bench: dict[str, Any]) -> str:
    found = bench["comparison"]
    rows = ["| llama.cpp cell | against | tokens/s ratio [95 %] | noise floor | verdict | energy/token ratio "
            "[95 %] (estimate) | noise floor | verdict |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for entry in found["comparisons"]:
        rows.append(f"| {entry['cell']} | {entry['against']} ({entry['against_format']}) | {_ratio(entry['speed'])} "
                    f"| {_ratio(entry['energy'])} |")  # fmt: skip
    rows += ["", "| cell | format | weight matrices | tokens/s | J/token | ρ | Δρ vs transformers, same bits [95 %] |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, cell in found["cells"].items():
        rho = "" if cell["rho"] is None else f"{cell['rho']:.3f}"
        rows.append(f"| {name} | {cell['format']} | {cell['format_detail']} | {cell['tokens_per_s']:.0f} | "
                    f"{cell['j_per_token']:.3g} | {rho} | {_delta(cell)} |")  # fmt: skip
    wall = f"{bench['wall_s'] / 60:.1f} min" if bench.get("wall_s") else "given"
    source = next(iter(found["cells"].values()), {}).get("energy_source", "")
    return "\n".join([*rows, "", f"Energy sources: {source}. Run: {wall}. Measured {bench['date']} on "
                                 f"{bench['machine']}, commit {bench['commit']}."])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--workdir", default="results/bench/work/backends")
    parser.add_argument("--reuse", metavar="DIR", help="a finished run of this benchmark to read instead of running")
    parser.add_argument("--out", default="results/bench/backends.json")
    parser.add_argument("--readme", help="also put the table between the backends markers of this file")
    args = parser.parse_args()
    workdir = Path(args.reuse or ROOT / args.workdir).resolve()
    wall = None if args.reuse else run((ROOT / args.config).resolve(), workdir)
    bench = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M %Z"), "commit": commit(),
             "wall_s": wall, "comparison": compare(workdir)}  # fmt: skip
    publish(bench, table(bench), ROOT / args.out, args.readme and ROOT / args.readme, README_BEGIN, README_END)


if __name__ == "__main__":
    main()
