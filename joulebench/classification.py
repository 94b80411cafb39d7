"""The classification view of a generation task: each answer's class (RCA: the root-cause category; SAF: the
verification label), with accuracy, macro-F1 and one-vs-rest AUC-ROC.

The class of a free-text answer is scored against every class: the cosine similarity of the answer's sentence
embedding to the mean embedding of that class's training references, turned into probabilities by a softmax at
temperature TEMPERATURE. The predicted class is the most probable one. The same classifier applied to the test
references themselves gives `ceiling`, how well the classes can be told apart from text at all.

A dataset whose training examples carry no label, or all the same one, has no classes to tell apart: its view is
skipped, with the reason, rather than scored 1.0 for putting every answer in the only class there is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

CLASS_COLUMNS = ["accuracy", "macro_f1", "auc_roc"]
TEMPERATURE = 0.05

Encoder = Callable[[list[str]], np.ndarray]  # texts -> unit-norm embeddings, one row each
NO_LABELS = ("no labels: the dataset maps no label column (tickets: category; text-pairs: label), so its examples "
             "have no class to tell apart")


def unclassifiable(labels: Sequence[str]) -> str | None:
    """Why examples with these labels cannot be classified (none labelled, or one class only); None if they can."""
    classes = set(labels)
    if classes <= {""}:
        return NO_LABELS
    if len(classes) == 1:
        return (f"one class only: every training example is labelled {next(iter(classes))!r}, so there is no other "
                "class to tell it from")
    return None


@dataclass(frozen=True)
class Skipped:
    """A dataset without a classification view, and why."""

    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"skipped": self.reason}


def accuracy(truth: Sequence[str], predicted: Sequence[str]) -> float:
    return float(np.mean([t == p for t, p in zip(truth, predicted, strict=True)]))


def macro_f1(truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> float:
    """Unweighted mean of each label's F1; a label never true nor predicted scores 0 (scikit-learn's
    `f1_score(average="macro", labels=labels, zero_division=0)`)."""
    scores = []
    for label in labels:
        tp = sum(t == label and p == label for t, p in zip(truth, predicted, strict=True))
        fp = sum(t != label and p == label for t, p in zip(truth, predicted, strict=True))
        fn = sum(t == label and p != label for t, p in zip(truth, predicted, strict=True))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(scores))


def binary_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve: the probability that a positive outranks a negative, ties counting one half."""
    pos, neg = scores[positive], scores[~positive]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def auc_roc_ovr(truth: Sequence[str], probabilities: np.ndarray, labels: Sequence[str]) -> float | None:
    """Macro one-vs-rest AUC over the labels that occur in `truth` and not in all of it (a label with no positive
    or no negative has no ROC curve); None when there is none such."""
    truth_array = np.asarray(truth)
    aucs = []
    for column, label in enumerate(labels):
        positive = truth_array == label
        if positive.any() and not positive.all():
            aucs.append(binary_auc(probabilities[:, column], positive))
    return float(np.mean(aucs)) if aucs else None


@dataclass(frozen=True)
class CentroidClassifier:
    labels: tuple[str, ...]
    centroids: np.ndarray  # one unit-norm row per label

    @classmethod
    def fit(cls, texts: Sequence[str], labels: Sequence[str], encode: Encoder) -> CentroidClassifier:
        if (reason := unclassifiable(labels)) is not None:
            raise ValueError(f"cannot fit a classifier: {reason}")
        names = tuple(sorted(set(labels)))
        embedded = encode(list(texts))
        rows = []
        for name in names:
            mean = embedded[[i for i, label in enumerate(labels) if label == name]].mean(axis=0)
            rows.append(mean / np.linalg.norm(mean))
        return cls(names, np.stack(rows))

    def probabilities(self, texts: Sequence[str], encode: Encoder) -> np.ndarray:
        logits = encode(list(texts)) @ self.centroids.T / TEMPERATURE
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        return weights / weights.sum(axis=1, keepdims=True)

    def predict(self, probabilities: np.ndarray) -> list[str]:
        return [self.labels[i] for i in probabilities.argmax(axis=1)]

    def to_dict(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "centroids": self.centroids.tolist()}

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> CentroidClassifier:
        return cls(tuple(saved["labels"]), np.asarray(saved["centroids"]))


Classes = CentroidClassifier | Skipped


def fit_classes(texts: Sequence[str], labels: Sequence[str], encode: Encoder) -> Classes:
    """The classifier of these training references, or why there is none."""
    reason = unclassifiable(labels)
    return Skipped(reason) if reason is not None else CentroidClassifier.fit(texts, labels, encode)


def classes_from_dict(saved: dict[str, Any]) -> Classes:
    return Skipped(saved["skipped"]) if "skipped" in saved else CentroidClassifier.from_dict(saved)


def class_metrics(truth: Sequence[str], probabilities: np.ndarray, classifier: CentroidClassifier) -> dict[str, float]:
    predicted = classifier.predict(probabilities)
    scores = {"accuracy": accuracy(truth, predicted), "macro_f1": macro_f1(truth, predicted, classifier.labels)}
    auc = auc_roc_ovr(truth, probabilities, classifier.labels)
    if auc is not None:
        scores["auc_roc"] = auc
    return scores


def classification_view(
    answers: Sequence[str],
    references: Sequence[str],
    truth: Sequence[str],
    classifier: Classes,
    encode: Encoder,
) -> dict[str, object]:
    """The answers' class metrics, the same for the references (`ceiling`) and the classes' names; without classes,
    only why (no accuracy, macro-F1 or AUC-ROC). The classifier is fitted once per dataset (the workflow's
    `class_centroids` rule), not once per evaluated cell."""
    if isinstance(classifier, Skipped):
        return classifier.to_dict()
    answer_probabilities = classifier.probabilities(answers, encode)
    return {
        **class_metrics(truth, answer_probabilities, classifier),
        "ceiling": class_metrics(truth, classifier.probabilities(references, encode), classifier),
        "labels": list(classifier.labels),
        "predicted": classifier.predict(answer_probabilities),
        "temperature": TEMPERATURE,
    }
