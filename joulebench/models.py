"""Model sources, the embedded offline model, and loading a model at a given storage precision.

Every model goes through the same `from_pretrained` path: the embedded model is saved in Hugging Face format, a hub
id is read from the local Hugging Face cache (never the network), and a local folder is read as it is.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

BITS = (4, 8, 16, 32)
DTYPES_16 = ("bfloat16", "float16")
QUANT_TYPES_4BIT = ("nf4", "fp4")
COMPUTE_DTYPES_4BIT = ("bfloat16", "float16", "float32")


@dataclass(frozen=True)
class Precision:
    """How a model is stored for one `bits` value: a plain dtype (16/32) or a bitsandbytes quantization (4/8)."""

    bits: int
    dtype_16: str = "bfloat16"
    quant_type_4bit: str = "nf4"
    compute_dtype_4bit: str = "bfloat16"

    @classmethod
    def from_config(cls, bits: int, training: dict[str, Any]) -> Precision:
        if bits not in BITS:
            raise ValueError(f"bits must be one of {BITS}, got {bits}")
        precision = cls(
            bits=bits,
            dtype_16=training.get("dtype_16", "bfloat16"),
            quant_type_4bit=training.get("bnb_4bit_quant_type", "nf4"),
            compute_dtype_4bit=training.get("bnb_4bit_compute_dtype", "bfloat16"),
        )
        # The dtype names become torch attributes: only these few, never any name a config supplies.
        for key, value, allowed in (("dtype_16", precision.dtype_16, DTYPES_16),
                                    ("bnb_4bit_quant_type", precision.quant_type_4bit, QUANT_TYPES_4BIT),
                                    ("bnb_4bit_compute_dtype", precision.compute_dtype_4bit, COMPUTE_DTYPES_4BIT)):
            if value not in allowed:
                raise ValueError(f"training.{key}: {value!r} is not allowed; allowed: {', '.join(allowed)}")
        return precision

    @property
    def torch_dtype(self) -> torch.dtype:
        if self.bits == 16:
            return getattr(torch, self.dtype_16)
        if self.bits == 4:
            return getattr(torch, self.compute_dtype_4bit)
        return torch.float32

    @property
    def label(self) -> str:
        if self.bits == 8:
            return "int8 (LLM.int8)"
        if self.bits == 4:
            return self.quant_type_4bit
        return str(self.torch_dtype).removeprefix("torch.")

    @property
    def quantized(self) -> bool:
        return self.bits in (4, 8)

    def quantization_config(self) -> Any:
        if not self.quantized:
            return None
        from transformers import BitsAndBytesConfig

        if self.bits == 8:
            # LLM.int8 casts float32 activations to float16 and logs it on every matmul; once is enough to know.
            logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
            return BitsAndBytesConfig(load_in_8bit=True)
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=self.quant_type_4bit,
            bnb_4bit_compute_dtype=self.torch_dtype,
        )


def resolve_model_path(name: str, spec: dict[str, Any], embedded_dir: str | None) -> str:
    source = spec["source"]
    if source == "embedded":
        if embedded_dir is None:
            raise ValueError(f"model {name!r} is embedded but no built folder was given")
        return embedded_dir
    if source == "path":
        path = Path(spec["id"]).expanduser()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"models.{name}.id: {path} holds no config.json (a Hugging Face model folder)")
        return str(path)
    if source == "hub":
        return spec["id"]
    raise ValueError(f"models.{name}.source: unknown source {source!r}")


def offline_environment() -> None:
    """The harness never downloads: hub ids must already be in the local Hugging Face cache."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_tokenizer(path: str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: str, precision: Precision, trust_remote_code: bool = False) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        path,
        dtype=precision.torch_dtype,
        quantization_config=precision.quantization_config(),
        device_map=device(),
        trust_remote_code=trust_remote_code,
    )


def model_size_bytes(model: torch.nn.Module) -> int:
    """Bytes the weights really occupy: packed 4-bit and int8 storage plus their quantization statistics."""
    total = sum(t.numel() * t.element_size() for t in model.parameters())
    total += sum(t.numel() * t.element_size() for t in model.buffers())
    for module in model.modules():
        weight = getattr(module, "weight", None)
        state = getattr(weight, "quant_state", None)
        if state is not None:
            total += sum(t.numel() * t.element_size() for t in _quant_state_tensors(state))
        scb = getattr(weight, "SCB", None)
        if isinstance(scb, torch.Tensor):
            total += scb.numel() * scb.element_size()
    return total


def _quant_state_tensors(state: Any) -> Iterable[torch.Tensor]:
    for name in ("absmax", "code"):
        value = getattr(state, name, None)
        if isinstance(value, torch.Tensor):
            yield value
    nested = getattr(state, "state2", None)
    if nested is not None:
        yield from _quant_state_tensors(nested)


# --- the embedded model -------------------------------------------------------------------------------------------

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]


def train_tokenizer(texts: list[str], vocab_size: int, max_length: int) -> Any:
    """A byte-level BPE tokenizer trained on the task text, wrapped as a Hugging Face fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=max_length,
    )


def init_llama(architecture: dict[str, Any], tokenizer: Any, seed: int) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        **architecture,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    if config.vocab_size < len(tokenizer):
        raise ValueError(
            f"architecture.vocab_size {config.vocab_size} is smaller than the tokenizer ({len(tokenizer)})"
        )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)
