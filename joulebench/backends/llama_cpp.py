"""llama.cpp through llama-cpp-python: the cell's model as a GGUF file, quantized by llama.cpp's own quantizer, served
by its CPU kernels (or its CUDA build's, where the wheel was built with `CMAKE_ARGS="-DGGML_CUDA=on"`).

Bits map to formats explicitly (`FORMATS`): 4 → Q4_K_M, 8 → Q8_0, 16 → F16, 32 → F32. Q4_K needs rows whose length
is a multiple of 256; llama.cpp quantizes a tensor that is not in a fallback type, so the exact tensor types of every
file are recorded (`format_detail`). The cell's adapter is merged into the float32 base and any pruning applied
before the conversion (`joulebench.evaluate.evaluate_on_backend`); llama.cpp has no sparse kernels.

Generation is greedy and batched like `joulebench.serving.generate`: the same prompts, tokenized by the same tokenizer
(token ids go in, so llama.cpp's own tokenizer plays no part), every sequence of a batch decoded together as its own
sequence in one context, end-of-sequence suppressed for pinned passes. A sequence that ends leaves the batch.
"""

from __future__ import annotations

import ctypes
import math
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from joulebench.backends.base import BACKENDS, Backend
from joulebench.failures import GenerationError

if TYPE_CHECKING:
    from joulebench.serving import GenerationResult, GenerationSettings

FORMATS = {4: "Q4_K_M", 8: "Q8_0", 16: "F16", 32: "F32"}
FILE_TYPES = {"Q4_K_M": 15, "Q8_0": 7, "F16": 1, "F32": 0}  # llama_ftype values of llama.h
CONTEXT_STEP = 256  # llama.cpp rounds each sequence's share of the context to this many tokens


def tensor_types(path: Path) -> Counter[str]:
    """How many weight matrices (tensors of two or more dimensions) the GGUF file holds in each type."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    return Counter(t.tensor_type.name for t in reader.tensors if len([d for d in t.shape if d > 1]) >= 2)


def describe_types(types: Counter[str]) -> str:
    return ", ".join(f"{name} ×{count}" for name, count in sorted(types.items(), key=lambda item: -item[1]))


def quantize(source: Path, target: Path, file_type: str, threads: int) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FILE_TYPES[file_type]
    params.nthread = threads
    if llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params)) != 0:
        raise RuntimeError(f"llama.cpp could not quantize {source.name} to {file_type}")


_silenced: Any = None


def _silence_llama_log() -> None:
    """llama.cpp logs every load to stderr; the job's log keeps only its errors."""
    global _silenced
    import llama_cpp

    if _silenced is None:

        @llama_cpp.llama_log_callback
        def log(level: int, text: bytes, _data: Any) -> None:
            if level in (3, 4):  # GGML_LOG_LEVEL_WARN, GGML_LOG_LEVEL_ERROR
                print(text.decode(errors="replace"), end="")

        _silenced = log  # kept alive: llama.cpp holds the pointer
        llama_cpp.llama_log_set(_silenced, ctypes.c_void_p())


class LlamaCppEngine:
    """One GGUF file loaded in one llama.cpp context sized for `sequences` sequences of `sequence_tokens` each."""

    def __init__(self, path: Path, file_type: str, threads: int, sequences: int, sequence_tokens: int) -> None:
        import llama_cpp as lc
        import torch

        _silence_llama_log()
        lc.llama_backend_init()
        self._lc = lc
        gpu = bool(lc.llama_supports_gpu_offload()) and torch.cuda.is_available()
        model_params = lc.llama_model_default_params()
        model_params.n_gpu_layers = 999 if gpu else 0
        self.model = lc.llama_model_load_from_file(str(path).encode(), model_params)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        context = lc.llama_context_default_params()
        context.n_seq_max = sequences
        context.n_ctx = sequences * CONTEXT_STEP * math.ceil(sequence_tokens / CONTEXT_STEP)
        context.n_batch = context.n_ctx  # a whole batch of prompts is one llama_decode call
        context.n_threads = context.n_threads_batch = threads
        context.no_perf = True
        self.ctx = lc.llama_init_from_model(self.model, context)
        if not self.ctx:
            raise RuntimeError(f"llama.cpp could not create a context of {context.n_ctx} tokens")
        self.vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(self.model))
        self.sequences = sequences
        self.device = "cuda (llama.cpp CUDA build)" if gpu else "cpu"
        self.format = f"GGUF {file_type}"
        self.format_detail = describe_types(tensor_types(path))
        self.file_bytes = path.stat().st_size
        self.threads = threads

    def _greedy(self, logits_row: int, eos: int | None, suppress_eos: bool) -> int:
        import numpy as np

        logits = np.ctypeslib.as_array(self._lc.llama_get_logits_ith(self.ctx, logits_row), shape=(self.vocab,))
        if suppress_eos and eos is not None:
            logits = logits.copy()
            logits[eos] = -math.inf
        return int(logits.argmax())

    def decode(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, eos: int | None,
               pin_tokens: bool) -> list[list[int]]:  # fmt: skip
        """Each prompt's new tokens (greedy); with `pin_tokens` exactly `max_new_tokens` each, otherwise each stops
        after its end-of-sequence token."""
        lc = self._lc
        lc.llama_memory_clear(lc.llama_get_memory(self.ctx), True)
        batch = lc.llama_batch_init(max(sum(map(len, prompts)), len(prompts)), 0, 1)
        try:
            entries = [(token, position, seq, position == len(ids) - 1)
                       for seq, ids in enumerate(prompts) for position, token in enumerate(ids)]  # fmt: skip
            self._run(batch, entries)
            rows = [index for index, entry in enumerate(entries) if entry[3]]
            outputs: list[list[int]] = [[] for _ in prompts]
            active = list(range(len(prompts)))
            for step in range(max_new_tokens):
                following = []
                for row, seq in zip(rows, active, strict=True):
                    token = self._greedy(row, eos, pin_tokens)
                    outputs[seq].append(token)
                    if step + 1 < max_new_tokens and (pin_tokens or token != eos):
                        following.append((token, len(prompts[seq]) + step, seq, True))
                if not following:
                    break
                self._run(batch, following)
                rows, active = list(range(len(following))), [entry[2] for entry in following]
            return outputs
        finally:
            lc.llama_batch_free(batch)

    def _run(self, batch: Any, entries: Sequence[tuple[int, int, int, bool]]) -> None:
        for index, (token, position, seq, logits) in enumerate(entries):
            batch.token[index] = token
            batch.pos[index] = position
            batch.n_seq_id[index] = 1
            batch.seq_id[index][0] = seq
            batch.logits[index] = logits
        batch.n_tokens = len(entries)
        if (status := self._lc.llama_decode(self.ctx, batch)) != 0:
            raise GenerationError(f"llama_decode returned {status}")

    def generate(self, tokenizer: Any, prompts: Sequence[str], settings: GenerationSettings,
                 max_prompt_tokens: int, pin_tokens: bool) -> GenerationResult:  # fmt: skip
        """`joulebench.serving.generate`'s pass on this engine: only the time inside llama.cpp's decoding counts."""
        from joulebench.serving import GenerationResult, answer_text, prompt_token_ids

        if settings.batch_size > self.sequences:
            raise GenerationError(f"batch of {settings.batch_size} exceeds the context's {self.sequences} sequences")
        loop_began = time.perf_counter()
        predictions: list[str] = []
        new_tokens, wall = 0, 0.0
        for start in range(0, len(prompts), settings.batch_size):
            ids = prompt_token_ids(tokenizer, prompts[start : start + settings.batch_size], max_prompt_tokens)
            began = time.perf_counter()
            outputs = self.decode(ids, settings.max_new_tokens, tokenizer.eos_token_id, pin_tokens)
            wall += time.perf_counter() - began
            for tokens in outputs:
                text, counted = answer_text(tokenizer, tokens, pin_tokens)
                predictions.append(text)
                new_tokens += counted
        return GenerationResult(predictions, new_tokens, wall, time.perf_counter() - loop_began)

    def close(self) -> None:
        if self.ctx:
            self._lc.llama_free(self.ctx)
            self.ctx = None
        if self.model:
            self._lc.llama_model_free(self.model)
            self.model = None


class LlamaCppBackend(Backend):
    def model_problem(self, config: dict[str, Any]) -> str | None:
        from joulebench.backends.gguf_export import architecture_problem

        return architecture_problem(config)

    def build(self, model: Any, tokenizer: Any, bits: int, workdir: Path, threads: int,
              sequences: int = 1, sequence_tokens: int = 512) -> LlamaCppEngine:  # fmt: skip
        """Write the float32 GGUF, quantize it to the bits' format with llama.cpp, load it."""
        from joulebench.backends.gguf_export import write_gguf

        file_type = FORMATS[bits]
        workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=workdir, prefix="gguf-") as scratch:
            full = Path(scratch) / "model-F32.gguf"
            write_gguf(model, tokenizer, full)
            target = workdir / f"model-{file_type}.gguf"
            if file_type == "F32":
                full.replace(target)
            else:
                quantize(full, target, file_type, threads)
        return LlamaCppEngine(target, file_type, threads, sequences, sequence_tokens)


BACKENDS.register("llama.cpp")(LlamaCppBackend(
    name="llama.cpp",
    formats={bits: f"GGUF {name}" for bits, name in FORMATS.items()},
    unserved={"early-exit": "llama.cpp decodes every layer: early exit needs joulebench's own decoding loop",
              "merge": "llama.cpp always serves the adapter merged: a merge form is the same GGUF file as its cell"},
    package="llama_cpp",
    install="make setup (it compiles llama-cpp-python; CMAKE_ARGS=\"-DGGML_CUDA=on\" for its CUDA build)",
))  # fmt: skip
