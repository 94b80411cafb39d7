"""How a model's weights are stored: the bytes they really take, their float values, and the round trip of a float
weight through a storage format (quantize, read back), which is what storing a model at that precision does to it.

Formats: bitsandbytes NF4/FP4 (packed 4-bit codes, one absmax per block of 64, double-quantized to 8 bits with a
second-level absmax where chosen), LLM.int8 (int8 codes, one float32 scale per output row), plain 16/32-bit, and 2:4
semi-structured sparse (kept values plus their metadata).
"""

from __future__ import annotations

from typing import Any

import torch

from joulebench.models import Precision

BLOCKSIZE_4BIT = 64  # bitsandbytes' default, which transformers' loader uses


def float_weight(layer: torch.nn.Module) -> torch.Tensor:
    """The layer's weight as a float (out × in) tensor on its device: plain, dequantized from bitsandbytes 4-bit or
    int8 (codes × row scale / 127), or unpacked from 2:4 semi-structured storage."""
    weight = layer.weight
    kind = type(weight).__name__
    if kind == "Params4bit":
        import bitsandbytes.functional as bnbf

        return bnbf.dequantize_4bit(weight.data, weight.quant_state)
    if kind == "Int8Params":
        import bitsandbytes.functional as bnbf

        return bnbf.int8_vectorwise_dequant(weight.data, weight.SCB)
    if "SemiStructured" in kind:
        return weight.to_dense()
    return weight.data


def _tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes a stored tensor holds; a wrapper subclass (2:4 semi-structured) holds its inner tensors instead of a
    dense block, so those are counted."""
    flatten = getattr(type(tensor), "__tensor_flatten__", None)
    if flatten is not None:
        names, _ = tensor.__tensor_flatten__()
        return sum(_tensor_bytes(inner) for name in names if isinstance(inner := getattr(tensor, name), torch.Tensor))
    return tensor.numel() * tensor.element_size()


def stored_bytes(model: torch.nn.Module) -> int:
    """Bytes of every tensor the model's state holds, as `save_pretrained` writes them: packed 4-bit codes with their
    absmax (and second-level statistics), int8 codes with their row scales, the 2:4 kept values with their metadata,
    float parameters and persistent buffers; a tensor shared by two names (tied embeddings) once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for tensor in model.state_dict(keep_vars=True).values():
        if not isinstance(tensor, torch.Tensor):
            continue
        size = _tensor_bytes(tensor)
        key = (_data_pointer(tensor), size)
        if key in seen:
            continue
        seen.add(key)
        total += size
    return total


def _data_pointer(tensor: torch.Tensor) -> int:
    try:
        return tensor.data_ptr()
    except RuntimeError:  # a wrapper subclass has no storage of its own
        return id(tensor)


@torch.no_grad()
def round_trip(weight: torch.Tensor, precision: Precision) -> torch.Tensor:
    """`weight` as it reads back after being stored at `precision`, in `weight`'s own dtype, as the loader stores it:
    the weight is first read in the precision's float dtype, then NF4/FP4-quantized in blocks, or int8-quantized row
    by row from a float16 copy (LLM.int8), or kept (16 bits)."""
    if precision.bits == 32:
        return weight.clone()
    if precision.bits == 16:
        return weight.to(precision.torch_dtype).to(weight.dtype)
    import bitsandbytes.functional as bnbf

    if precision.bits == 8:
        codes, scales, _ = bnbf.int8_vectorwise_quant(weight.to(precision.torch_dtype).to(torch.float16))
        return bnbf.int8_vectorwise_dequant(codes, scales).to(weight.dtype)
    packed, state = bnbf.quantize_4bit(weight.to(precision.torch_dtype), blocksize=BLOCKSIZE_4BIT,
                                       compress_statistics=precision.double_quant_4bit,
                                       quant_type=precision.quant_type_4bit)  # fmt: skip
    return bnbf.dequantize_4bit(packed, state).to(weight.dtype)


def dequantized(model: Any, dtype: torch.dtype) -> Any:
    """The model with every weight read back from its storage into plain `dtype` tensors (bitsandbytes layers become
    `torch.nn.Linear`): the base exactly as a fine-tuning on it saw it, to merge into, prune and store again."""
    if getattr(model, "hf_quantizer", None) is not None:
        model = model.dequantize(dtype=dtype)
    return model.to(dtype)
