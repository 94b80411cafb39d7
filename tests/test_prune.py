"""Pruners, layer-wise calibration, the mask checks and the sparse-kernel plan, on small trained Llamas."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from joulebench.cells import Pruning
from joulebench.data.rca import generate_tickets
from joulebench.data.tickets import ticket_example
from joulebench.embedded import PretrainSettings, build_embedded_model
from joulebench.models import Precision, load_model, load_tokenizer
from joulebench.prune import (
    CalibrationSettings,
    MaskLost,
    PrunedPositions,
    calibration_windows,
    check_masks,
    check_setting,
    keep_mask,
    language_model_loss,
    prunable_linears,
    prune_model,
)
from joulebench.prune.sequential import decoder_blocks, first_block_inputs, next_block_inputs
from joulebench.served_model import CellSpec, prepare_model
from joulebench.sparse_kernels import DENSE_LABEL, plan_kernels

from .conftest import CountingMeter, fake_monitor

ARCHITECTURE = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                    num_key_value_heads=2, vocab_size=512, max_position_embeddings=256)  # fmt: skip
SETTINGS = [
    Pruning("magnitude", ratio=0.3),
    Pruning("magnitude", ratio=0.5, scope="global"),
    Pruning("magnitude", n=2, m=4),
    Pruning("magnitude", n=4, m=8),
    Pruning("wanda", ratio=0.5),
    Pruning("wanda", n=2, m=4),
    Pruning("wanda", n=4, m=8),
    Pruning("sparsegpt", ratio=0.3),
    Pruning("sparsegpt", n=2, m=4),
    Pruning("sparsegpt", n=4, m=8),
]


@pytest.fixture(scope="module")
def tickets():
    examples = [ticket_example({**t, "id": t["ticket_id"]}) for t in generate_tickets(120, seed=3)]
    return examples[:80], examples[80:]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tickets) -> Path:
    """A Llama with 2 blocks pre-trained for 200 steps on ticket text (held-out loss about 2.7)."""
    out = tmp_path_factory.mktemp("prune") / "base"
    with fake_monitor(CountingMeter()) as monitor:
        build_embedded_model(tickets[0], ARCHITECTURE, PretrainSettings(steps=200, batch_size=8, seq_len=64),
                             monitor, out)  # fmt: skip
    return out


@pytest.fixture(scope="module")
def windows(trained, tickets):
    tokenizer = load_tokenizer(str(trained))
    calibration = calibration_windows(tickets[0], tokenizer, CalibrationSettings(samples=16, seq_len=64))
    held_out = calibration_windows(tickets[1], tokenizer, CalibrationSettings(samples=16, seq_len=64, seed=1))
    return calibration, held_out


def nonzero_groups_ok(weight: torch.Tensor, n: int, m: int) -> bool:
    rows, cols = weight.shape
    return bool(((weight != 0).reshape(rows, cols // m, m).sum(-1) <= n).all())


def test_keep_mask_drops_the_lowest_scores():
    scores = torch.arange(1, 101, dtype=torch.float32).reshape(10, 10)
    mask = keep_mask(scores, Pruning("magnitude", ratio=0.3))
    assert (~mask).sum() == 30 and scores[~mask].max() < scores[mask].min()
    per_row = keep_mask(scores, Pruning("wanda", ratio=0.3), per_row=True)
    assert bool(((~per_row).sum(1) == 3).all())


@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8), (1, 4)])
def test_nm_keeps_the_n_highest_of_every_group(n, m):
    scores = torch.randn(16, 64, generator=torch.Generator().manual_seed(0))
    groups = keep_mask(scores, Pruning("magnitude", n=n, m=m)).reshape(16, 64 // m, m)
    assert bool((groups.sum(-1) == n).all())
    values = scores.reshape(16, 64 // m, m)
    kept_min = torch.where(groups, values, torch.inf).amin(-1)
    dropped_max = torch.where(~groups, values, -torch.inf).amax(-1)
    assert bool((kept_min >= dropped_max).all())


def test_nm_refuses_a_width_not_divisible_by_m():
    with pytest.raises(ValueError, match="divisible"):
        keep_mask(torch.randn(4, 6), Pruning("magnitude", n=2, m=4))


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.id)
def test_every_pruner_reaches_the_requested_sparsity_and_keeps_n_m(trained, windows, setting):
    model = load_model(str(trained), Precision(32))
    head, embeddings = model.lm_head.weight.clone(), model.model.embed_tokens.weight.clone()
    report, positions = prune_model(model, setting, windows[0])
    assert report.achieved == pytest.approx(setting.requested_sparsity, abs=0.005)
    assert len(report.layers) == 2 * 7 and len(positions) == 14
    if setting.scope == "layer":
        assert all(value == pytest.approx(setting.requested_sparsity, abs=0.005) for value in report.layers.values())
    if setting.is_nm:
        assert all(nonzero_groups_ok(layer.weight, setting.n, setting.m) for _, layer in prunable_linears(model))
    assert torch.equal(model.lm_head.weight, head) and torch.equal(model.model.embed_tokens.weight, embeddings)
    assert report.checks[0].lost == 0 and report.checks[0].nm_violations == 0


def add_outlier_features(model: torch.nn.Module, scale: float = 10.0, channels: int = 4) -> None:
    """Large LLMs carry a few input features with outsized activations (LLM.int8, Wanda §3); a model trained for
    seconds has none. Scaling a norm's weight on some channels by `scale` and the columns that read them by 1/scale
    creates such features without changing what the model computes."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for block in model.model.layers:
            pairs = (
                (block.input_layernorm, [block.self_attn.q_proj, block.self_attn.k_proj, block.self_attn.v_proj]),
                (block.post_attention_layernorm, [block.mlp.gate_proj, block.mlp.up_proj]),
            )
            for norm, readers in pairs:
                chosen = torch.randperm(norm.weight.numel(), generator=generator)[:channels]
                norm.weight[chosen] *= scale
                for linear in readers:
                    linear.weight[:, chosen] /= scale


def held_out_losses(model, windows, pattern: dict) -> dict[str, float]:
    losses = {}
    for method in ("magnitude", "wanda", "sparsegpt"):
        pruned = copy.deepcopy(model)
        prune_model(pruned, Pruning(method, **pattern), windows[0])
        losses[method] = language_model_loss(pruned, windows[1])
    return losses


@pytest.mark.parametrize("pattern", [{"ratio": 0.5}, {"n": 2, "m": 4}], ids=["50%", "2:4"])
def test_activation_aware_pruning_beats_magnitude_at_half_sparsity(trained, windows, pattern):
    model = load_model(str(trained), Precision(32))
    dense = language_model_loss(model, windows[1])
    plain = held_out_losses(model, windows, pattern)
    assert plain["sparsegpt"] < plain["magnitude"]

    add_outlier_features(model)
    assert language_model_loss(model, windows[1]) == pytest.approx(dense, rel=1e-4)
    losses = held_out_losses(model, windows, pattern)
    assert losses["wanda"] < losses["magnitude"] and losses["sparsegpt"] < losses["magnitude"], losses
    assert losses["wanda"] == pytest.approx(plain["wanda"], rel=1e-3)  # Wanda's score ignores the feature scale
    assert min(losses.values()) > dense


def test_sparsegpt_updates_the_weights_it_keeps(trained, windows):
    model = load_model(str(trained), Precision(32))
    before = {name: layer.weight.clone() for name, layer in prunable_linears(model)}
    prune_model(model, Pruning("sparsegpt", ratio=0.5), windows[0])
    name, layer = next(prunable_linears(model))
    kept = layer.weight != 0
    assert not torch.allclose(layer.weight[kept], before[name][kept])


@pytest.mark.parametrize("setting", [Pruning("sparsegpt", n=2, m=4), Pruning("sparsegpt", ratio=0.5)])
def test_sparsegpt_compensates_for_a_fixed_mask_instead_of_zeroing_it_afterwards(setting):
    """The zeros sparse training reached go into the sweep: they stay zero, and the layer's reconstruction error
    ‖WX − ŴX‖ is lower than pruning without them and zeroing them afterwards (the update spent on weights that are
    then removed)."""
    from joulebench.prune.sparsegpt import Hessian, sparsegpt_sweep

    generator = torch.Generator().manual_seed(0)
    rows, columns = 64, 256
    mixing = torch.randn(columns, columns, generator=generator) / columns**0.5
    inputs = torch.randn(2048, columns, generator=generator) @ (torch.eye(columns) + mixing)  # correlated features
    weight = torch.randn(rows, columns, generator=generator)
    fixed = torch.rand(rows, columns, generator=generator) < 0.2
    weight[fixed] = 0  # the trained masks already hold for the merged weights
    layer = torch.nn.Linear(columns, rows, bias=False)
    hessian = Hessian(layer)
    hessian.add_batch(inputs)

    def error(pruned: torch.Tensor) -> float:
        return float((inputs @ weight.T - inputs @ pruned.T).pow(2).sum())

    swept = weight.clone()
    mask = sparsegpt_sweep(swept, hessian.matrix(), setting, fixed)
    after = weight.clone()
    late = sparsegpt_sweep(after, hessian.matrix(), setting)
    after[fixed] = 0
    assert mask[fixed].all() and not swept[fixed].any()
    assert float((late | fixed).float().mean()) >= float(mask.float().mean())  # no sparser afterwards
    assert error(swept) < error(after)
    if setting.is_nm:
        assert (~mask).reshape(rows, -1, 4).sum(-1).max() <= 2


@pytest.mark.parametrize("bits", [4, 8])
def test_calibrated_pruners_see_the_weights_as_they_will_be_stored(trained, windows, bits):
    """With the storage round trip, every block is scored on its stored weights and stored before it feeds the next
    block: what the pruner leaves is already in the storage format (storing it again changes nothing)."""
    from functools import partial

    from joulebench.storage import round_trip

    precision = Precision(bits)
    model = load_model(str(trained), Precision(32))
    report, _ = prune_model(model, Pruning("wanda", n=2, m=4), windows[0], 4, stored=partial(round_trip,
                            precision=precision), stored_label=f"{precision.storage} as stored")  # fmt: skip
    assert report.scored_on == f"{precision.storage} as stored"
    for name, layer in prunable_linears(model):
        assert torch.equal(round_trip(layer.weight.data, precision), layer.weight.data), name
    floating = load_model(str(trained), Precision(32))
    assert prune_model(floating, Pruning("wanda", n=2, m=4), windows[0], 4)[0].scored_on == "float32"


def test_blocks_run_one_by_one_reproduce_the_model(trained, windows):
    model = load_model(str(trained), Precision(32)).eval()
    _, blocks = decoder_blocks(model)
    batches = first_block_inputs(model, blocks, windows[0][:4], batch_size=2)
    for block in blocks:
        batches = next_block_inputs(block, batches)
    sequential = model.model.norm(torch.cat([b.hidden for b in batches]))
    with torch.no_grad():
        whole = model.model(input_ids=windows[0][:4], use_cache=False).last_hidden_state
    assert torch.allclose(sequential, whole, atol=1e-5)


def test_calibration_needs_enough_training_text(trained, tickets):
    tokenizer = load_tokenizer(str(trained))
    a = calibration_windows(tickets[0], tokenizer, CalibrationSettings(samples=4, seq_len=32, seed=5))
    b = calibration_windows(tickets[0], tokenizer, CalibrationSettings(samples=4, seq_len=32, seed=5))
    assert a.shape == (4, 32) and torch.equal(a, b)
    with pytest.raises(ValueError, match="pruning.calibration"):
        calibration_windows(tickets[0][:2], tokenizer, CalibrationSettings(samples=64, seq_len=128))


@pytest.mark.parametrize("bits", [16, 8, 4])
def test_the_mask_survives_casting_and_requantization(trained, windows, bits):
    setting = Pruning("wanda", n=2, m=4)
    report = prepare_model(CellSpec(str(trained), None, Precision(bits), setting), windows[0]).prune_report
    steps = [check.step for check in report.checks]
    assert steps == ["pruned", f"stored at {Precision(bits).label}"]
    stored = report.checks[-1]
    assert stored.lost == 0 and stored.nm_violations == 0
    assert stored.achieved >= setting.requested_sparsity - 0.005


def test_a_lost_mask_is_an_error(trained):
    model = load_model(str(trained), Precision(32))
    setting = Pruning("magnitude", n=2, m=4)
    _, positions = prune_model(model, setting)
    name, layer = next(prunable_linears(model))
    with torch.no_grad():
        layer.weight[positions.get(name)] = 1.0
    with pytest.raises(MaskLost, match=name):
        check_masks(model, positions, setting, "tampered")
    assert isinstance(positions, PrunedPositions)


def test_settings_a_method_cannot_run_are_refused():
    with pytest.raises(ValueError, match="known: magnitude, none, sparsegpt, wanda"):
        check_setting(Pruning("random", ratio=0.5))
    with pytest.raises(ValueError, match="global"):
        check_setting(Pruning("wanda", ratio=0.5, scope="global"))


@pytest.mark.parametrize(
    ("setting", "bits", "capability", "sparse"),
    [
        (Pruning("wanda", n=2, m=4), 16, None, False),  # no GPU
        (Pruning("wanda", n=2, m=4), 16, (7, 5), False),  # Turing: no sparse tensor cores
        (Pruning("wanda", n=2, m=4), 4, (9, 0), False),  # bitsandbytes kernels
        (Pruning("wanda", n=4, m=8), 16, (9, 0), False),
        (Pruning("magnitude", ratio=0.5), 16, (9, 0), False),
        (Pruning("wanda", n=2, m=4), 16, (8, 0), True),
    ],
)
def test_only_2_4_at_16_bits_on_ampere_or_newer_plans_sparse_kernels(setting, bits, capability, sparse):
    plan = plan_kernels(setting, Precision(bits), True, capability)
    assert plan.sparse is sparse
    assert (plan.label == DENSE_LABEL) is not sparse and (plan.reason != "") is not sparse
    assert plan_kernels(Pruning("none"), Precision(bits), True, capability) is None


@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 0), reason="needs a GPU of sm80+"
)
def test_2_4_layers_pack_for_sparse_kernels_and_compute_the_same(trained, windows):
    from joulebench.sparse_kernels import to_semi_structured

    prepared = prepare_model(CellSpec(str(trained), None, Precision(16, "float16"), Pruning("magnitude", n=2, m=4)))
    model, positions = prepared.model, prepared.positions
    with torch.no_grad():
        dense = model(input_ids=windows[1][:2].cuda()).logits
        conversion = to_semi_structured(model)
        sparse = model(input_ids=windows[1][:2].cuda()).logits
    assert conversion.converted
    check_masks(model, positions, Pruning("magnitude", n=2, m=4), "packed")
    assert torch.allclose(dense, sparse, atol=0.05, rtol=0.05)
