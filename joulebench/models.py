"""Model sources, the embedded offline model, and loading a model at a given storage precision.

Every model goes through the same `from_pretrained` path: the embedded model is saved in Hugging Face format, a hub
id is read from the local Hugging Face cache (never the network), and a local folder is read as it is.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

BITS = (4, 8, 16, 32)
DTYPES_16 = ("bfloat16", "float16")
QUANT_TYPES_4BIT = ("nf4", "fp4")
COMPUTE_DTYPES_4BIT = ("bfloat16", "float16", "float32")
UNQUANTIZED_DTYPES = ("bfloat16", "float16", "float32")


@dataclass(frozen=True)
class Precision:
    """How a model is stored for one `bits` value: a plain dtype (16/32) or a bitsandbytes quantization (4/8)."""

    bits: int
    dtype_16: str = "bfloat16"
    quant_type_4bit: str = "nf4"
    compute_dtype_4bit: str = "bfloat16"
    double_quant_4bit: bool = False
    unquantized_dtype: str | None = None  # at 4 and 8 bits, everything outside the quantized linears; None: dtype_16

    @classmethod
    def from_config(cls, bits: int, training: dict[str, Any]) -> Precision:
        if bits not in BITS:
            raise ValueError(f"bits must be one of {BITS}, got {bits}")
        precision = cls(
            bits=bits,
            dtype_16=training.get("dtype_16", "bfloat16"),
            quant_type_4bit=training.get("bnb_4bit_quant_type", "nf4"),
            compute_dtype_4bit=training.get("bnb_4bit_compute_dtype", "bfloat16"),
            double_quant_4bit=bool(training.get("bnb_4bit_use_double_quant", False)),
            unquantized_dtype=training.get("unquantized_dtype"),
        )
        # The dtype names become torch attributes: only these few, never any name a config supplies.
        for key, value, allowed in (("dtype_16", precision.dtype_16, DTYPES_16),
                                    ("bnb_4bit_quant_type", precision.quant_type_4bit, QUANT_TYPES_4BIT),
                                    ("bnb_4bit_compute_dtype", precision.compute_dtype_4bit, COMPUTE_DTYPES_4BIT),
                                    ("unquantized_dtype", precision.rest_dtype_name, UNQUANTIZED_DTYPES)):
            if value not in allowed:
                raise ValueError(f"training.{key}: {value!r} is not allowed; allowed: {', '.join(allowed)}")
        return precision

    @property
    def rest_dtype_name(self) -> str:
        """The dtype of the embeddings, norms and LM head at 4 and 8 bits: one setting for both, so the bits axis
        changes only the quantized linears."""
        return self.unquantized_dtype or self.dtype_16

    @property
    def torch_dtype(self) -> torch.dtype:
        """What the model's float parameters are stored in: all of them at 16/32 bits, those outside the quantized
        linears at 4/8 bits."""
        if self.bits == 16:
            return getattr(torch, self.dtype_16)
        if self.quantized:
            return getattr(torch, self.rest_dtype_name)
        return torch.float32

    @property
    def storage(self) -> str:
        """The format of the linear weights: nf4 / fp4, int8, bfloat16, float16 or float32."""
        if self.bits == 8:
            return "int8"
        if self.bits == 4:
            return self.quant_type_4bit
        return str(self.torch_dtype).removeprefix("torch.")

    @property
    def label(self) -> str:
        if self.bits == 8:
            return "int8 (LLM.int8)"
        if self.bits == 4:
            return self.quant_type_4bit + (" (double quant)" if self.double_quant_4bit else "")
        return self.storage

    @property
    def quantized(self) -> bool:
        return self.bits in (4, 8)

    def quantization_config(self) -> Any:
        if not self.quantized:
            return None
        from transformers import BitsAndBytesConfig

        if self.bits == 8:
            _log_once("bitsandbytes.autograd._functions")  # LLM.int8 says on every matmul that it runs in float16
            return BitsAndBytesConfig(load_in_8bit=True)
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=self.quant_type_4bit,
            bnb_4bit_compute_dtype=getattr(torch, self.compute_dtype_4bit),
            bnb_4bit_use_double_quant=self.double_quant_4bit,
        )


class _FirstOfEach(logging.Filter):
    """Lets each distinct message through once."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


def _log_once(logger_name: str) -> None:
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, _FirstOfEach) for f in logger.filters):
        logger.addFilter(_FirstOfEach())


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
