"""Sparse training during LoRA fine-tuning: schedules, rewinding, resuming, and that what training sees is what
evaluation runs (the merged, masked model)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from joulebench.cells import SparseTraining
from joulebench.checkpoints import restore_trainable, trainable_state
from joulebench.finetune import train_loop
from joulebench.models import Precision, load_model
from joulebench.sparse_training import (
    PEFT_PREFIX,
    SPARSE_TRAINERS,
    SparseTrainer,
    _FrozenMaskedLinear,
    _MaskedLowRank,
    apply_masks,
    effective_weight,
    load_masks,
    masked_linears,
    save_masks,
)
from joulebench.storage import float_weight

from .conftest import CountingMeter, fake_monitor

VOCAB = 128
GRADUAL = SparseTraining.from_config({"method": "gradual", "target": 0.5, "start": 0.0, "end": 0.75})


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """A random Llama whose linear dims are multiples of 64, as bitsandbytes 4-bit on CPU needs."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=64)  # fmt: skip
    out = tmp_path_factory.mktemp("sparse") / "llama"
    LlamaForCausalLM(config).save_pretrained(out)
    return out


def lora_model(path: Path, bits: int, dropout: float = 0.0, unquantized: str | None = None) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    model = load_model(str(path), Precision(bits, unquantized_dtype=unquantized))
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=["q_proj", "v_proj"],
                        task_type="CAUSAL_LM")  # fmt: skip
    return get_peft_model(model, config)


def batches(count: int = 3, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        ids = torch.randint(0, VOCAB, (2, 12), generator=generator)
        out.append({"input_ids": ids, "labels": ids, "attention_mask": torch.ones_like(ids)})
    return out


def optimizer_of(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)


def train(model: torch.nn.Module, trainer: SparseTrainer, optimizer: torch.optim.Optimizer, data: list[dict],
          epochs: range, after_epoch: Callable[[int], None] = lambda epoch: None) -> None:  # fmt: skip
    """The hooks in the order `finetune.train_loop` calls them, with a look at the state after each epoch."""
    model.train()
    for epoch in epochs:
        losses = []
        for step, batch in enumerate(data, start=1):
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            trainer.after_step(model, epoch, step)
        trainer.after_epoch(model, optimizer, epoch, sum(losses) / len(losses))
        after_epoch(epoch)


def layer_sparsity(masks: dict[str, torch.Tensor]) -> dict[str, float]:
    return {name: float((~mask).sum()) / mask.numel() for name, mask in masks.items()}


EXPECTED_LAYERS = {f"model.layers.{i}.{name}" for i in (0, 1) for name in (
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")}  # fmt: skip


@pytest.mark.parametrize("bits", [32, 4])
def test_gradual_reaches_its_target_per_layer_in_the_training_loop(tiny_llama, bits):
    model = lora_model(tiny_llama, bits)
    data = batches(3)
    trainer = SPARSE_TRAINERS.get("gradual")(GRADUAL, epochs=2, steps_per_epoch=len(data))
    trainer.attach(model)
    assert set(trainer.masks()) == EXPECTED_LAYERS and trainer.sparsity() == 0
    with fake_monitor(CountingMeter()) as monitor:
        result = train_loop(model, lambda epoch: data, optimizer_of(model), trainer.total_epochs, monitor, "sparse",
                            len(data), sparse=trainer)  # fmt: skip
    assert len(result.epochs) == 2
    masks = trainer.masks()
    for name, sparsity in layer_sparsity(masks).items():
        assert sparsity == round(masks[name].numel() * 0.5) / masks[name].numel(), name
    summary = trainer.summary()
    assert summary["target"] == 0.5 and summary["achieved"] == pytest.approx(0.5)
    assert summary["method"] == "gradual" and summary["label"] == "gradual 50%"
    sequence = [record["sparsity"] for record in summary["records"]]
    assert sequence == sorted(sequence) and sequence[-1] == pytest.approx(0.5) and len(sequence) == 4  # t1 = 4 of 6
    assert [(r["epoch"], r["step"]) for r in summary["records"]] == [(1, 1), (1, 2), (1, 3), (2, 1)]
    assert all(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)  # the adapter learned


def test_the_gradual_schedule_is_cubic_and_ends_at_target_however_few_steps(tiny_llama):
    schedule = SPARSE_TRAINERS.get("gradual")(GRADUAL, epochs=10, steps_per_epoch=10)
    assert (schedule.t0, schedule.t1) == (0, 75)
    values = [schedule.scheduled(t) for t in range(0, 101)]
    assert values[0] == 0 and values[75:] == [0.5] * 26 and values == sorted(values)
    assert values[25] == pytest.approx(0.5 * (1 - (2 / 3) ** 3))

    late = SparseTraining.from_config({"method": "gradual", "target": 0.3, "start": 0.9, "end": 1.0, "every": 5})
    model = lora_model(tiny_llama, 32)
    trainer = SPARSE_TRAINERS.get("gradual")(late, epochs=1, steps_per_epoch=1)
    trainer.attach(model)
    train(model, trainer, optimizer_of(model), batches(1), range(1, 2))
    assert trainer.summary()["achieved"] == pytest.approx(0.3, abs=1e-3)

    model = lora_model(tiny_llama, 32)
    trainer = SPARSE_TRAINERS.get("gradual")(GRADUAL, epochs=1, steps_per_epoch=8)  # the loader yields fewer
    trainer.attach(model)
    train(model, trainer, optimizer_of(model), batches(2), range(1, 2))
    assert trainer.summary()["achieved"] == pytest.approx(0.5)
    assert trainer.records()[-1] == {"epoch": 1, "step": 8, "sparsity": pytest.approx(0.5)}


def test_lottery_prunes_each_round_rewinds_and_records_every_run(tiny_llama):
    setting = SparseTraining.from_config({"method": "lottery", "rounds": 2, "rate": 0.2, "rewind_epoch": 1})
    model = lora_model(tiny_llama, 32)
    optimizer = optimizer_of(model)
    trainer = SPARSE_TRAINERS.get("lottery")(setting, epochs=2, steps_per_epoch=2)
    assert trainer.total_epochs == 6
    trainer.attach(model)
    seen: dict[int, dict[str, Any]] = {}
    train(model, trainer, optimizer, batches(2), range(1, 7), lambda epoch: seen.update({epoch: {
        "weights": trainable_state(model), "masks": trainer.masks(), "optimizer": len(optimizer.state)}}))  # fmt: skip

    records = trainer.records()
    assert [r["round"] for r in records] == [0, 1, 2] and [r["epochs"] for r in records] == [2, 4, 6]
    for record in records:
        assert record["sparsity"] == pytest.approx(1 - 0.8 ** record["round"], abs=1e-3)
        assert record["loss"] > 0
    snapshot = trainer.snapshot()
    assert snapshot is not None
    for epoch in (2, 4):  # the end of runs 0 and 1: pruned, then rewound to the weights after epoch 1
        assert all(torch.equal(seen[epoch]["weights"][k], seen[1]["weights"][k]) for k in snapshot)
        assert seen[epoch]["optimizer"] == 0
    assert not all(torch.equal(seen[6]["weights"][k], seen[1]["weights"][k]) for k in snapshot)
    for before, after in zip(range(1, 6), range(2, 7), strict=True):
        for name, keep in seen[after]["masks"].items():
            assert not (keep & ~seen[before]["masks"][name]).any(), f"{name} regrew at epoch {after}"
    assert trainer.summary()["achieved"] == pytest.approx(setting.final_sparsity, abs=1e-3)


def test_lottery_rewinding_past_the_last_epoch_is_refused():
    setting = SparseTraining.from_config({"method": "lottery", "rounds": 1, "rate": 0.5, "rewind_epoch": 3})
    with pytest.raises(ValueError, match="rewind_epoch 3"):
        SPARSE_TRAINERS.get("lottery")(setting, epochs=2, steps_per_epoch=4)


def test_the_training_forward_is_the_merged_and_masked_model(tiny_llama, tmp_path):
    from peft import PeftModel

    model = lora_model(tiny_llama, 32, dropout=0.1)  # dropout: the training forward takes its split path
    trainer = SPARSE_TRAINERS.get("gradual")(GRADUAL, epochs=2, steps_per_epoch=3)
    trainer.attach(model)
    train(model, trainer, optimizer_of(model), batches(3), range(1, 3))
    model.eval()
    probe = batches(1, seed=7)[0]["input_ids"]
    with torch.no_grad():
        trained = model(input_ids=probe).logits
    model.save_pretrained(tmp_path / "adapter")
    save_masks(trainer.masks(), tmp_path / "masks.pt")

    merged = PeftModel.from_pretrained(load_model(str(tiny_llama), Precision(32)), tmp_path / "adapter")
    merged = merged.merge_and_unload()
    with torch.no_grad():
        unmasked = merged(input_ids=probe).logits
        assert apply_masks(merged, load_masks(tmp_path / "masks.pt")) == pytest.approx(0.5)
        evaluated = merged(input_ids=probe).logits
    assert torch.allclose(trained, evaluated, atol=1e-5, rtol=1e-4), (trained - evaluated).abs().max()
    assert not torch.allclose(trained, unmasked, atol=1e-3)


@pytest.mark.parametrize("bits", [8, 4])
def test_a_quantized_training_forward_is_its_dequantized_base_merged_and_masked(tiny_llama, bits):
    model = lora_model(tiny_llama, bits, unquantized="float32")  # float32 around the linears: an exact comparison
    trainer = SPARSE_TRAINERS.get("gradual")(GRADUAL, epochs=1, steps_per_epoch=3)
    trainer.attach(model)
    train(model, trainer, optimizer_of(model), batches(3), range(1, 2))
    assert trainer.sparsity() == pytest.approx(0.5)

    reference = load_model(str(tiny_llama), Precision(32))
    trained = dict(model.named_parameters())
    masks = trainer.masks()
    modules = dict(masked_linears(model))
    for layer, module in modules.items():  # the dequantized base is the stored one, to quantization error
        original = reference.get_submodule(layer).weight
        error = float_weight(module.get_base_layer() if layer.endswith(("q_proj", "v_proj")) else module) - original
        assert error.abs().max() < {8: 0.01, 4: 0.2}[bits] * original.abs().max(), layer
    with torch.no_grad():
        for name, parameter in reference.named_parameters():
            layer = name.removesuffix(".weight")
            if layer in masks:
                parameter.copy_(effective_weight(modules[layer]) * masks[layer])
            else:
                parameter.copy_(trained[PEFT_PREFIX + name])
        model.eval()
        probe = batches(1, seed=7)[0]["input_ids"]
        expected, got = reference(input_ids=probe).logits, model(input_ids=probe).logits
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4), (got - expected).abs().max()


def test_masked_layers_give_the_gradients_of_the_dense_formula():
    """Backward rebuilds the masked weights instead of keeping them; it must match autograd through W ⊙ M."""
    torch.manual_seed(0)
    base = torch.nn.Linear(16, 8, dtype=torch.float64).requires_grad_(False)
    keep = torch.rand(8, 16) > 0.4
    x = torch.randn(2, 3, 16, dtype=torch.float64, requires_grad=True)
    a = torch.randn(4, 16, dtype=torch.float64, requires_grad=True)
    b = torch.randn(8, 4, dtype=torch.float64, requires_grad=True)

    def masked(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return _FrozenMaskedLinear.apply(x, base, keep) + _MaskedLowRank.apply(x, a, b, 2.0, keep)

    def dense(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, (base.weight + 2.0 * b @ a) * keep, base.bias)

    assert torch.autograd.gradcheck(masked, (x, a, b))
    grads = [torch.autograd.grad(f(x, a, b).square().sum(), (x, a, b)) for f in (masked, dense)]
    assert all(torch.allclose(g, h) for g, h in zip(*grads, strict=True))


@pytest.mark.parametrize("method", ["gradual", "lottery"])
def test_a_resumed_trainer_continues_with_identical_masks(tiny_llama, method):
    setting = GRADUAL if method == "gradual" else SparseTraining.from_config({"method": "lottery", "rate": 0.3})
    data = batches(2)

    def start() -> tuple[torch.nn.Module, SparseTrainer, torch.optim.Optimizer]:
        model = lora_model(tiny_llama, 32)
        trainer = SPARSE_TRAINERS.get(method)(setting, epochs=1 if method == "lottery" else 2, steps_per_epoch=2)
        trainer.attach(model)
        return model, trainer, optimizer_of(model)

    model, trainer, optimizer = start()
    train(model, trainer, optimizer, data, range(1, 2))
    buffer = io.BytesIO()
    torch.save({"trainable": trainable_state(model), "optimizer": optimizer.state_dict(),
                "sparse": trainer.state_dict()}, buffer)  # fmt: skip
    train(model, trainer, optimizer, data, range(2, trainer.total_epochs + 1))

    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # as EpochCheckpoints loads it
    resumed_model, resumed, resumed_optimizer = start()
    restore_trainable(resumed_model, state["trainable"])
    resumed_optimizer.load_state_dict(state["optimizer"])
    resumed.load_state_dict(state["sparse"], resumed_model)
    assert resumed.records() == state["sparse"]["records"]
    train(resumed_model, resumed, resumed_optimizer, data, range(2, resumed.total_epochs + 1))

    expected, got = trainer.masks(), resumed.masks()
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    assert resumed.records() == trainer.records() and trainer.sparsity() > 0
    with pytest.raises(ValueError, match="cannot resume"):
        SPARSE_TRAINERS.get("dense")(SparseTraining(), 2, 2).load_state_dict(state["sparse"], resumed_model)


def test_dense_attaches_nothing(tiny_llama):
    model = lora_model(tiny_llama, 32)
    trainer = SPARSE_TRAINERS.get("dense")(SparseTraining(), epochs=3, steps_per_epoch=2)
    trainer.attach(model)
    assert trainer.total_epochs == 3 and trainer.masks() == {} and trainer.records() == []
    assert not any("forward" in vars(module) for module in model.modules())
    assert trainer.summary() == {"method": "dense", "label": "dense", "target": 0.0, "achieved": 0.0, "records": []}
    trainer.load_state_dict(trainer.state_dict(), model)


def test_masks_survive_saving_and_applying_them_checks_every_layer(tiny_llama, tmp_path):
    masks = {"model.layers.0.mlp.up_proj": torch.rand(128, 64) > 0.5, "odd": torch.rand(3, 5) > 0.5}
    save_masks(masks, tmp_path / "masks.pt")
    loaded = load_masks(tmp_path / "masks.pt")
    assert loaded.keys() == masks.keys() and all(torch.equal(loaded[k], masks[k]) for k in masks)

    model = load_model(str(tiny_llama), Precision(32))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="layer odd"):
        apply_masks(model, masks)
    wrong_shape = {"model.layers.1.mlp.down_proj": torch.ones(128, 64, dtype=torch.bool)}
    with pytest.raises(ValueError, match="model.layers.1.mlp.down_proj: shape"):
        apply_masks(model, wrong_shape)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched when refused
    keep = masks["model.layers.0.mlp.up_proj"]
    achieved = apply_masks(model, {"model.layers.0.mlp.up_proj": keep})
    assert achieved == pytest.approx(float((~keep).sum()) / keep.numel())
    assert not model.model.layers[0].mlp.up_proj.weight[~keep].any()


@pytest.mark.parametrize(("method", "bits"), [("sparsegpt", 16), ("magnitude", 4)])
def test_pruning_after_sparse_training_keeps_the_trained_zeros(tiny_llama, tmp_path, method, bits):
    """The trained masks go into the pruner as weights it must prune (SparseGPT compensates for them in its sweep),
    so the stored cell holds both the trained zeros and the pruner's N:M pattern."""
    from joulebench.cells import Pruning
    from joulebench.finetune import MASKS_FILE
    from joulebench.served_model import CellSpec, prepare_model

    model = lora_model(tiny_llama, 32)
    trainer = SPARSE_TRAINERS.get("gradual")(GRADUAL, epochs=2, steps_per_epoch=3)
    trainer.attach(model)
    train(model, trainer, optimizer_of(model), batches(3), range(1, 3))
    adapter = tmp_path / "adapter"
    model.save_pretrained(adapter)
    save_masks(trainer.masks(), adapter / MASKS_FILE)
    calibration = torch.randint(0, VOCAB, (4, 16), generator=torch.Generator().manual_seed(3))
    spec = CellSpec(str(tiny_llama), adapter, Precision(bits), Pruning(method, n=2, m=4))
    prepared = prepare_model(spec, calibration if method == "sparsegpt" else None, 2)
    pruned, report = prepared.model, prepared.prune_report
    stored = f"stored at {Precision(bits).label}"
    assert [check.step for check in report.checks][-2:] == ["sparse-training masks kept", stored]
    for name, keep in trainer.masks().items():
        weight = float_weight(dict(pruned.named_modules())[name])
        assert not weight[~keep].any(), name
    assert report.achieved >= 0.5
