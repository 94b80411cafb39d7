"""The one prepared GPU check: everything in joulebench that needs CUDA, in one command (about 8 minutes on one H200).

1. The micro model fine-tuned (one epoch) and served at 4, 8, 16 and 32 bits through the library's own functions:
   loss, training energy, the form served, the bytes stored, tokens/s and J/token from NVML.
2. CodeCarbon against the NVML energy counter over the same inference windows: their GPU energy and its relative
   difference (the check passes within 5 %).
3. Real 2:4 sparse kernels (`torch.sparse.to_sparse_semi_structured`) against the same weights masked-dense, on
   Llama-3-8B's linear shapes at 1 and 16 tokens.
4. float16 batch-1 decoding against the memory-bandwidth roofline: the time per output token a decoder whose weights
   are read once per token cannot beat, from the weights' bytes and the copy bandwidth this GPU shows here.
5. The llama.cpp backend on CUDA (joulebench.backends.llama_cpp): the decode model as GGUF Q4_K_M, Q8_0 and F16,
   offloaded to the GPU, tokens/s at batch 16 against F16. It needs llama-cpp-python built with
   CMAKE_ARGS="-DGGML_CUDA=on"; without such a build the part says so (the CPU wheel cannot offload) and is skipped.

Every figure is measured by this run; nothing is taken from a data sheet. The GPU machine has no network and its own
torch and transformers: `make gpu-wheels` downloads what it lacks (bitsandbytes, peft, codecarbon and what they
import), and the script uses the library directly, with no Snakemake. Without a CUDA GPU it prints one line saying
so and exits 0, measuring and writing nothing.

Usage: python benchmarks/gpu_check.py [--out results/gpu_check.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import torch  # noqa: E402

MICRO_CONFIG = ROOT / "configs" / "micro.yaml"
AGREEMENT = 0.05  # CodeCarbon's GPU energy within 5 % of the NVML counter's
DECODE_ARCHITECTURE = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=4, num_attention_heads=32,
                           num_key_value_heads=8, vocab_size=32000, max_position_embeddings=512)  # fmt: skip


def skip_reason() -> str | None:
    if not torch.cuda.is_available():
        return f"no CUDA GPU (torch {torch.__version__}: torch.cuda.is_available() is False)"
    return None


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def section(results: dict[str, Any], name: str, run: Callable[[], dict[str, Any]]) -> None:
    """Run one part; a failure is recorded with its reason and the next part still runs."""
    log(f"{name} ...")
    began = time.perf_counter()
    try:
        results[name] = run()
    except Exception as error:  # noqa: BLE001 (every part reports, whatever broke)
        results[name] = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-3000:]}
    results[name]["seconds"] = round(time.perf_counter() - began, 1)
    log(f"{name}: {'failed: ' + results[name]['error'] if 'error' in results[name] else 'done'}")


def environment() -> dict[str, Any]:
    from joulebench.jobs import package_versions

    return {
        "gpu": torch.cuda.get_device_name(0),
        "capability": list(torch.cuda.get_device_capability(0)),
        "cuda": torch.version.cuda,
        **package_versions(("torch", "transformers", "peft", "bitsandbytes", "accelerate", "codecarbon")),
    }


def energy_settings() -> dict[str, Any]:
    import yaml

    energy = dict(yaml.safe_load(MICRO_CONFIG.read_text())["energy"])
    energy.update(meters=["nvml", "codecarbon"], idle_seconds=2, allow_overlap=False)
    return energy


def micro_cells(workdir: Path) -> dict[str, Any]:
    """Build the micro model, then per bit width: fine-tune one epoch, serve it as evaluation does, measure it."""
    import yaml

    from joulebench.cells import Pruning
    from joulebench.data.rca import generate_tickets
    from joulebench.data.tickets import ticket_example
    from joulebench.embedded import PretrainSettings, build_embedded_model
    from joulebench.energy import measured
    from joulebench.finetune import TrainSettings, finetune
    from joulebench.models import Precision
    from joulebench.served_model import CellSpec, serve_cell
    from joulebench.serving import GenerationSettings, Server, measure_serving, pinned_figures
    from joulebench.storage import stored_bytes

    config = yaml.safe_load(MICRO_CONFIG.read_text())
    model = config["models"]["tiny-llama"]
    examples = [ticket_example({**t, "id": t["ticket_id"]}) for t in generate_tickets(80, seed=13)]
    train, test = examples[:48], examples[48:64]
    training = TrainSettings.from_config(config["training"])
    generation = GenerationSettings.from_config(config["generation"])
    cells: dict[str, Any] = {}
    with measured(energy_settings()) as monitor:
        base = workdir / "base"
        built = build_embedded_model(train, model["architecture"], PretrainSettings.from_config(model["pretrain"]),
                                     monitor, base)  # fmt: skip
        sources = monitor.sources
        for bits in (4, 8, 16, 32):
            log(f"  b{bits}: fine-tune and serve")
            precision = Precision.from_config(bits, config["training"])
            adapter = workdir / f"b{bits}" / "adapter"
            tuned = finetune(str(base), train, precision, training, 1, monitor, adapter)
            served = serve_cell(CellSpec(str(base), adapter, precision, Pruning("none")))
            server = Server(served.model, served.tokenizer, [e.prompt for e in test], generation,
                            training.max_prompt_tokens)  # fmt: skip
            passes = measure_serving(monitor, {"cell": server}, 1, 3, name=f"b{bits}").rounds.passes["cell"]
            figures = pinned_figures(passes)
            cells[str(bits)] = {
                "form": served.form, "stored_mb": stored_bytes(served.model) / 2**20,
                "loss": [epoch.loss for epoch in tuned.epochs], "train_s": tuned.wall_s,
                "train_kwh": tuned.energy["total_kwh"], "train_gpu_kwh": tuned.energy["gpu_kwh"],
                "tokens_per_s": figures["tokens_per_s"]["mean"], "j_per_token": figures["j_per_token"]["mean"],
                "pass_gpu_kwh": figures["pass_energy"]["gpu_kwh"],
            }  # fmt: skip
            del served, server
            torch.cuda.empty_cache()
    return {"energy_sources": sources, "build_kwh": built.energy["total_kwh"], "cells": cells}


def decode_model() -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(LlamaConfig(**DECODE_ARCHITECTURE)).to(torch.float16)
    return model.eval()


def timed(run: Callable[[], Any]) -> float:
    torch.cuda.synchronize()
    began = time.perf_counter()
    run()
    torch.cuda.synchronize()
    return time.perf_counter() - began


def relative_difference(measured: float, reference: float) -> float | None:
    return abs(measured - reference) / reference if reference > 0 else None


def meters_agree(seconds: float = 40.0) -> dict[str, Any]:
    """Both meters read at the edges of the same windows of batch-16 decoding; their GPU energies compared."""
    from joulebench.energy import EnergySettings
    from joulebench.energy.codecarbon_meter import CodeCarbonMeter
    from joulebench.energy.nvml import nvml_meter

    settings = EnergySettings.from_config(energy_settings())
    nvml, codecarbon = nvml_meter(settings), CodeCarbonMeter(settings)
    if nvml is None:
        raise RuntimeError("NVML has no energy counter for this GPU")
    model = decode_model()
    ids = torch.randint(3, DECODE_ARCHITECTURE["vocab_size"], (16, 32), device="cuda")
    windows = []
    with contextlib.ExitStack() as stack:
        for meter in (nvml, codecarbon):
            meter.start()
            stack.callback(meter.stop)
        for _ in range(3):
            began = time.perf_counter()
            before = {"nvml": nvml.read().kwh["gpu"], "codecarbon": codecarbon.read().kwh["gpu"]}
            while time.perf_counter() - began < seconds / 3:
                model.generate(input_ids=ids, max_new_tokens=64, min_new_tokens=64, do_sample=False)
            torch.cuda.synchronize()
            after = {"nvml": nvml.read().kwh["gpu"], "codecarbon": codecarbon.read().kwh["gpu"]}
            kwh = {name: after[name] - before[name] for name in after}
            windows.append({"seconds": time.perf_counter() - began, **{f"{k}_kwh": v for k, v in kwh.items()},
                            "difference": relative_difference(kwh["codecarbon"], kwh["nvml"])})  # fmt: skip
    total = {name: sum(w[f"{name}_kwh"] for w in windows) for name in ("nvml", "codecarbon")}
    difference = relative_difference(total["codecarbon"], total["nvml"])
    return {"windows": windows, "nvml_kwh": total["nvml"], "codecarbon_kwh": total["codecarbon"],
            "difference": difference, "agree_within": AGREEMENT,
            "agree": difference is not None and difference <= AGREEMENT,
            "codecarbon_gpu_source": codecarbon.sources.get("gpu", "none")}  # fmt: skip


def sparse_kernels() -> dict[str, Any]:
    from sparse_kernels import measure_layers

    from joulebench.cells import Pruning
    from joulebench.models import Precision
    from joulebench.sparse_kernels import current_capability, plan_kernels

    plan = plan_kernels(Pruning("magnitude", n=2, m=4), Precision(16, "float16"), True, current_capability())
    if not plan.sparse:
        return {"plan": plan.to_dict(), "layers": {}}
    return {"plan": plan.to_dict(), "layers": measure_layers([1, 16])}


def copy_bandwidth(gigabytes: float = 4.0, repeats: int = 10) -> float:
    """Bytes per second a device-to-device copy moves, counting both the bytes read and those written."""
    source = torch.empty(int(gigabytes * 2**30), dtype=torch.uint8, device="cuda")
    target = torch.empty_like(source)
    for _ in range(2):
        target.copy_(source)
    seconds = timed(lambda: [target.copy_(source) for _ in range(repeats)]) / repeats
    return 2 * source.numel() / seconds


def roofline(weight_bytes: int, bandwidth: float, tpot_s: float) -> dict[str, float]:
    """The time per output token if every weight is read once per token at `bandwidth`, and the share of it the
    measured `tpot_s` reaches (1.0: at the roofline)."""
    bound = weight_bytes / bandwidth
    return {"weight_bytes": weight_bytes, "bandwidth_bytes_per_s": bandwidth, "roofline_tpot_s": bound,
            "tpot_s": tpot_s, "roofline_fraction": bound / tpot_s}  # fmt: skip


def decode_roofline(new_tokens: int = 128, repeats: int = 5) -> dict[str, Any]:
    """Batch-1 greedy decoding of a float16 Llama-shaped model (4 layers of Llama-3-8B's width): time per output
    token = (a pass of n tokens − a pass of 1) / (n − 1), against the copy bandwidth's roofline."""
    from joulebench.storage import stored_bytes

    model = decode_model()
    ids = torch.randint(3, DECODE_ARCHITECTURE["vocab_size"], (1, 16), device="cuda")

    def generate(count: int) -> None:
        model.generate(input_ids=ids, max_new_tokens=count, min_new_tokens=count, do_sample=False)

    generate(new_tokens)  # warm-up
    first = min(timed(lambda: generate(1)) for _ in range(repeats))
    full = min(timed(lambda: generate(new_tokens)) for _ in range(repeats))
    tpot = (full - first) / (new_tokens - 1)
    bandwidth = copy_bandwidth()
    return {"architecture": DECODE_ARCHITECTURE, "new_tokens": new_tokens,
            **roofline(stored_bytes(model), bandwidth, tpot)}  # fmt: skip


def llama_cpp_cuda(batch: int = 16, new_tokens: int = 64, repeats: int = 3) -> dict[str, Any]:
    """Each 4/8/16-bit GGUF of the decode model served by llama.cpp on the GPU: tokens/s of pinned passes."""
    try:
        import llama_cpp
    except ImportError as error:
        return {"skipped": f"llama-cpp-python is not installed here ({error})"}
    if not llama_cpp.llama_supports_gpu_offload():
        return {"skipped": "this llama-cpp-python was built without CUDA (CMAKE_ARGS=\"-DGGML_CUDA=on\" builds one)"}
    from joulebench.backends import BACKENDS
    from joulebench.models import train_tokenizer
    from joulebench.serving import GenerationSettings

    model = decode_model().float().cpu()
    tokenizer = train_tokenizer([f"ticket {i}: link {i % 7} down" for i in range(200)], 32000, 512)
    prompts = [f"ticket {i}: link {i % 7} down" for i in range(batch)]
    settings = GenerationSettings(batch_size=batch, max_new_tokens=new_tokens, latency_prompts=0)
    formats: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="joulebench-gguf-") as tmp:
        for bits in (16, 8, 4):
            engine = BACKENDS.get("llama.cpp").build(model, tokenizer, bits, Path(tmp) / f"b{bits}", 8, batch, 256)
            try:
                engine.generate(tokenizer, prompts, settings, 64, True)
                rates = [(r.new_tokens / r.wall_s) for r in
                         (engine.generate(tokenizer, prompts, settings, 64, True) for _ in range(repeats))]
                formats[str(bits)] = {"format": engine.format, "detail": engine.format_detail, "device": engine.device,
                                      "file_mb": engine.file_bytes / 2**20, "tokens_per_s": rates}  # fmt: skip
            finally:
                engine.close()
    f16 = sum(formats["16"]["tokens_per_s"]) / repeats
    for figures in formats.values():
        figures["speed_vs_f16"] = sum(figures["tokens_per_s"]) / repeats / f16
    return formats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/gpu_check.json")
    args = parser.parse_args()
    reason = skip_reason()
    if reason is not None:
        print(f"gpu-check: skipped: {reason}; nothing measured, nothing written")
        return 0
    from joulebench.models import offline_environment

    offline_environment()
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    section(results, "environment", environment)
    with tempfile.TemporaryDirectory(prefix="joulebench-gpu-check-") as tmp:
        section(results, "micro_cells", lambda: micro_cells(Path(tmp)))
    section(results, "meters", meters_agree)
    section(results, "sparse_kernels", sparse_kernels)
    section(results, "decode_roofline", decode_roofline)
    section(results, "llama_cpp_cuda", llama_cpp_cuda)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str))
    failed = [name for name, part in results.items() if isinstance(part, dict) and "error" in part]
    log(f"wrote {out}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
