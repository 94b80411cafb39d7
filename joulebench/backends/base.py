"""Inference backends: how an evaluated cell is served, in which exact format, and what each backend can serve.

A backend is one module and one registration in `BACKENDS`. It declares the format each bit width becomes (`formats`),
the post-training kinds it does not serve (`unserved`), and, unless it is the reference backend (`transformers`, which
serves the cell's own bitsandbytes or float model through `joulebench.evaluate`), how a cell's model becomes its
format and is generated with (`build`). Measurement, quality scoring and ranking are the same for every backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from joulebench.registry import Registry

if TYPE_CHECKING:  # the registry is read where torch is not imported (the Snakefile, preflight)
    from joulebench.serving import GenerationResult, GenerationSettings

REFERENCE_BACKEND = "transformers"
"""The backend every grid runs: fine-tuning's ranking and the top-k selection are measured on it."""


class Engine(Protocol):
    """A built model served by a backend: the same call as `joulebench.serving.generate`, without the torch model."""

    format: str  # the exact format it runs, e.g. "GGUF Q4_K_M"
    format_detail: str  # what the file holds, e.g. tensor types and their counts
    device: str  # where it runs: "cpu", "cuda (…)"
    file_bytes: int  # the size of the file it serves

    def generate(
        self, tokenizer: Any, prompts: Sequence[str], settings: GenerationSettings, max_prompt_tokens: int,
        pin_tokens: bool,
    ) -> GenerationResult: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Backend:
    """`formats`: bits → the exact format a cell of that width is served in; a width not listed cannot be served
    (preflight refuses it). `unserved`: the post-training kinds it does not serve ("early-exit", "merge"), and why;
    those cells are not run on it, and the report says so. `sparse_kernels`: whether pruned weights can run faster
    on it. `package`: the import its `build` needs (preflight names it when missing, with `install`)."""

    name: str
    formats: dict[int, str]
    unserved: dict[str, str] = field(default_factory=dict)
    sparse_kernels: bool = False
    package: str | None = None
    install: str = ""

    def serves_kind(self, kind: str) -> bool:
        return kind not in self.unserved

    def model_problem(self, config: dict[str, Any]) -> str | None:
        """Why this backend cannot serve a model (its `config.json`, or an embedded model's architecture with
        `model_type`); None when it can."""
        return None

    def build(self, model: Any, tokenizer: Any, bits: int, workdir: Path, threads: int, sequences: int = 1,
              sequence_tokens: int = 512) -> Engine:  # fmt: skip
        raise NotImplementedError(f"backend {self.name!r} serves through joulebench.evaluate")


BACKENDS: Registry[Backend] = Registry("inference backend")


def unsupported_bits(backend: Backend, bits: Sequence[int]) -> list[int]:
    return sorted(b for b in set(bits) if b not in backend.formats)
