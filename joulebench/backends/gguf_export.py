"""A Hugging Face Llama model in memory → a float32 GGUF file, the way llama.cpp's `convert_hf_to_gguf.py` maps it.

The converter ships inside llama.cpp's source tree, not in any wheel, so the mapping is done here with the `gguf`
package (llama.cpp's own writer and tensor-name map): the hyper-parameters, the Q/K rows permuted to llama.cpp's
RoPE layout, Llama 3's RoPE frequency factors, and the tokenizer's vocabulary, merges and special tokens. The float32
file is then quantized by llama.cpp's own quantizer (`joulebench.backends.llama_cpp`). Only the Llama architecture is
mapped; another gets a one-line error (preflight checks a model's `config.json` before any job).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # architecture_problem is read by preflight, where torch is not imported
    import numpy as np
    import torch

ARCHITECTURES = ("LlamaForCausalLM",)


class UnsupportedModel(ValueError):
    pass


def architecture_problem(config: dict[str, Any]) -> str | None:
    """Why a model (its `config.json` as a dict) cannot become a GGUF file here; None when it can."""
    names = config.get("architectures") or [config.get("model_type", "?")]
    if names[0] not in ARCHITECTURES and config.get("model_type") != "llama":
        return f"architecture {names[0]} has no GGUF mapping here (supported: {', '.join(ARCHITECTURES)})"
    rope = _rope(config)
    if rope.get("rope_type", "default") not in ("default", "linear", "llama3"):
        return f"RoPE scaling {rope['rope_type']!r} has no GGUF mapping here (supported: default, linear, llama3)"
    return None


def _rope(config: dict[str, Any]) -> dict[str, Any]:
    """RoPE settings, whether transformers keeps them in `rope_parameters` (5.x) or `rope_scaling` + `rope_theta`."""
    rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    rope.setdefault("rope_theta", config.get("rope_theta", 10000.0))
    rope["rope_type"] = rope.get("rope_type", rope.get("type", "default"))
    return rope


def permute_rows(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Hugging Face's rotate-half Q/K rows in llama.cpp's interleaved RoPE order (per head: pairs (i, i + d/2))."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(
        weight.shape)  # fmt: skip


def llama3_rope_factors(rope: dict[str, Any], head_dim: int) -> np.ndarray:
    import numpy as np

    base = rope.get("rope_theta", 10000.0)
    freqs = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    factor, low, high = rope.get("factor", 8.0), rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old_context = rope.get("original_max_position_embeddings", 8192)
    factors = []
    for freq in freqs:
        wavelength = 2 * math.pi / freq
        if wavelength < old_context / high:
            factors.append(1.0)
        elif wavelength > old_context / low:
            factors.append(factor)
        else:
            smooth = (old_context / wavelength - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(factors, dtype=np.float32)


def vocabulary(tokenizer: Any, vocab_size: int) -> tuple[list[str], list[int], list[str]]:
    """Tokens (padded to the model's vocab size), their GGUF types and the BPE merges, from the fast tokenizer."""
    import gguf

    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    special = set(tokenizer.all_special_ids)
    tokens, types = [], []
    for index in range(vocab_size):
        if index not in by_id:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(by_id[index])
            types.append(gguf.TokenType.CONTROL if index in special else gguf.TokenType.NORMAL)
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return tokens, [int(t) for t in types], merges


def write_gguf(model: Any, tokenizer: Any, path: Path) -> None:
    """`model` (a LlamaForCausalLM, float weights) and its tokenizer as one float32 GGUF file at `path`."""
    import gguf
    import torch

    config = model.config.to_dict()
    if problem := architecture_problem(config):
        raise UnsupportedModel(problem)
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    layers, vocab_size = config["num_hidden_layers"], config["vocab_size"]
    rope = _rope(config)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(layers)
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    writer.add_rope_dimension_count(head_dim)
    if rope["rope_type"] == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    writer.add_vocab_size(vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    tokens, types, merges = vocabulary(tokenizer, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    if merges:
        writer.add_token_merges(merges)
    for key, token_id in (("bos", tokenizer.bos_token_id), ("eos", tokenizer.eos_token_id),
                          ("unk", tokenizer.unk_token_id), ("pad", tokenizer.pad_token_id)):  # fmt: skip
        if token_id is not None:
            getattr(writer, f"add_{key}_token_id")(int(token_id))
    writer.add_add_bos_token(False)  # joulebench tokenizes itself and adds the BOS token (joulebench.serving)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, layers)
    if rope["rope_type"] == "llama3":
        writer.add_tensor(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS], llama3_rope_factors(rope, head_dim))
    tied = bool(config.get("tie_word_embeddings"))
    for name, tensor in model.state_dict().items():
        if name.endswith("rotary_emb.inv_freq") or (tied and name == "lm_head.weight"):
            continue
        data = tensor.detach().to(torch.float32).cpu()  # state_dict tensors need no grad
        if name.endswith("q_proj.weight"):
            data = permute_rows(data, heads)
        elif name.endswith("k_proj.weight"):
            data = permute_rows(data, kv_heads)
        mapped = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise UnsupportedModel(f"tensor {name} has no GGUF name")
        writer.add_tensor(mapped, data.numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
