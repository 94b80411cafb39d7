"""The classification view: accuracy, macro-F1 and one-vs-rest AUC-ROC against scikit-learn, and the classifier."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from joulebench.classification import CentroidClassifier, accuracy, auc_roc_ovr, classification_view, macro_f1

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
