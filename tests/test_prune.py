from __future__ import annotations

import pytest
import torch

from joulebench.cells import Pruning
from joulebench.prune import magnitude_mask, measure_sparsity, nm_mask, prune_model


def test_magnitude_drops_the_smallest_share():
    weight = torch.arange(1, 101, dtype=torch.float32).reshape(10, 10)
    mask = magnitude_mask(weight, Pruning("magnitude", ratio=0.3))
    assert (~mask).sum() == 30
    assert weight[~mask].max() < weight[mask].min()


@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8), (1, 4)])
def test_nm_keeps_n_largest_in_every_group(n, m):
    weight = torch.randn(16, 64, generator=torch.Generator().manual_seed(0))
    mask = nm_mask(weight, Pruning("nm", n=n, m=m))
    groups = mask.reshape(16, 64 // m, m)
    assert bool((groups.sum(-1) == n).all())
    magnitudes = weight.abs().reshape(16, 64 // m, m)
    kept_min = torch.where(groups, magnitudes, torch.inf).amin(-1)
    dropped_max = torch.where(~groups, magnitudes, -torch.inf).amax(-1)
    assert bool((kept_min >= dropped_max).all())


def test_nm_refuses_a_width_not_divisible_by_m():
    with pytest.raises(ValueError, match="divisible"):
        nm_mask(torch.randn(4, 6), Pruning("nm", n=2, m=4))


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=1,
                         num_key_value_heads=1, vocab_size=128)
    return LlamaForCausalLM(config)


@pytest.mark.parametrize(
    ("setting", "expected"),
    [(Pruning("magnitude", ratio=0.3), 0.3), (Pruning("nm", n=2, m=4), 0.5), (Pruning("none"), 0.0)],
)
def test_model_reaches_the_requested_sparsity_and_leaves_head_and_embeddings(setting, expected):
    model = _tiny_llama()
    head_before = model.lm_head.weight.clone()
    report = prune_model(model, setting)
    assert report.achieved == pytest.approx(expected, abs=0.005)
    assert all(value == pytest.approx(expected, abs=0.01) for value in report.layers.values())
    assert len(report.layers) == 2 * 7
    assert torch.equal(model.lm_head.weight, head_before)
    assert measure_sparsity(model, setting).achieved == report.achieved
