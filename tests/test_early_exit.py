from __future__ import annotations

import json

import pytest
import torch

from joulebench.cells import EarlyExit
from joulebench.early_exit import (
    EXIT_HEADS,
    EarlyExitDecoder,
    ExitCosts,
    ExitStats,
    SharedHeads,
    TrainedHeads,
    check_supported,
    distillation_kl,
)

LAYERS = 4
PAD, EOS = 0, 2
SIZES = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=LAYERS, num_attention_heads=2,
             num_key_value_heads=2, vocab_size=128, max_position_embeddings=128)  # fmt: skip


def tiny(kind: str = "llama", seed: int = 0) -> torch.nn.Module:
    import transformers

    config_class, model_class = {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        "gemma": (transformers.GemmaConfig, transformers.GemmaForCausalLM),
        "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
    }[kind]
    extra = {"head_dim": 32} if kind == "gemma" else {"sliding_window": None} if kind == "mistral" else {}
    torch.manual_seed(seed)
    return model_class(config_class(**SIZES, **extra)).eval()


def peaky(model: torch.nn.Module, scale: float = 8.0) -> torch.nn.Module:
    """A random model's next-token distributions are nearly flat; a larger LM head makes some of them confident."""
    with torch.no_grad():
        model.lm_head.weight.mul_(scale)
    return model


def prompts(batch: int = 3, length: int = 9, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch` prompts of different lengths, left-padded."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, SIZES["vocab_size"], (batch, length), generator=generator)
    mask = torch.ones_like(ids)
    for row in range(batch):
        mask[row, : (batch - 1 - row) * 2] = 0
    return ids.masked_fill(mask == 0, PAD), mask


def reference(model, ids, mask, new: int, pinned: bool, eos: int = EOS) -> torch.Tensor:
    return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new,
                          min_new_tokens=new if pinned else None, do_sample=False, pad_token_id=PAD,
                          eos_token_id=eos)  # fmt: skip


def decode(model, threshold: float, ids, mask, new: int, pinned: bool, heads=None, eos: int = EOS, min_layer: int = 1,
           measure: str = "softmax-gap"):  # fmt: skip
    heads = heads or SharedHeads.prepare(model, None)
    decoder = EarlyExitDecoder(model, EarlyExit(threshold, min_layer=min_layer, measure=measure), heads)
    return decoder.generate(ids, mask, new, new if pinned else None, PAD, eos), decoder.stats


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny()


@pytest.fixture(scope="module")
def windows() -> torch.Tensor:
    return torch.randint(0, SIZES["vocab_size"], (8, 32), generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("measure", ["softmax-gap", "saturation"])
@pytest.mark.parametrize("pinned", [False, True])
@pytest.mark.parametrize("batch", [3, 1])
def test_threshold_one_matches_greedy_generate(model, pinned, batch, measure):
    """CALM's confidence measures both lie in [0, 1]: at threshold 1.0 no token exits, so the output is full depth,
    and what the tests cost shows: an LM-head read per layer for the softmax gap, a cosine for saturation."""
    ids, mask = prompts(batch)
    expected = reference(model, ids, mask, 12, pinned)
    output, stats = decode(model, 1.0, ids, mask, 12, pinned, measure=measure)
    assert torch.equal(output, expected)
    assert stats.tokens == batch * 12
    assert stats.mean_exit_layer == LAYERS and stats.layer_fraction == 1.0
    assert stats.histogram == [0, 0, 0, batch * 12]
    costs = stats.costs
    assert stats.exit_tests == (LAYERS - 1) * (batch * 12 - batch)  # the first token comes from the prompt's pass
    assert stats.macs == stats.full_depth_macs + stats.test_macs
    assert stats.test_macs == stats.exit_tests * costs.test
    if measure == "softmax-gap":
        assert costs.test == costs.head == SIZES["hidden_size"] * SIZES["vocab_size"]
        assert stats.compute_fraction == pytest.approx(1 + stats.test_macs / stats.full_depth_macs)
        assert stats.compute_fraction > 1.1  # nothing exits, and every test read the LM head
    else:
        assert costs.test == 3 * SIZES["hidden_size"] and stats.compute_fraction == pytest.approx(1, abs=0.01)


def test_threshold_one_matches_when_sequences_finish_early(model):
    ids, mask = prompts()
    free = reference(model, ids, mask, 12, pinned=False, eos=-1 % SIZES["vocab_size"])
    eos = int(free[0, ids.shape[1] + 3])  # a token the first prompt produces mid-way: it now ends there
    expected = reference(model, ids, mask, 12, pinned=False, eos=eos)
    output, stats = decode(model, 1.0, ids, mask, 12, pinned=False, eos=eos)
    assert torch.equal(output, expected)
    assert (output[0, ids.shape[1] + 4 :] == PAD).all()
    assert stats.tokens == sum(int(row.tolist().index(eos)) + 1 if eos in row.tolist() else 12
                               for row in output[:, ids.shape[1] :])  # fmt: skip


@pytest.mark.parametrize("kind", ["gemma", "mistral", "qwen2"])
def test_threshold_one_matches_greedy_generate_on_other_llama_layouts(kind):
    other = tiny(kind)
    ids, mask = prompts()
    output, _ = decode(other, 1.0, ids, mask, 8, pinned=True)
    assert torch.equal(output, reference(other, ids, mask, 8, pinned=True))


def test_lower_thresholds_exit_earlier():
    model = peaky(tiny())
    ids, mask = prompts()
    means = []
    for threshold in (1.0, 0.5, 0.2, 0.05):
        output, stats = decode(model, threshold, ids, mask, 12, pinned=True)
        assert output.shape == (3, ids.shape[1] + 12)
        assert stats.tokens == 36 and sum(stats.histogram) == 36
        assert stats.computed_layers + stats.filled_layers == LAYERS * stats.tokens
        means.append(stats.mean_exit_layer)
    assert means == sorted(means, reverse=True)
    assert means[-1] < LAYERS
    assert stats.computed_layers < LAYERS * stats.tokens
    assert stats.layer_fraction < 1


def test_saturation_exits_where_consecutive_states_agree():
    """Saturation reads the exit head only where a token exits: fewer head reads than tests."""
    model = tiny()
    ids, mask = prompts()
    output, stats = decode(model, 0.05, ids, mask, 8, pinned=True, measure="saturation")
    assert output.shape == (3, ids.shape[1] + 8)
    assert stats.mean_exit_layer < LAYERS
    assert stats.head_reads < stats.exit_tests + stats.tokens


def test_min_layer_holds_exits_back():
    model = peaky(tiny())
    ids, mask = prompts()
    _, stats = decode(model, 0.05, ids, mask, 12, pinned=True, min_layer=3)
    assert stats.histogram[:2] == [0, 0]
    assert stats.mean_exit_layer >= 3


def test_skipped_layers_cache_the_exit_state_as_their_own_attention_would():
    from transformers import DynamicCache

    model = tiny()
    decoder = EarlyExitDecoder(model, EarlyExit(0.5), SharedHeads.prepare(model, None))
    hidden = torch.randn(2, 1, SIZES["hidden_size"])
    positions = torch.tensor([[5], [3]])
    position_embeddings = model.model.rotary_emb(hidden, position_ids=positions)
    filled = DynamicCache(config=model.config)
    decoder._fill(hidden, position_embeddings, filled, 0)
    for index, layer in enumerate(model.model.layers):
        own = DynamicCache(config=model.config)
        layer.self_attn(layer.input_layernorm(hidden), position_embeddings=position_embeddings, attention_mask=None,
                        past_key_values=own)  # fmt: skip
        assert torch.allclose(filled.layers[index].keys, own.layers[index].keys, atol=1e-6)
        assert torch.allclose(filled.layers[index].values, own.layers[index].values, atol=1e-6)


def test_trained_heads_reduce_distillation_kl_and_stay_exact(model, windows):
    shared = SharedHeads.prepare(model, None)
    trained = TrainedHeads.prepare(model, windows, seed=0, steps=60)
    before, after = distillation_kl(model, shared, windows), distillation_kl(model, trained, windows)
    assert len(after) == LAYERS - 1
    assert sum(after) < sum(before)
    assert all(final <= initial for final, initial in zip(trained.kl_final, trained.kl_initial, strict=True))
    record = trained.fit_record()
    assert record["kl_after"] == trained.kl_final and len(record["kl_before"]) == LAYERS - 1
    assert record["held_out_positions"] > 0 and set(record["identity_layers"]) <= set(range(1, LAYERS))
    assert shared.fit_record() == {}
    ids, mask = prompts()
    output, stats = decode(model, 1.0, ids, mask, 10, pinned=True, heads=trained)
    assert torch.equal(output, reference(model, ids, mask, 10, pinned=True))
    assert stats.mean_exit_layer == LAYERS


def test_trained_heads_are_deterministic_and_need_windows(model, windows):
    first = TrainedHeads.prepare(model, windows, seed=3, steps=5)
    second = TrainedHeads.prepare(model, windows, seed=3, steps=5)
    assert torch.equal(first.weight, second.weight) and torch.equal(first.bias, second.bias)
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="calibration windows"):
        TrainedHeads.prepare(model, None)


def test_registry_names_both_heads():
    assert EXIT_HEADS.names() == ["shared", "trained"]
    assert EXIT_HEADS.get("trained").needs_calibration and not EXIT_HEADS.get("shared").needs_calibration


def test_check_supported_rejects_other_layouts(model):
    from transformers import GPT2Config, GPT2LMHeadModel, Qwen3Config, Qwen3ForCausalLM

    check_supported(model)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=32))
    with pytest.raises(ValueError, match=r"^early exit: model type 'gpt2' is not one") as error:
        check_supported(gpt2)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="qwen3"):
        EarlyExitDecoder(Qwen3ForCausalLM(Qwen3Config(**SIZES)), EarlyExit(0.9), SharedHeads(model))
    layers = model.model.layers
    try:
        del model.model.layers
        with pytest.raises(ValueError, match="has no model.layers"):
            check_supported(model)
    finally:
        model.model.layers = layers


def test_stats_count_the_exit_tests_compute_and_serialise():
    costs = ExitCosts(layer=100, test=40, head=40, fill=20, layers=4)
    stats = ExitStats(4, costs)
    stats.record(torch.tensor([1, 4, 4]), computed=4, tests=3, reads=1)
    stats.record(torch.tensor([2, 2]), computed=2, tests=2, reads=0)
    assert stats.histogram == [1, 2, 0, 2]
    assert stats.mean_exit_layer == pytest.approx(13 / 5)
    assert stats.layer_fraction == pytest.approx((3 * 4 + 2 * 2) / (5 * 4))
    assert stats.filled_layers == 2 * 2 and stats.exit_tests == 3 * 3 + 2 * 2 and stats.head_reads == 3
    assert stats.test_macs == 13 * 40
    assert stats.macs == 16 * 100 + 13 * 40 + 3 * 40 + 4 * 20
    assert stats.compute_fraction == pytest.approx(stats.macs / (5 * (4 * 100 + 40)))
    assert stats.test_share == pytest.approx(13 * 40 / stats.macs)
    assert json.loads(json.dumps(stats.to_dict()))["compute_fraction"] == pytest.approx(stats.compute_fraction)
    stats.reset()
    assert stats == ExitStats(4, costs) and stats.compute_fraction is None


def test_threshold_one_matches_greedy_generate_at_4_bits(tmp_path):
    pytest.importorskip("bitsandbytes")
    from joulebench.models import Precision, load_model

    tiny().save_pretrained(tmp_path)
    try:
        model = load_model(str(tmp_path), Precision(4), False)
        ids, mask = prompts()
        expected = reference(model, ids.to(model.device), mask.to(model.device), 8, pinned=True)
    except (RuntimeError, ImportError, ValueError) as error:  # no 4-bit kernels for this device
        pytest.skip(f"bitsandbytes 4-bit does not run here: {error}")
    assert type(model.model.layers[0].self_attn.k_proj).__name__ == "Linear4bit"
    output, stats = decode(model, 1.0, ids, mask, 8, pinned=True)
    assert torch.equal(output, expected)
    assert stats.mean_exit_layer == LAYERS
    _, stats = decode(peaky(model, 16.0), 0.05, ids, mask, 8, pinned=True)
    assert stats.tokens == 24
