"""Serving a model as it would be deployed, measured: generation passes, interleaved energy windows, latency.

Each figure is named for what it measures:

- **pinned passes** generate exactly `max_new_tokens` per query (end-of-sequence suppressed), so every repeat does the
  same work: tokens/s at the configured batch and J per generated token come from them.
- **answer passes** stop at end-of-sequence, as deployment would: energy per query at the answers' real lengths
  (`wh_per_query`) comes from them, and the first one's answers are the ones scored for quality.
- **latency** at batch 1: time to first token (`ttft_s`: a pass of one new token, prefill included) and time per
  output token after it (`tpot_s` = (time of a pinned pass of n tokens − ttft) / (n − 1)), the way
  optimum-benchmark splits prefill and decode. It is not the batch's time divided by its queries.

Passes that are compared run in **rounds** (A B C … A B C …): every subject runs once per round, each pass in an energy
window of its own, so a machine that drifts during the measurement moves them all alike.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from tqdm import tqdm

from joulebench.energy import EnergyMonitor
from joulebench.failures import GenerationError
from joulebench.stats import NO_TOKENS, joules_per_token, spread, spread_or_blank

Decode = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class GenerationSettings:
    batch_size: int = 16
    max_new_tokens: int = 48
    latency_prompts: int = 8  # prompts timed one at a time for ttft_s / tpot_s (0: none)

    @classmethod
    def from_config(cls, generation: dict[str, Any]) -> GenerationSettings:
        return cls(**generation)


@dataclass
class GenerationResult:
    predictions: list[str]
    new_tokens: int  # generated tokens; an answer pass counts each answer up to its end-of-sequence token
    wall_s: float  # inside the model's decode calls only
    loop_s: float = 0.0  # the whole loop: tokenising, decoding, detokenising


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    settings: GenerationSettings,
    max_prompt_tokens: int,
    pin_tokens: bool = False,
    decode: Decode | None = None,
) -> GenerationResult:
    """Greedy, batched, left-padded generation; only the time inside `generate` is counted. With `pin_tokens` every
    sequence generates exactly `max_new_tokens` (end-of-sequence suppressed), so timed repeats do equal work.
    `decode` replaces `model.generate` (early exit); it takes the same arguments, greedy implied."""
    loop_began = time.perf_counter()
    decode = decode or functools.partial(model.generate, do_sample=False)
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"
    model.eval()
    predictions: list[str] = []
    new_tokens = 0
    wall = 0.0
    starts = range(0, len(prompts), settings.batch_size)
    for start in tqdm(starts, desc="generate", mininterval=2):
        batch = [_with_bos(tokenizer, p) for p in prompts[start : start + settings.batch_size]]
        encoded = tokenizer(batch, return_tensors="pt", padding=True, **_encoding(max_prompt_tokens)).to(model.device)
        began = time.perf_counter()
        try:
            output = decode(
                input_ids=encoded["input_ids"],
                attention_mask=encoded["attention_mask"],
                max_new_tokens=settings.max_new_tokens,
                min_new_tokens=settings.max_new_tokens if pin_tokens else None,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        except (RuntimeError, ValueError, IndexError) as err:
            raise GenerationError(f"prompts {start + 1}-{start + len(batch)}: {err}") from err
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        wall += time.perf_counter() - began
        generated = output[:, encoded["input_ids"].shape[1] :]
        for row in generated:
            text, counted = answer_text(tokenizer, row.tolist(), pin_tokens)
            predictions.append(text)
            new_tokens += counted
    return GenerationResult(predictions, new_tokens, wall, time.perf_counter() - loop_began)


def _with_bos(tokenizer: Any, prompt: str) -> str:
    return (tokenizer.bos_token or "") + prompt


def _encoding(max_prompt_tokens: int) -> dict[str, Any]:
    """How prompts are tokenized for every backend: BOS written in the text, the prompt's end kept."""
    return {"truncation": True, "max_length": max_prompt_tokens + 1, "add_special_tokens": False}


def prompt_token_ids(tokenizer: Any, prompts: Sequence[str], max_prompt_tokens: int) -> list[list[int]]:
    """The token ids `generate` feeds the model for each prompt, unpadded (a backend that takes ids)."""
    tokenizer.truncation_side = "left"
    return tokenizer([_with_bos(tokenizer, p) for p in prompts], **_encoding(max_prompt_tokens))["input_ids"]


def answer_text(tokenizer: Any, tokens: list[int], pin_tokens: bool) -> tuple[str, int]:
    """An answer's text and how many generated tokens it counts: an answer pass stops at (and counts) its first
    end-of-sequence token; a pinned pass counts every token."""
    if not pin_tokens and tokenizer.eos_token_id in tokens:
        tokens = tokens[: tokens.index(tokenizer.eos_token_id) + 1]
    return tokenizer.decode(tokens, skip_special_tokens=True).strip(), len(tokens)


Runner = Callable[[Any, Sequence[str], GenerationSettings, int, bool], GenerationResult]
"""A backend's pass: (tokenizer, prompts, settings, max_prompt_tokens, pin_tokens) → its result."""


@dataclass(frozen=True)
class Server:
    """One model as served: what `generate` needs, and the decoding it uses (None: `model.generate`); or, for a model
    another backend serves, that backend's `runner` in place of `generate` (`model` then None)."""

    model: Any
    tokenizer: Any
    prompts: Sequence[str]
    generation: GenerationSettings
    max_prompt_tokens: int
    decode: Decode | None = None
    runner: Runner | None = None

    def run(self, prompts: Sequence[str], settings: GenerationSettings, pin_tokens: bool) -> GenerationResult:
        if self.runner is not None:
            return self.runner(self.tokenizer, prompts, settings, self.max_prompt_tokens, pin_tokens)
        return generate(self.model, self.tokenizer, prompts, settings, self.max_prompt_tokens, pin_tokens,
                        self.decode)  # fmt: skip

    def pinned(self) -> GenerationResult:
        return self.run(self.prompts, self.generation, True)

    def answers(self) -> GenerationResult:
        return self.run(self.prompts, self.generation, False)

    @property
    def batches(self) -> int:
        return math.ceil(len(self.prompts) / self.generation.batch_size)


@dataclass
class TimedPass:
    """One pass over the test prompts inside its own energy window."""

    energy: dict[str, Any]
    generation_s: float
    tokens: int
    queries: int
    batches: int
    pinned: bool
    round: int = 0

    @property
    def j_per_token(self) -> float | None:
        """None when the pass generated no token (pinned passes always do: max_new_tokens ≥ 1 per query)."""
        return joules_per_token(self.energy["total_kwh"], self.tokens) if self.tokens > 0 else None

    @property
    def wh_per_query(self) -> float:
        return self.energy["total_kwh"] * 1000 / self.queries

    @property
    def tokens_per_s(self) -> float | None:
        """None when the pass generated no token: no rate of nothing."""
        return self.tokens / self.generation_s if self.tokens > 0 and self.generation_s > 0 else None


@dataclass(frozen=True)
class Subject:
    """A pass measured once per round: `run` makes one pass; `pinned` says which kind it is."""

    run: Callable[[], GenerationResult]
    pinned: bool
    queries: int
    batches: int


@dataclass
class Rounds:
    """Every subject's timed passes, in round order, and the first pass's result of each (its answers)."""

    window: dict[str, Any]  # the energy window around all rounds
    passes: dict[str, list[TimedPass]]
    first: dict[str, GenerationResult]
    stable: dict[str, bool]  # every round gave the same answers as the first
    loop_s: float


def warm_up(run: Callable[[], GenerationResult], passes: int) -> float:
    """Untimed passes before the timed windows (caches, allocator, kernels' first calls); their loop seconds."""
    return sum(run().loop_s for _ in range(max(0, passes)))


def measure_rounds(monitor: EnergyMonitor, subjects: dict[str, Subject], rounds: int, name: str) -> Rounds:
    """`rounds` rounds; in each, every subject once, in order, each pass in its own energy window."""
    passes: dict[str, list[TimedPass]] = {key: [] for key in subjects}
    first: dict[str, GenerationResult] = {}
    stable = dict.fromkeys(subjects, True)
    loop_s = 0.0
    with monitor.window(name) as outer:
        for index in range(1, rounds + 1):
            for key, subject in subjects.items():
                with monitor.window(f"{name}:{key}-{index}") as window:
                    result = subject.run()
                loop_s += result.loop_s
                passes[key].append(TimedPass(window["energy"].to_dict(), result.wall_s, result.new_tokens,
                                             subject.queries, subject.batches, subject.pinned, index))  # fmt: skip
                if key not in first:
                    first[key] = result
                elif result.predictions != first[key].predictions:
                    stable[key] = False
    return Rounds(outer["energy"].to_dict(), passes, first, stable, loop_s)


def pinned_figures(passes: Sequence[TimedPass]) -> dict[str, Any]:
    """Throughput and energy of pinned passes: spreads over the passes, and one pass's mean energy per component."""
    components = {key: sum(p.energy[key] for p in passes) / len(passes)
                  for key in ("cpu_kwh", "gpu_kwh", "ram_kwh", "total_kwh", "net_kwh", "emissions_kg")}  # fmt: skip
    return {
        "tokens_per_s": spread_or_blank([p.tokens_per_s for p in passes], NO_TOKENS),
        "j_per_token": spread_or_blank([p.j_per_token for p in passes], NO_TOKENS),
        "infer_kwh": spread([p.energy["total_kwh"] for p in passes]).to_dict(),
        "infer_net_kwh": spread([p.energy["net_kwh"] for p in passes]).to_dict(),
        "batch_s": spread([p.generation_s / p.batches for p in passes]).to_dict(),
        "pass_energy": components,
        "tokens_per_pass": passes[0].tokens,
    }


def answer_figures(passes: Sequence[TimedPass]) -> dict[str, Any]:
    """Energy per query at the answers' real lengths, over the answer passes."""
    return {
        "wh_per_query": spread([p.wh_per_query for p in passes]).to_dict(),
        "answer_tokens_per_query": passes[0].tokens / passes[0].queries,
        "answer_j_per_token": spread_or_blank([p.j_per_token for p in passes], NO_TOKENS),
    }


LATENCY_METHOD = (
    "batch 1, one prompt at a time: ttft = a pass of 1 new token (prefill and the first token); tpot = (a pinned pass "
    "of {tokens} tokens − ttft) / {steps}; mean over {prompts} prompts, each timed after one untimed warm-up pass"
)


@dataclass
class Latency:
    ttft_s: dict[str, Any] | None
    tpot_s: dict[str, Any] | None
    prompts: int
    method: str
    loop_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_latency(server: Server) -> Latency:
    """Time to first token and time per output token at batch 1 over the first `latency_prompts` prompts."""
    count = min(server.generation.latency_prompts, len(server.prompts))
    tokens = server.generation.max_new_tokens
    method = LATENCY_METHOD.format(tokens=tokens, steps=tokens - 1, prompts=count)
    if count == 0:
        return Latency(None, None, 0, "not measured (generation.latency_prompts: 0)")
    one_token = GenerationSettings(batch_size=1, max_new_tokens=1, latency_prompts=0)
    whole = GenerationSettings(batch_size=1, max_new_tokens=tokens, latency_prompts=0)

    def timed(prompt: str, settings: GenerationSettings) -> GenerationResult:
        return server.run([prompt], settings, True)

    loop_s = timed(server.prompts[0], whole).loop_s
    first, per_token = [], []
    for prompt in server.prompts[:count]:
        head, full = timed(prompt, one_token), timed(prompt, whole)
        loop_s += head.loop_s + full.loop_s
        first.append(head.wall_s)
        if tokens > 1:
            per_token.append(max(full.wall_s - head.wall_s, 0.0) / (tokens - 1))
    tpot = spread(per_token).to_dict() if per_token else None
    if tokens <= 1:
        method += "; tpot not measured: max_new_tokens is 1"
    return Latency(spread(first).to_dict(), tpot, count, method, loop_s)


@dataclass
class ServingMeasurement:
    """What `measure_serving` found for one model: pinned and answer passes, latency, the answers."""

    rounds: Rounds
    latency: Latency
    warmup_loop_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def loop_s(self) -> float:
        return self.warmup_loop_s + self.rounds.loop_s + self.latency.loop_s


def measure_serving(
    monitor: EnergyMonitor,
    servers: dict[str, Server],
    warmup: int,
    rounds: int,
    answers: Sequence[str] = (),
    latency: str | None = None,
    name: str = "inference",
    answer_hook: Callable[[str, Callable[[], GenerationResult]], Callable[[], GenerationResult]] | None = None,
) -> ServingMeasurement:
    """Warm each server up at the pinned length, then measure them in interleaved rounds: per round each server's
    pinned pass (key `<server>`), and an answer pass for the servers in `answers` (key `<server>:answers`). Then,
    for `latency` (a server key), batch-1 latency. `answer_hook` may wrap an answer pass (early-exit statistics)."""
    warm = sum(warm_up(server.pinned, warmup) for server in servers.values())
    subjects: dict[str, Subject] = {}
    for key, server in servers.items():
        subjects[key] = Subject(server.pinned, True, len(server.prompts), server.batches)
        if key in answers:
            run = answer_hook(key, server.answers) if answer_hook else server.answers
            subjects[f"{key}:answers"] = Subject(run, False, len(server.prompts), server.batches)
    measured = measure_rounds(monitor, subjects, rounds, name)
    timing = measure_latency(servers[latency]) if latency else Latency(None, None, 0, "not measured")
    return ServingMeasurement(measured, timing, warm)
