"""Training precision: what autocast really runs, what the master weights stay in, and the loss scaler."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from joulebench.cells import TrainVariant
from joulebench.finetune import TrainSettings, finetune
from joulebench.mixed_precision import TRAINING_PRECISIONS, backward_and_step, matmul_dtypes
from joulebench.models import Precision

from .conftest import CountingMeter, fake_monitor
from .test_models import examples, tiny_model  # noqa: F401  (fixtures)


def lora_model() -> torch.nn.Module:
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, vocab_size=96, max_position_embeddings=64)  # fmt: skip
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    return get_peft_model(LlamaForCausalLM(config), lora)


def one_step(name: str) -> tuple[torch.nn.Module, dict[str, int], dict[str, torch.Tensor]]:
    """One optimizer step of a LoRA model at training precision `name`: the model, the step's matmul dtypes and the
    trainable weights before the step."""
    model = lora_model()
    precision = TRAINING_PRECISIONS.get(name)
    precision.prepare(model)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in trainable.items()}
    optimizer = torch.optim.AdamW(trainable.values(), lr=1e-2)
    scaler = precision.scaler("cpu")
    ids = torch.randint(0, 96, (4, 24), generator=torch.Generator().manual_seed(1))
    with matmul_dtypes() as counts:
        with precision.autocast("cpu"):
            loss = model(input_ids=ids, labels=ids).loss
        backward_and_step(loss, optimizer, scaler)
    return model, dict(counts), before


@pytest.mark.parametrize(("name", "low"), [("bf16-mixed", "bfloat16"), ("16-mixed", "float16")])
def test_autocast_runs_the_matmuls_in_16_bits_while_the_master_weights_stay_float32(name, low):
    model, counts, before = one_step(name)
    # Forward and backward: every matmul of the step ran on 16-bit operands, none in float32.
    assert counts.get(low, 0) >= 20 and "float32" not in counts, counts
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in trainable.values())
    assert any(not torch.equal(p, before[n]) for n, p in trainable.items())  # the step updated them
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert all(p.dtype == torch.float32 for p in frozen)  # autocast casts per op; the stored base is untouched


def test_float32_training_runs_float32_matmuls():
    _, counts, _ = one_step("32-true")
    assert set(counts) == {"float32"}, counts


def test_pure_16_bit_keeps_the_trainable_weights_themselves_in_16_bits():
    model, counts, before = one_step("bf16-true")
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.dtype == torch.bfloat16 for p in trainable)
    assert counts.get("bfloat16", 0) > 0  # the adapters' own matmuls
    assert "float32" in counts  # the float32 base is left at its storage precision


def test_only_fp16_autocast_has_a_loss_scaler():
    scaled = {name for name in TRAINING_PRECISIONS if TRAINING_PRECISIONS.get(name).scaler("cpu") is not None}
    assert scaled == {"16-mixed"}


def test_fine_tuning_records_what_its_first_step_really_ran(tiny_model, examples, tmp_path):  # noqa: F811
    settings = TrainSettings(batch_size=8, lr=3e-3, max_prompt_tokens=64, max_target_tokens=16, lora_r=4,
                             lora_alpha=8, lora_targets=("q_proj", "v_proj"))  # fmt: skip
    with fake_monitor(CountingMeter()) as monitor:
        result = finetune(str(tiny_model), examples[:16], Precision(32), settings, 1, monitor, tmp_path / "adapter",
                          variant=TrainVariant("bf16-mixed"))  # fmt: skip
    assert result.precision == {"name": "bf16-mixed", "master_dtype": "float32", "autocast_dtype": "bfloat16",
                                "loss_scaling": False, "adam_eps": 1e-8}  # fmt: skip
    assert max(result.matmul_dtypes, key=result.matmul_dtypes.get) == "bfloat16", result.matmul_dtypes
    assert result.sparse_training["method"] == "dense"


def test_pure_float16_trains_two_steps_without_nan(tiny_model, examples, tmp_path):  # noqa: F811
    """AdamW's default eps (1e-8) rounds to 0 in float16, and LoRA's B starts at 0: the first update of A would be
    0 / 0. `16-true` raises eps to float16's smallest normal number, and two steps train."""
    from safetensors.torch import load_file

    assert torch.tensor(1e-8, dtype=torch.float16) == 0
    settings = TrainSettings(batch_size=8, lr=3e-3, max_prompt_tokens=64, max_target_tokens=16, lora_r=4,
                             lora_alpha=8, lora_targets=("q_proj", "v_proj"))  # fmt: skip
    with fake_monitor(CountingMeter()) as monitor:
        result = finetune(str(tiny_model), examples[:16], Precision(16, "float16"), settings, 1, monitor,
                          tmp_path / "adapter", variant=TrainVariant("16-true"))  # fmt: skip
    assert result.epochs[0].steps == 2 and torch.isfinite(torch.tensor(result.epochs[0].loss))
    assert result.precision["adam_eps"] == torch.finfo(torch.float16).tiny
    weights = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert all(w.dtype == torch.float16 and torch.isfinite(w).all() for w in weights.values())
    assert any(w.abs().sum() > 0 for name, w in weights.items() if "lora_B" in name)  # B moved off zero
