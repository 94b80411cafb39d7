"""The embedded model, loading by local path and by hub id from the cache, precisions, fine-tuning, evaluation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from joulebench.cells import Pruning
from joulebench.data.rca import generate_tickets
from joulebench.data.tickets import ticket_example
from joulebench.embedded import PretrainSettings, build_embedded_model
from joulebench.energy import EnergySettings
from joulebench.evaluate import GenerationSettings, evaluate_cell
from joulebench.finetune import TrainSettings, finetune
from joulebench.metrics import MetricSettings
from joulebench.models import Precision, load_model, resolve_model_path
from joulebench.served_model import CellSpec, prepare_model
from joulebench.sparse_kernels import DENSE_LABEL
from joulebench.storage import float_weight, round_trip, stored_bytes

from .conftest import CountingMeter, fake_monitor

ARCHITECTURE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=1,
                    num_key_value_heads=1, vocab_size=512, max_position_embeddings=256)  # fmt: skip


@pytest.fixture(scope="session")
def examples():
    return [ticket_example({**t, "id": t["ticket_id"]}) for t in generate_tickets(40, seed=3)]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, examples) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "base"
    with fake_monitor(CountingMeter()) as monitor:
        result = build_embedded_model(examples, ARCHITECTURE, PretrainSettings(steps=30, batch_size=8, seq_len=64),
                                      monitor, out)  # fmt: skip
    assert len(result.epochs) == 1 and result.energy["total_kwh"] > 0
    return out


def test_embedded_model_is_a_hugging_face_folder(tiny_model):
    assert (tiny_model / "config.json").is_file() and (tiny_model / "tokenizer.json").is_file()
    config = json.loads((tiny_model / "config.json").read_text())
    assert config["model_type"] == "llama" and config["hidden_size"] % 64 == 0
    assert resolve_model_path("tiny", {"source": "path", "id": str(tiny_model)}, None) == str(tiny_model)


def test_missing_local_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="models.m.id"):
        resolve_model_path("m", {"source": "path", "id": str(tmp_path / "absent")}, None)


def test_a_hub_id_loads_from_the_local_cache_offline(tiny_model, tmp_path):
    """Lay the model out as the Hugging Face cache does and load it by hub id with the network forbidden."""
    revision = "0" * 40
    repo = tmp_path / "hub" / "models--joulebench--tiny-llama"
    shutil.copytree(tiny_model, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    code = (
        "from joulebench.models import Precision, load_model, load_tokenizer, resolve_model_path\n"
        "path = resolve_model_path('t', {'source': 'hub', 'id': 'joulebench/tiny-llama'}, None)\n"
        "model = load_model(path, Precision(32)); tokenizer = load_tokenizer(path)\n"
        "print(type(model).__name__, len(tokenizer))\n"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("LlamaForCausalLM")


def test_sizes_shrink_with_bits(tiny_model):
    sizes = {bits: stored_bytes(load_model(str(tiny_model), Precision(bits))) for bits in (4, 8, 16, 32)}
    assert sizes[4] < sizes[8] < sizes[16] < sizes[32]
    assert sizes[16] == pytest.approx(sizes[32] / 2, rel=0.01)


def _saved_tensor_bytes(folder: Path) -> int:
    from safetensors import safe_open

    total = 0
    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), "pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                tensor = handle.get_tensor(key)
                total += tensor.numel() * tensor.element_size()
    return total


@pytest.mark.parametrize("double_quant", [False, True])
def test_a_4bit_model_size_is_the_bytes_it_stores(tiny_model, tmp_path, double_quant):
    """Counted by hand: per quantized linear of n weights, n/2 bytes of packed NF4 codes, one absmax per block of 64
    (float32, or 8-bit with a float32 second-level absmax per 256 and its 256-entry code table when double-quantized)
    and the 16-entry NF4 table; the rest (embeddings, norms; the LM head is tied to the embeddings) in bfloat16; plus
    bitsandbytes' metadata record."""
    precision = Precision(4, double_quant_4bit=double_quant)
    model = load_model(str(tiny_model), precision)
    expected = 0
    for name, value in model.state_dict().items():
        if ".quant_state." in name:  # the serialised QuantState: a small JSON record per layer
            expected += value.numel()
    for module in model.modules():
        if type(module).__name__ == "Linear4bit":
            n = module.in_features * module.out_features
            blocks = n // 64
            expected += n // 2 + 16 * 4
            expected += blocks + -(-blocks // 256) * 4 + 256 * 4 if double_quant else blocks * 4
        elif isinstance(module, torch.nn.Embedding) or "Norm" in type(module).__name__:
            expected += sum(p.numel() * 2 for p in module.parameters(recurse=False))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert stored_bytes(model) == expected
    model.save_pretrained(tmp_path / "saved")
    assert stored_bytes(model) == _saved_tensor_bytes(tmp_path / "saved")  # what save_pretrained writes


def test_a_wrapped_tensor_counts_what_it_holds():
    """A wrapper subclass (2:4 semi-structured storage is one) holds inner tensors, not its dense shape."""
    from torch.testing._internal.two_tensor import TwoTensor

    from joulebench.storage import _tensor_bytes

    wrapped = TwoTensor(torch.zeros(4, 4), torch.zeros(4, 4))
    assert _tensor_bytes(wrapped) == 2 * 64 and wrapped.numel() * wrapped.element_size() == 64


@pytest.mark.parametrize("precision", [Precision(4), Precision(4, double_quant_4bit=True), Precision(8),
                                       Precision(8, unquantized_dtype="float32"), Precision(16)])  # fmt: skip
def test_round_trip_is_what_loading_at_the_precision_stores(tiny_model, precision):
    weight = load_model(str(tiny_model), Precision(32)).model.layers[0].mlp.down_proj.weight.data
    stored = load_model(str(tiny_model), precision).model.layers[0].mlp.down_proj
    assert torch.equal(round_trip(weight, precision), float_weight(stored).float())


def test_4_and_8_bit_models_keep_everything_unquantized_in_one_16_bit_dtype(tiny_model):
    for bits in (4, 8, 16):
        model = load_model(str(tiny_model), Precision(bits))
        dtypes = {p.dtype for name, p in model.named_parameters() if ".layers." not in name or "norm" in name}
        assert dtypes == {torch.bfloat16}, (bits, dtypes)


@pytest.mark.parametrize("bits", [4, 8])
def test_an_unpruned_quantized_cell_serves_the_model_fine_tuning_trained(tiny_model, examples, bits, tmp_path,
                                                                          monkeypatch):  # fmt: skip
    """The evaluation's model (the adapter unmerged on the bitsandbytes base) gives the trained PEFT model's logits;
    merging the adapter and re-quantizing the sum (the `requantize` merge form) does not."""
    import peft

    trained = []

    def kept(*args, **kwargs):
        trained.append(get_peft_model(*args, **kwargs))
        return trained[-1]

    get_peft_model = peft.get_peft_model
    monkeypatch.setattr(peft, "get_peft_model", kept)
    settings = TrainSettings(batch_size=8, lr=2e-2, max_prompt_tokens=96, max_target_tokens=48,
                             lora_targets=("q_proj", "v_proj", "up_proj"))  # fmt: skip
    precision = Precision(bits)
    with fake_monitor(CountingMeter()) as monitor:
        finetune(str(tiny_model), examples[:24], precision, settings, 2, monitor, tmp_path / "adapter")
    ids = torch.randint(4, 500, (3, 20), generator=torch.Generator().manual_seed(0))

    def logits(model):
        with torch.no_grad():
            return model.eval()(input_ids=ids).logits.float()

    from joulebench.cells import Merge

    expected = logits(trained[0])
    unmerged = prepare_model(CellSpec(str(tiny_model), tmp_path / "adapter", precision, Pruning("none")))
    requantized = prepare_model(CellSpec(str(tiny_model), tmp_path / "adapter", precision, Pruning("none"),
                                         merge=Merge("requantize")))  # fmt: skip
    storage = precision.storage
    assert (unmerged.form, requantized.form) == (f"adapter on {storage} base", f"merged → {storage}")
    assert torch.equal(logits(unmerged.model), expected)
    assert (logits(requantized.model) - expected).abs().max() > 1e-3
    assert stored_bytes(unmerged.model) > stored_bytes(requantized.model)  # the adapter is stored beside the base


@pytest.mark.parametrize("bits", [4, 8, 16, 32])
def test_finetuning_lowers_the_loss_and_saves_an_adapter(tiny_model, examples, bits, tmp_path):
    settings = TrainSettings(batch_size=8, lr=3e-3, max_prompt_tokens=96, max_target_tokens=48,
                             lora_targets=("q_proj", "v_proj"))  # fmt: skip
    with fake_monitor(CountingMeter()) as monitor:
        result = finetune(str(tiny_model), examples[:24], Precision(bits), settings, 3, monitor, tmp_path / "adapter")
    losses = [epoch.loss for epoch in result.epochs]
    assert losses[-1] < losses[0], losses
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert all(epoch.energy["total_kwh"] > 0 and epoch.peak_mem_mb > 0 for epoch in result.epochs)
    assert result.energy["total_kwh"] >= sum(epoch.energy["total_kwh"] for epoch in result.epochs)


@pytest.mark.parametrize("bits", [4, 32])
def test_a_fine_tuning_interrupted_after_epoch_1_resumes_to_the_same_adapter(tiny_model, examples, bits, tmp_path,
                                                                              monkeypatch):  # fmt: skip
    from safetensors.torch import load_file

    import joulebench.finetune as module
    from joulebench.checkpoints import EpochCheckpoints

    settings = TrainSettings(batch_size=8, lr=3e-3, max_prompt_tokens=96, max_target_tokens=48,
                             lora_targets=("q_proj", "v_proj"))  # fmt: skip
    checkpoints = EpochCheckpoints(tmp_path / "state.pt", "settings-hash")

    def run(out: str, with_checkpoints: bool):
        with fake_monitor(CountingMeter()) as monitor:
            return finetune(str(tiny_model), examples[:24], Precision(bits), settings, 3, monitor, tmp_path / out,
                            checkpoints=checkpoints if with_checkpoints else None)  # fmt: skip

    clean = run("clean", False)
    batches = module.shuffled_batches

    def killed_in_epoch_2(pairs, batch_size, pad_id, seed):
        if seed == settings.seed + 2:
            raise KeyboardInterrupt("killed")
        return batches(pairs, batch_size, pad_id, seed)

    monkeypatch.setattr(module, "shuffled_batches", killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run("resumed", True)
    assert torch.load(checkpoints.path, weights_only=True)["epoch"] == 1 and not (tmp_path / "resumed").exists()
    monkeypatch.setattr(module, "shuffled_batches", batches)
    resumed = run("resumed", True)

    assert resumed.resumed_from_epoch == 1 and clean.resumed_from_epoch == 0
    assert [e.loss for e in resumed.epochs] == pytest.approx([e.loss for e in clean.epochs], rel=1e-5)
    weights = [load_file(tmp_path / out / "adapter_model.safetensors") for out in ("clean", "resumed")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.allclose(weights[0][k], weights[1][k], rtol=1e-4, atol=1e-6) for k in weights[0])
    assert not checkpoints.path.exists()  # removed once the adapter is saved


def test_a_stale_checkpoint_is_discarded(tmp_path):
    from joulebench.checkpoints import EpochCheckpoints

    EpochCheckpoints(tmp_path / "state.pt", "old settings").save({"epoch": 1})
    assert EpochCheckpoints(tmp_path / "state.pt", "new settings").load() is None
    assert not (tmp_path / "state.pt").exists()


def test_a_diverging_loss_stops_the_cell_at_once(tiny_model, examples, tmp_path):
    from joulebench.failures import NonFiniteLoss, describe

    settings = TrainSettings(batch_size=4, lr=1e6, max_prompt_tokens=96, max_target_tokens=48)
    with fake_monitor(CountingMeter()) as monitor, pytest.raises(NonFiniteLoss) as stopped:
        finetune(str(tiny_model), examples[:24], Precision(32), settings, 3, monitor, tmp_path / "adapter")
    assert "epoch 1" in str(stopped.value) and not (tmp_path / "adapter").exists()
    assert describe(stopped.value)["kind"] == "non-finite loss"


def test_evaluating_a_pruned_4bit_cell(tiny_model, examples):
    with fake_monitor(CountingMeter()) as monitor:
        result = evaluate_cell(
            str(tiny_model), None, Precision(4), Pruning("magnitude", n=2, m=4), examples[:4],
            GenerationSettings(batch_size=4, max_new_tokens=8), TrainSettings(max_prompt_tokens=96),
            MetricSettings(), monitor, EnergySettings(repeats=5, warmup=1),
        )  # fmt: skip
    assert len(result.predictions) == 4
    assert result.prune["achieved"] == pytest.approx(0.5, abs=0.005)
    assert [check["step"] for check in result.prune["checks"]] == ["pruned", "stored at nf4"]
    assert result.kernel["label"] == DENSE_LABEL and result.speedup_vs_dense is None  # CPU: masked-dense
    assert 0 < result.answer_tokens <= 4 * 8
    assert len(result.repeats) == 5 and all(r["tokens"] == 4 * 8 for r in result.repeats)  # pinned: equal work
    assert result.tokens_per_repeat == 32 and result.tokens_per_s["n"] == 5 and result.tokens_per_s["mean"] > 0
    # Rounds interleave a pinned pass and an answer pass (stops at end-of-sequence): A B A B ...
    assert [(r["round"], r["pinned"]) for r in result.repeats] == [(i, True) for i in range(1, 6)]
    assert [(r["round"], r["pinned"]) for r in result.answer_repeats] == [(i, False) for i in range(1, 6)]
    assert all(r["tokens"] == result.answer_tokens for r in result.answer_repeats) and result.answers_stable
    # CountingMeter advances 2e-6 kWh a reading: each pass's window spans one step.
    assert result.infer_kwh["mean"] == pytest.approx(2e-6) and result.infer_kwh["cv"] == pytest.approx(0)
    assert result.j_per_token["mean"] == pytest.approx(2e-6 * 3.6e6 / 32)
    assert result.wh_per_query["mean"] == pytest.approx(2e-6 * 1000 / 4)  # one pass's energy over its 4 queries
    # Batch-1 latency: time to first token and per output token after it, over the prompts (4 here, 8 at most).
    assert result.ttft_s["n"] == 4 and result.ttft_s["mean"] > 0 and result.tpot_s["mean"] > 0
    assert "batch 1" in result.latency["method"]
    # Served beside its unpruned parent in the same rounds: the comparison with it is paired.
    parent = result.parent_comparison
    assert [p["round"] for p in parent["repeats"]] == [1, 2, 3, 4, 5]
    assert parent["energy"]["paired"] and parent["speed"]["paired"]
    assert set(result.quality) >= {"bleu", "rouge1", "rouge2", "rougeL", "meteor", "bertscore_f1", "cosine"}
    assert result.energy["total_kwh"] > 0 and result.model_size_mb > 0


def test_precision_settings():
    assert Precision(32).torch_dtype == torch.float32 and Precision(32).quantization_config() is None
    assert Precision(16).torch_dtype == torch.bfloat16
    assert Precision(8).quantization_config().load_in_8bit
    four = Precision(4).quantization_config()
    assert four.load_in_4bit and four.bnb_4bit_quant_type == "nf4"
    with pytest.raises(ValueError):
        Precision.from_config(12, {})


def test_a_sparse_kernel_cell_alternates_with_its_masked_dense_twin(tiny_model, examples, monkeypatch):
    """Where 2:4 sparse kernels run (a CUDA GPU; faked here), the packed model and its masked-dense twin are measured
    in the same rounds, A B A B, and the speed-up is their paired ratio."""
    import joulebench.evaluate as evaluate_module
    from joulebench.sparse_kernels import Conversion, KernelPlan

    monkeypatch.setattr(evaluate_module, "plan_kernels", lambda *a: KernelPlan(True, "2:4 semi-structured (fake)", ""))
    monkeypatch.setattr(evaluate_module, "to_semi_structured", lambda model: Conversion())
    with fake_monitor(CountingMeter()) as monitor:
        result = evaluate_cell(
            str(tiny_model), None, Precision(32), Pruning("magnitude", n=2, m=4), examples[:4],
            GenerationSettings(batch_size=4, max_new_tokens=8, latency_prompts=0), TrainSettings(max_prompt_tokens=96),
            MetricSettings(), monitor, EnergySettings(repeats=5, warmup=1),
        )  # fmt: skip
    dense = result.dense_comparison["repeats"]
    assert [p["round"] for p in dense] == [p["round"] for p in result.repeats] == [1, 2, 3, 4, 5]
    assert result.dense_comparison["speedup"]["paired"]
    assert result.speedup_vs_dense == pytest.approx(result.dense_comparison["speedup"]["estimate"])
    assert result.ttft_s is None and "not measured" in result.latency["method"]
