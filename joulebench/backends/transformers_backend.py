"""Hugging Face `generate` on the cell's own model: bitsandbytes at 4 and 8 bits, the 16-bit dtype, float32. It is the
reference backend: every cell runs on it (`joulebench.evaluate.evaluate_cell`), and its base model is the base of φ."""

from joulebench.backends.base import BACKENDS, REFERENCE_BACKEND, Backend

BACKENDS.register(REFERENCE_BACKEND)(Backend(
    name=REFERENCE_BACKEND,
    formats={4: "bitsandbytes nf4 / fp4", 8: "bitsandbytes LLM.int8", 16: "bfloat16 / float16", 32: "float32"},
    sparse_kernels=True,  # 2:4 semi-structured on CUDA GPUs of capability ≥ 8.0 (joulebench.sparse_kernels)
))  # fmt: skip
