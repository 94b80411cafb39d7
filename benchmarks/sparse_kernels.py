"""2:4 sparse kernels against the same model masked-dense, at batch 1 and 16 (issue 4, acceptance 4).

Loads a model folder, prunes it 2:4 (magnitude by default; the pattern, not the method, decides the kernel speed),
stores it in float16 on the GPU, and measures generation with pinned tokens and energy windows, masked-dense and
packed with `torch.sparse.to_sparse_semi_structured` in alternating passes (A B A B). A second part times single
linear layers of Llama-3-8B's shapes (`--layers`), where the kernels' own speed-up shows without the small model's
overheads.

Needs a CUDA GPU of compute capability 8.0 or newer for the sparse half; elsewhere it measures the dense half, says
why the sparse half cannot run, and exits with status 3.
Usage: python benchmarks/sparse_kernels.py --model results/models/rca/tiny-llama/base [--batches 1 16] [--layers]
       (writes results/bench/sparse_kernels.json and .md)
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time
from pathlib import Path

import torch
import yaml

from joulebench.cells import Pruning
from joulebench.data.rca import generate_tickets
from joulebench.data.tickets import ticket_example
from joulebench.energy import measured
from joulebench.io import atomic_write_json, atomic_write_text
from joulebench.jobs import cpu_model
from joulebench.models import Precision, load_model, load_tokenizer
from joulebench.noise import paired_ratio
from joulebench.prune import prune_model
from joulebench.serving import GenerationSettings, Server, measure_serving, pinned_figures
from joulebench.sparse_kernels import current_capability, plan_kernels, to_semi_structured

LLAMA3_8B_LINEARS = {"q/o_proj": (4096, 4096), "gate/up_proj": (14336, 4096), "down_proj": (4096, 14336)}


def generation_figures(passes) -> dict:
    figures = pinned_figures(passes)
    return {
        "seconds_per_pass": sum(p.generation_s for p in passes) / len(passes),
        "tokens_per_s": figures["tokens_per_s"]["mean"],
        "j_per_token": figures["j_per_token"]["mean"],
        "j_per_token_ci95": figures["j_per_token"]["ci95"],
    }


def measure_model(args: argparse.Namespace, energy: dict) -> dict:
    """The pruned model masked-dense and packed for sparse kernels, measured in alternating passes (A B A B) on the
    same prompts and pinned tokens, so drift hits both alike; the speed-up is their paired ratio."""
    setting = Pruning(args.method, n=2, m=4)
    precision = Precision(16, "float16")
    plan = plan_kernels(setting, precision, True, current_capability())
    tokenizer = load_tokenizer(args.model)
    prompts = [ticket_example({**t, "id": t["ticket_id"]}).prompt for t in generate_tickets(args.prompts, seed=7)]
    model = load_model(args.model, Precision(32))
    prune_model(model, setting)  # calibrated methods would need --method magnitude's calibration-free path
    model = model.to(precision.torch_dtype)
    results: dict = {"plan": plan.to_dict(), "batches": {}}
    packed = None
    if plan.sparse:
        packed = copy.deepcopy(model)
        results["conversion"] = to_semi_structured(packed).to_dict()
    with measured(energy) as monitor:
        results["energy_sources"] = monitor.sources
        for batch in args.batches:
            generation = GenerationSettings(batch_size=batch, max_new_tokens=args.new_tokens)
            servers = {"dense": Server(model, tokenizer, prompts, generation, 160)}
            if packed is not None:
                servers["sparse"] = Server(packed, tokenizer, prompts, generation, 160)
            serving = measure_serving(monitor, servers, 1, args.repeats, name=f"b{batch}")
            passes = serving.rounds.passes
            entry = results["batches"][batch] = {key: generation_figures(passes[key]) for key in servers}
            if packed is not None:
                ratio = paired_ratio([p.generation_s for p in passes["dense"]],
                                     [p.generation_s for p in passes["sparse"]])  # fmt: skip
                entry["speedup_vs_dense"] = ratio.estimate
                entry["speedup_interval"] = [ratio.low, ratio.high]
    return results


def time_matmul(weight: torch.Tensor, tokens: int, repeats: int = 50) -> float:
    x = torch.randn(tokens, weight.shape[1], dtype=weight.dtype, device=weight.device)
    for _ in range(5):
        torch.nn.functional.linear(x, weight)
    torch.cuda.synchronize()
    began = time.perf_counter()
    for _ in range(repeats):
        torch.nn.functional.linear(x, weight)
    torch.cuda.synchronize()
    return (time.perf_counter() - began) / repeats


def measure_layers(token_counts: list[int]) -> dict:
    from torch.sparse import to_sparse_semi_structured

    from joulebench.prune import nm_keep_mask

    layers = {}
    for name, (rows, cols) in LLAMA3_8B_LINEARS.items():
        weight = torch.randn(rows, cols, dtype=torch.float16, device="cuda")
        weight *= nm_keep_mask(weight.abs(), 2, 4)
        packed = to_sparse_semi_structured(weight)
        layers[name] = {
            tokens: {"dense_ms": time_matmul(weight, tokens) * 1e3, "sparse_ms": time_matmul(packed, tokens) * 1e3}
            for tokens in token_counts
        }
        for figures in layers[name].values():
            figures["speedup"] = figures["dense_ms"] / figures["sparse_ms"]
    return layers


def markdown(report: dict) -> str:
    run, plan = report["model_run"], report["model_run"]["plan"]
    lines = [
        f"# 2:4 sparse kernels vs masked-dense ({report['date']})", "",
        f"- machine: {report['machine']}",
        f"- model: {report['model']}, {report['prompts']} prompts × {report['new_tokens']} pinned new tokens, "
        f"{report['repeats']} timed passes per figure",
        f"- kernels: {plan['label']} ({plan['reason'] or 'eligible'})",
        f"- energy sources: {run['energy_sources']} (a '-estimate' source is a power model, not a measurement)", "",
        "| batch | dense tok/s | sparse tok/s | speed-up | dense J/token | sparse J/token |",
        "|---|---|---|---|---|---|",
    ]  # fmt: skip
    for batch, entry in report["model_run"]["batches"].items():
        dense, sparse = entry["dense"], entry.get("sparse")
        if sparse:
            speedup = entry["speedup_vs_dense"]
            lines.append(f"| {batch} | {dense['tokens_per_s']:.1f} | {sparse['tokens_per_s']:.1f} | {speedup:.2f} | "
                         f"{dense['j_per_token']:.3g} | {sparse['j_per_token']:.3g} |")
        else:
            lines.append(f"| {batch} | {dense['tokens_per_s']:.1f} | — | — | {dense['j_per_token']:.3g} | — |")
    for name, figures in report.get("layers", {}).items():
        lines += ["", f"Linear layer {name} {LLAMA3_8B_LINEARS[name]}, float16:", "",
                  "| tokens | dense ms | sparse ms | speed-up |", "|---|---|---|---|"]  # fmt: skip
        lines += [f"| {t} | {f['dense_ms']:.4f} | {f['sparse_ms']:.4f} | {f['speedup']:.2f} |"
                  for t, f in figures.items()]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="results/models/rca/tiny-llama/base")
    parser.add_argument("--method", default="magnitude")
    parser.add_argument("--config", default="config.yaml", help="its energy settings are used")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--layers", action="store_true", help="also time Llama-3-8B-shaped linear layers")
    parser.add_argument("--out", default="results/bench/sparse_kernels")
    args = parser.parse_args()
    energy = yaml.safe_load(Path(args.config).read_text())["energy"]
    run = measure_model(args, energy)
    report = {
        "model": args.model, "prompts": args.prompts, "new_tokens": args.new_tokens, "repeats": args.repeats,
        "machine": f"{cpu_model()}, {os.cpu_count()} cores, "
                   f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}, {platform.platform()}",
        "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "model_run": run,
    }  # fmt: skip
    if args.layers and run["plan"]["sparse"]:
        report["layers"] = measure_layers([1, 16, 256, 2048])
    atomic_write_json(f"{args.out}.json", report)
    atomic_write_text(f"{args.out}.md", markdown(report))
    print(markdown(report))
    if not run["plan"]["sparse"]:
        print(f"sparse half not run: {run['plan']['reason']}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
