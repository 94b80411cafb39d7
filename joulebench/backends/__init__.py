"""Inference backends by registry: importing a backend's module registers it (see `base`)."""

from joulebench.backends import llama_cpp, transformers_backend  # noqa: F401
from joulebench.backends.base import BACKENDS, REFERENCE_BACKEND, Backend, Engine, unsupported_bits

__all__ = ["BACKENDS", "REFERENCE_BACKEND", "Backend", "Engine", "unsupported_bits"]
