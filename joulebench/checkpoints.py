"""Per-epoch training checkpoints, so that a killed cell resumes from its last finished epoch.

One file per cell, replaced atomically after each epoch. It holds the trainable weights (the LoRA adapter, not the
base model), the optimizer and RNG states, the finished epochs' records and a fingerprint of everything the training
depends on: a checkpoint written under other settings, data or software is discarded, never resumed from.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from joulebench.io import atomic_write_bytes

log = logging.getLogger(__name__)


def fingerprint(settings: Any, files: Iterable[str | Path] = ()) -> str:
    """SHA-256 of the settings (as canonical JSON) and of the content of every file given (folders: every file in
    them, by relative path)."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for item in files:
        root = Path(item)
        paths = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for path in paths:
            digest.update(str(path.relative_to(root) if root.is_dir() else path.name).encode())
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class EpochCheckpoints:
    path: Path
    fingerprint: str

    def load(self) -> dict[str, Any] | None:
        """The saved state when it was written for this fingerprint; a stale or unreadable one is removed."""
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # a truncated file cannot occur (atomic writes), but a foreign one can
            log.warning("checkpoint %s unreadable (%s): starting from epoch 1", self.path, err)
            self.remove()
            return None
        if state.get("fingerprint") != self.fingerprint:
            log.info("checkpoint %s was written for other settings, data or software: starting from epoch 1",
                     self.path)  # fmt: skip
            self.remove()
            return None
        return state

    def save(self, state: dict[str, Any]) -> None:
        buffer = io.BytesIO()
        torch.save({**state, "fingerprint": self.fingerprint}, buffer)
        atomic_write_bytes(self.path, buffer.getvalue())

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters() if p.requires_grad}


def restore_trainable(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    parameters = dict(model.named_parameters())
    missing = sorted(set(state) - set(parameters))
    if missing:
        raise ValueError(f"checkpoint holds parameters the model lacks: {missing[:3]}")
    with torch.no_grad():
        for name, value in state.items():
            parameters[name].copy_(value.to(parameters[name].device))


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
