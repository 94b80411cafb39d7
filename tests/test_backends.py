"""Inference backends: llama.cpp's GGUF conversion and kernels against transformers, the preflight of the axis, and
the summary's rows per (cell, backend)."""

from __future__ import annotations

import copy

import pytest
import torch
import yaml

from joulebench import preflight
from joulebench.backends import BACKENDS, REFERENCE_BACKEND, Backend
from joulebench.backends.gguf_export import architecture_problem
from joulebench.backends.llama_cpp import FORMATS
from joulebench.cells import Pruning
from joulebench.data.rca import generate_tickets
from joulebench.data.tickets import ticket_example
from joulebench.energy import EnergySettings
from joulebench.evaluate import evaluate_on_backend
from joulebench.finetune import TrainSettings
from joulebench.metrics import MetricSettings
from joulebench.models import Precision, init_llama, load_model, load_tokenizer, train_tokenizer
from joulebench.served_model import CellSpec
from joulebench.serving import GenerationSettings, generate
from joulebench.sparse_kernels import DENSE_LABEL

from .conftest import ROOT, CountingMeter, fake_monitor

# Rows of 256: llama.cpp's Q4_K packs 256 weights a block, so the 4-bit file really is Q4_K (no fallback type).
ARCHITECTURE = dict(hidden_size=256, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                    num_key_value_heads=1, vocab_size=512, max_position_embeddings=256)  # fmt: skip
SETTINGS = GenerationSettings(batch_size=4, max_new_tokens=12, latency_prompts=0)


@pytest.fixture(scope="module")
def examples():
    return [ticket_example({**t, "id": t["ticket_id"]}) for t in generate_tickets(24, seed=5)]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, examples):
    """A random Llama (grouped-query attention, so the K rows permute by their own head count) and its tokenizer,
    saved as a Hugging Face folder."""
    tokenizer = train_tokenizer([t for e in examples for t in (e.prompt, e.target)], 512, 256)
    model = init_llama(ARCHITECTURE, tokenizer, seed=0)
    folder = tmp_path_factory.mktemp("backend") / "base"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def served(folder, tmp_path, bits: int):
    model, tokenizer = load_model(str(folder), Precision(32)), load_tokenizer(str(folder))
    engine = BACKENDS.get("llama.cpp").build(model, tokenizer, bits, tmp_path / f"b{bits}", 2, sequences=4,
                                             sequence_tokens=128)  # fmt: skip
    return model, tokenizer, engine


@pytest.mark.parametrize(("bits", "tensor_type"), [(4, "Q4_K"), (8, "Q8_0"), (16, "F16"), (32, "F32")])
def test_each_bit_width_is_served_in_its_stated_gguf_format(tiny_folder, tmp_path, bits, tensor_type):
    _, _, engine = served(tiny_folder, tmp_path, bits)
    try:
        assert engine.format == f"GGUF {FORMATS[bits]}" and engine.device == "cpu"
        assert engine.format_detail.split(" ×")[0] == tensor_type, engine.format_detail
    finally:
        engine.close()


def test_f32_gguf_answers_are_transformers_greedy_answers(tiny_folder, tmp_path, examples):
    """The conversion (Q/K row permutation, RoPE, tied embeddings) and the batched decoding are right when llama.cpp at
    float32 gives the answers Hugging Face `generate` gives the same float32 weights, token for token."""
    model, tokenizer, engine = served(tiny_folder, tmp_path, 32)
    prompts = [e.prompt for e in examples[:8]]
    try:
        for pinned in (True, False):
            ours = engine.generate(tokenizer, prompts, SETTINGS, 96, pinned)
            theirs = generate(model, tokenizer, prompts, SETTINGS, 96, pinned)
            assert ours.predictions == theirs.predictions
            assert ours.new_tokens == theirs.new_tokens
        assert engine.generate(tokenizer, prompts, SETTINGS, 96, True).new_tokens == 8 * 12  # pinned: equal work
    finally:
        engine.close()


def test_an_answer_pass_stops_at_end_of_sequence_as_transformers_does(tiny_folder, tmp_path, examples):
    model, tokenizer = load_model(str(tiny_folder), Precision(32)), load_tokenizer(str(tiny_folder))
    with torch.no_grad():  # an end-of-sequence token that wins for some prompts, not for others
        model.model.embed_tokens.weight[tokenizer.eos_token_id] *= 10
    engine = BACKENDS.get("llama.cpp").build(model, tokenizer, 32, tmp_path, 2, sequences=4, sequence_tokens=128)
    prompts = [e.prompt for e in examples[:8]]
    try:
        ours = engine.generate(tokenizer, prompts, SETTINGS, 96, False)
        theirs = generate(model, tokenizer, prompts, SETTINGS, 96, False)
        assert ours.new_tokens == theirs.new_tokens < 8 * 12
        assert ours.predictions == theirs.predictions
    finally:
        engine.close()


def test_a_cell_on_llama_cpp_is_measured_like_any_cell_and_labelled_dense(tiny_folder, tmp_path, examples):
    with fake_monitor(CountingMeter(step_kwh=2e-6)) as monitor:
        result = evaluate_on_backend(
            BACKENDS.get("llama.cpp"), CellSpec(str(tiny_folder), None, Precision(4), Pruning("magnitude", n=2, m=4)),
            examples[:4], GenerationSettings(batch_size=4, max_new_tokens=8), TrainSettings(max_prompt_tokens=96),
            MetricSettings(), monitor, EnergySettings(repeats=5, warmup=1), tmp_path, 2,
        )  # fmt: skip
    assert result.backend == "llama.cpp" and result.format == "GGUF Q4_K_M"
    assert result.model_form == "pruned → float32 → GGUF Q4_K_M"
    assert result.kernel["label"] == DENSE_LABEL and "no sparse kernels" in result.kernel["reason"]
    assert len(result.repeats) == 5 and all(r["tokens"] == 4 * 8 for r in result.repeats)
    assert result.ttft_s["n"] == 4 and result.tpot_s["mean"] > 0
    assert result.prune["achieved"] == pytest.approx(0.5, abs=0.005)  # of the float32 weights converted
    assert 0 < result.model_size_mb < 1 and len(result.predictions) == 4
    assert not list(tmp_path.glob("**/*F32.gguf"))  # the float32 intermediate file is gone


def test_16_bit_answers_on_llama_cpp_match_transformers_16_bit(tiny_folder, tmp_path, examples):
    """The micro-model check of acceptance 3 (the report's is the bootstrap interval of `delta_backend_rho`): F16 on
    llama.cpp and bfloat16 on transformers, two different 16-bit formats, give mostly the same greedy answers."""
    _, tokenizer, engine = served(tiny_folder, tmp_path, 16)
    prompts = [e.prompt for e in examples[:8]]
    try:
        ours = engine.generate(tokenizer, prompts, SETTINGS, 96, False).predictions
    finally:
        engine.close()
    theirs = generate(load_model(str(tiny_folder), Precision(16)), tokenizer, prompts, SETTINGS, 96, False).predictions
    assert sum(a == b for a, b in zip(ours, theirs, strict=True)) >= 6, list(zip(ours, theirs, strict=True))


# --- preflight ----------------------------------------------------------------------------------------------------


def default_config() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def backend_problems(config: dict) -> list[str]:
    return [p for p in preflight.check(config, ROOT) if p.startswith("inference.backends")]


def test_the_default_config_and_llama_cpp_pass_preflight():
    config = default_config()
    assert config["inference"]["backends"] == [REFERENCE_BACKEND] and not backend_problems(config)
    config["inference"]["backends"] = [REFERENCE_BACKEND, "llama.cpp"]
    assert not backend_problems(config)


@pytest.fixture
def half_backend():
    """A backend that serves 16 and 32 bits only, registered for one test."""
    name = "half-test"
    BACKENDS.register(name)(Backend(name=name, formats={16: "fp16", 32: "fp32"}))
    yield name
    del BACKENDS._entries[name]


def test_a_bit_width_a_backend_cannot_serve_stops_in_one_line(half_backend):
    config = default_config()
    config["inference"]["backends"] = [REFERENCE_BACKEND, half_backend]
    problems = backend_problems(config)
    assert problems == [f"inference.backends: {half_backend} cannot serve bits 4, 8 (it serves 16 → fp16, "
                        f"32 → fp32); drop 4, 8 from bits or {half_backend} from inference.backends"]  # fmt: skip
    config["bits"] = [16, 32]
    assert not backend_problems(config)


def test_unknown_backend_missing_package_and_missing_reference_are_named():
    config = default_config()
    config["inference"]["backends"] = ["llama.cpp", "vllm"]
    assert backend_problems(config) == [
        "inference.backends: list transformers too: the base of φ and the top-k selection are measured on it",
        "inference.backends: unknown inference backend 'vllm'; known: llama.cpp, transformers",
    ]
    absent = copy.copy(BACKENDS.get("llama.cpp"))
    object.__setattr__(absent, "package", "joulebench_no_such_package")
    BACKENDS._entries["absent-test"] = absent
    try:
        config["inference"]["backends"] = [REFERENCE_BACKEND, "absent-test"]
        assert backend_problems(config) == ["inference.backends: absent-test needs the joulebench_no_such_package "
                                            f"package, which is not installed: {absent.install}"]  # fmt: skip
    finally:
        del BACKENDS._entries["absent-test"]


def test_an_architecture_without_a_gguf_mapping_is_refused_before_any_job():
    assert architecture_problem({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}) is None
    assert "Gemma2ForCausalLM has no GGUF mapping" in architecture_problem(
        {"architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2"})
    assert "RoPE scaling 'yarn'" in architecture_problem(
        {"architectures": ["LlamaForCausalLM"], "rope_parameters": {"rope_type": "yarn", "factor": 4.0}})


# --- summary rows per (cell, backend) -----------------------------------------------------------------------------


def test_only_the_reference_backends_base_is_the_reference_and_keys_tell_backends_apart():
    from joulebench.rank import RankingSettings, add_ranking
    from joulebench.summary import cell_key, on_reference_backend

    def row(bits, epochs, backend, wh, rho):
        return {"dataset": "d", "model": "m", "training": "t", "bits": bits, "epochs": epochs, "pruning": "none",
                "backend": backend, "status": "ok", "is_reference": int(epochs == 0 and backend == "transformers"),
                "wh_per_query": wh, "prepare_kwh": 0.0, "train_kwh": 0.0, "rho": rho}  # fmt: skip

    rows = [row(32, 0, "transformers", 2.0, 0.1), row(32, 0, "llama.cpp", 1.0, 0.1),
            row(4, 1, "transformers", 2.0, 0.5), row(4, 1, "llama.cpp", 0.5, 0.5)]  # fmt: skip
    assert len({cell_key(r) for r in rows}) == 4
    assert on_reference_backend(cell_key(rows[3])) == cell_key(rows[2])
    add_ranking(rows, RankingSettings.from_config({"w": 0.7}), k=1)
    assert "rank" not in rows[1] and rows[1]["phi"] == pytest.approx(2.0)  # a row, not a ranked cell
    assert rows[3]["rank"] == 1 and rows[3]["phi"] == pytest.approx(4.0)  # φ against the transformers base
    assert "finetune_rank" not in rows[3] and rows[2]["finetune_rank"] == 1  # top-k chosen on transformers
