"""The classification view: accuracy, macro-F1 and one-vs-rest AUC-ROC against scikit-learn, and the classifier."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from joulebench.classification import (
    CentroidClassifier,
    Skipped,
    accuracy,
    auc_roc_ovr,
    classes_from_dict,
    classification_view,
    fit_classes,
    macro_f1,
)
from joulebench.summary import cell_row, write_summary

LABELS = ["dns", "fiber", "power"]
TRUTH = ["dns", "fiber", "power", "dns", "fiber", "power", "dns", "power", "fiber", "dns"]
PREDICTED = ["dns", "power", "power", "fiber", "fiber", "power", "dns", "dns", "fiber", "dns"]
PROBABILITIES = np.array([
    [0.7, 0.2, 0.1], [0.2, 0.3, 0.5], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3], [0.2, 0.6, 0.2],
    [0.25, 0.25, 0.5], [0.5, 0.25, 0.25], [0.4, 0.3, 0.3], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1],
])  # fmt: skip


def test_accuracy_and_macro_f1_match_scikit_learn():
    assert accuracy(TRUTH, PREDICTED) == pytest.approx(accuracy_score(TRUTH, PREDICTED))
    expected = f1_score(TRUTH, PREDICTED, average="macro", labels=LABELS, zero_division=0)
    assert macro_f1(TRUTH, PREDICTED, LABELS) == pytest.approx(expected)
    # A label that is never true nor predicted counts 0, as in scikit-learn with zero_division=0.
    expected = f1_score(TRUTH, PREDICTED, average="macro", labels=[*LABELS, "bgp"], zero_division=0)
    assert macro_f1(TRUTH, PREDICTED, [*LABELS, "bgp"]) == pytest.approx(expected)


def test_one_vs_rest_auc_matches_scikit_learn_ties_included():
    expected = roc_auc_score(TRUTH, PROBABILITIES, multi_class="ovr", average="macro", labels=LABELS)
    assert auc_roc_ovr(TRUTH, PROBABILITIES, LABELS) == pytest.approx(expected)
    assert 0.5 < expected < 1.0  # the example is neither trivial nor random


def test_auc_leaves_out_labels_without_a_curve():
    truth = ["dns", "dns", "fiber", "fiber"]  # no "power": its curve is undefined
    scores = PROBABILITIES[:4]
    only_present = roc_auc_score([t == "dns" for t in truth], scores[:, 0])
    assert auc_roc_ovr(truth, scores, LABELS) == pytest.approx(
        np.mean([only_present, roc_auc_score([t == "fiber" for t in truth], scores[:, 1])])
    )
    assert auc_roc_ovr(["dns", "dns"], scores[:2], LABELS) is None


def one_hot_encoder(vocabulary: list[str]):
    """Texts as unit bag-of-words vectors over `vocabulary`: a transparent stand-in for a sentence encoder."""

    def encode(texts: list[str]) -> np.ndarray:
        rows = np.array([[float(word in text.split()) for word in vocabulary] for text in texts]) + 1e-9
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    return encode


def test_the_nearest_class_centroid_wins_and_references_give_the_ceiling():
    encode = one_hot_encoder(["resolver", "zone", "span", "splice", "supply", "breaker"])
    train = ["resolver down", "zone expired", "span cut", "splice span", "supply failed", "breaker tripped"]
    labels = ["dns", "dns", "fiber", "fiber", "power", "power"]
    classifier = CentroidClassifier.fit(train, labels, encode)
    probabilities = classifier.probabilities(["restart the resolver", "splice the span", "reset the breaker"], encode)
    assert classifier.predict(probabilities) == ["dns", "fiber", "power"]
    assert np.allclose(probabilities.sum(axis=1), 1.0)

    view = classification_view(["zone reload", "replace supply", "zone"], ["zone bad", "span cut", "supply"],
                               ["dns", "fiber", "power"], classifier, encode)  # fmt: skip
    assert view["predicted"] == ["dns", "power", "dns"]
    assert view["accuracy"] == pytest.approx(1 / 3) and view["ceiling"]["accuracy"] == 1.0

    saved = CentroidClassifier.from_dict(json.loads(json.dumps(classifier.to_dict())))  # the rule's file, read back
    assert saved.labels == classifier.labels and np.array_equal(saved.centroids, classifier.centroids)


@pytest.mark.parametrize(("labels", "reason"), [
    (["", "", ""], "no labels: the dataset maps no label column"),
    (["dns", "dns", "dns"], "one class only: every training example is labelled 'dns'"),
])  # fmt: skip
def test_without_two_classes_the_view_is_skipped_with_its_reason_not_scored_1(labels, reason):
    encode = one_hot_encoder(["resolver", "zone", "span"])
    train = ["resolver down", "zone expired", "span cut"]
    classes = fit_classes(train, labels, encode)
    assert isinstance(classes, Skipped) and classes.reason.startswith(reason)
    with pytest.raises(ValueError, match=reason):
        CentroidClassifier.fit(train, labels, encode)

    saved = classes_from_dict(json.loads(json.dumps(classes.to_dict())))  # the rule's file, read back
    view = classification_view(["zone reload", "span"], ["zone bad", "span cut"], labels[:2], saved, encode)
    assert view == {"skipped": classes.reason}
    assert not {"accuracy", "macro_f1", "auc_roc"} & set(view)


def evaluation_record(classification: dict) -> dict:
    """An ok eval.json of a base-model cell, with every figure `summary.cell_row` reads."""
    window = {"total_kwh": 1e-4, "net_kwh": 8e-5, "cpu_kwh": 5e-5, "gpu_kwh": 3e-5, "ram_kwh": 2e-5,
              "emissions_kg": 1e-5}  # fmt: skip
    figure = {"mean": 1.0, "ci95": 0.1, "n": 5, "cv": 0.01}
    result = {
        "infer_kwh": figure, "pass_energy": window, "prepare_energy": window, "batch_s": figure,
        "tokens_per_repeat": 64, "prune": {"achieved": 0.0}, "kernel": {}, "speedup_vs_dense": None,
        "wh_per_query": figure, "answer_tokens_per_query": 8.0, "answer_tokens": 64,
        "quality": {"bleu": 0.1, "cosine": None},
        "classification": classification, "energy": {"sources": {"cpu": "rapl"}, "tracking_mode": "process"},
        "idle": {}, "j_per_token": figure, "tokens_per_s": figure, "repeats": [{"energy": window, "tokens": 64,
        "generation_s": 1.0}], "peak_mem_mb": 10.0, "model_size_mb": 1.0, "peak_mem_kind": "rss",
    }  # fmt: skip
    cell = {"dataset": "qa", "model": "m", "bits": 32, "epochs": 0, "pruning": "none", "pruning_label": "none"}
    return {"cell": cell, "status": "ok", "result": result}


def test_a_skipped_view_leaves_the_summary_columns_blank_and_keeps_the_reason(tmp_path):
    """The row's class columns are blank in summary.csv, and the reason rides along (summary.json) for the report."""
    rows = [cell_row(evaluation_record({"skipped": "no labels: x"}), None),
            cell_row(evaluation_record({"accuracy": 0.5, "macro_f1": 0.4, "auc_roc": 0.6}), None)]  # fmt: skip
    assert rows[0]["classification_skipped"] == "no labels: x" and "classification_skipped" not in rows[1]
    write_summary(rows, tmp_path / "summary.csv")
    with open(tmp_path / "summary.csv") as handle:
        written = list(csv.DictReader(handle))
    assert [(r["accuracy"], r["macro_f1"], r["auc_roc"]) for r in written] == [("", "", ""), ("0.5", "0.4", "0.6")]
    assert [(r["bleu"], r["cosine"]) for r in written] == [("0.1", ""), ("0.1", "")]  # None is blank, not "None"
