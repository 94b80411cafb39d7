"""Early-exit greedy decoding (CALM, Schuster et al. 2022) for Llama-layout causal LMs.

Each decoding step runs the decoder layer by layer; after layer l (from `min_layer` on, below the last) a confidence
measure (`CONFIDENCE_MEASURES`, CALM's) tests the hidden state, and a sequence whose confidence exceeds the threshold
takes the token the exit head reads from it. CALM's measures: `softmax-gap`, the top-1 minus the top-2 next-token
probability through the exit head (its "softmax response"), which costs an LM-head matmul per test; `saturation`, the
cosine between the hidden states after this layer and the one before, which costs next to nothing, the head being
read only where a token exits. A batch stops once every unfinished sequence has its token; the layers it skipped get
only their keys and values, computed from the last hidden state (CALM's state propagation), so later tokens still
attend to every layer. The first new token comes from the prompt's full pass: the prompt needs every layer for its
cache, so its last position's full-depth prediction costs nothing more.

The statistics count the compute as multiply-accumulates of the linear layers (attention scores left out): the
layers run, the exit tests, the exit-head reads, the state propagation and the final head, against what full depth
costs for the same tokens. On a 128k vocabulary an LM-head read costs about as much as 2.4 decoder layers of
Llama-3-8B, so tests that read it can cost more than the layers they skip.

The loop mirrors the model's own forward and `GenerationMixin` greedy search in the installed transformers (position
ids from the attention mask, the mask dropped when nothing is padded, `create_causal_mask`, logits of the last
position in float32, end-of-sequence suppressed until `min_new_tokens`, finished rows padded), so a threshold of 1,
which never exits, reproduces `model.generate(do_sample=False)` token for token.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from joulebench.cells import EarlyExit
from joulebench.registry import Registry

SUPPORTED_MODEL_TYPES = ("gemma", "llama", "mistral", "qwen2")
_MODEL_PARTS = ("model.embed_tokens", "model.layers", "model.norm", "model.rotary_emb", "lm_head")
_LAYER_PARTS = ("input_layernorm", "self_attn.k_proj", "self_attn.v_proj", "self_attn.head_dim")


def _unsupported_reason(model: Any) -> str | None:
    config = getattr(model, "config", None)
    kind = getattr(config, "model_type", None) or type(model).__name__
    if config is None or getattr(config, "is_encoder_decoder", False):
        return f"{kind} is not a decoder-only causal LM"
    if kind not in SUPPORTED_MODEL_TYPES:
        return f"model type {kind!r} is not one whose forward the decoder mirrors ({', '.join(SUPPORTED_MODEL_TYPES)})"
    for part in _MODEL_PARTS:
        try:
            operator.attrgetter(part)(model)
        except AttributeError:
            return f"{kind} model has no {part} (not the Llama layout)"
    for index, layer in enumerate(model.model.layers):
        for part in _LAYER_PARTS:
            try:
                operator.attrgetter(part)(layer)
            except AttributeError:
                return f"{kind} layer {index} has no {part} (not the Llama layout)"
    if getattr(config, "sliding_window", None) is not None and kind == "mistral":
        return "mistral with a sliding window needs its own attention mask"
    layer_types = getattr(config, "layer_types", None) or ()
    if any(layer_type != "full_attention" for layer_type in layer_types):
        return f"{kind} has sliding-window layers, which need their own attention mask"
    return None


def check_supported(model: Any) -> None:
    """Raise a one-line ValueError when `model` is not a decoder whose forward this module reproduces: the decoder
    re-implements the model's layer loop, so anything beyond the Llama layout would be silently wrong."""
    if (reason := _unsupported_reason(model)) is not None:
        raise ValueError(f"early exit: {reason}")


# --- exit heads -------------------------------------------------------------------------------------------------------


class ExitHeads:
    """Reads next-token logits from the hidden state after a layer. The last layer always reads through the model's
    own final norm and LM head, so a sequence that never exits gets exactly the model's token."""

    needs_calibration: ClassVar[bool] = False

    def __init__(self, model: Any) -> None:
        self.model = model
        self.layers = len(model.model.layers)

    @classmethod
    def prepare(cls, model: Any, windows: torch.Tensor | None, seed: int = 0) -> ExitHeads:
        raise NotImplementedError

    def shared(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(self.model.model.norm(hidden))

    def logits(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """Logits (..., vocab) from the hidden state (..., hidden) after 1-based `layer`."""
        return self.shared(hidden)

    def fit_record(self) -> dict[str, Any]:
        """What preparing the heads found, for `eval.json`; nothing for heads that are not fitted."""
        return {}

    def extra_macs(self) -> int:
        """Multiply-accumulates per token an exit read costs beyond the final norm and LM head."""
        return 0


EXIT_HEADS: Registry[type[ExitHeads]] = Registry("early-exit heads")


@EXIT_HEADS.register("shared")
class SharedHeads(ExitHeads):
    """The final norm and LM head on every layer: no parameters and no training, but intermediate states are read
    as if they were final ones, which they are not trained to be."""

    @classmethod
    def prepare(cls, model: Any, windows: torch.Tensor | None, seed: int = 0) -> SharedHeads:
        check_supported(model)
        return cls(model)


@EXIT_HEADS.register("trained")
class TrainedHeads(ExitHeads):
    """A learned affine map per layer, h + A h + b (A and b start at zero, so the head starts as the shared one),
    before the shared final norm and LM head: the tuned lens of Belrose et al. (2023). The maps are fitted by KL
    distillation from the final layer's next-token distribution on calibration windows, the model frozen; a map that
    does not beat the identity on held-out positions is put back to the identity, so training never makes a head
    worse than the shared one there."""

    needs_calibration: ClassVar[bool] = True

    def __init__(self, model: Any, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__(model)
        self.weight = weight
        self.bias = bias
        self.kl_initial: list[float] = []
        self.kl_final: list[float] = []
        self.held_out_positions = 0
        self.identity_layers: list[int] = []

    @classmethod
    def identity(cls, model: Any) -> TrainedHeads:
        size, device = model.config.hidden_size, model.lm_head.weight.device
        count = len(model.model.layers) - 1
        return cls(model, torch.zeros(count, size, size, device=device), torch.zeros(count, size, device=device))

    @classmethod
    def prepare(
        cls,
        model: Any,
        windows: torch.Tensor | None,
        seed: int = 0,
        *,
        steps: int = 200,
        lr: float | None = None,
        batch_tokens: int = 256,
        max_tokens: int = 2048,
        batch_size: int = 8,
    ) -> TrainedHeads:
        """Fit the maps for at most `steps` Adam steps of `batch_tokens` positions drawn (with `seed`) from at most
        `max_tokens` window positions; the learning rate defaults to 0.05 / hidden size, as an update of A moves each
        output coordinate by about lr × hidden size × |h|."""
        check_supported(model)
        if windows is None:
            raise ValueError("early exit: trained heads need calibration windows (pruning.calibration), none given")
        heads = cls.identity(model)
        states, final = _layer_states(model, windows, max_tokens, batch_size, seed)
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(final.shape[0], generator=generator).to(final.device)
        held = order[: max(1, final.shape[0] // 5)]
        train = order[held.numel() :] if order.numel() > held.numel() else order
        heads.kl_initial = heads._kl(states[:, held], final[held])
        rate = lr or 0.05 / model.config.hidden_size
        heads._fit(states[:, train], final[train], steps, rate, batch_tokens, generator)
        trained = heads._kl(states[:, held], final[held])
        worse = [index for index, (kl, base) in enumerate(zip(trained, heads.kl_initial, strict=True)) if kl >= base]
        heads.weight[worse] = 0
        heads.bias[worse] = 0
        heads.kl_final = [min(kl, base) for kl, base in zip(trained, heads.kl_initial, strict=True)]
        heads.held_out_positions = held.numel()
        heads.identity_layers = [index + 1 for index in worse]
        return heads

    def fit_record(self) -> dict[str, Any]:
        """Per exit layer 1 … L−1, the mean distillation KL on held-out calibration positions before and after
        fitting, and the layers whose map was put back to the identity."""
        return {
            "kl_before": self.kl_initial,
            "kl_after": self.kl_final,
            "held_out_positions": self.held_out_positions,
            "identity_layers": self.identity_layers,
        }

    def extra_macs(self) -> int:
        return self.weight.shape[-1] ** 2

    def mapped(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        if layer >= self.layers:
            return hidden
        state = hidden.float()
        return (state + state @ self.weight[layer - 1].T + self.bias[layer - 1]).to(hidden.dtype)

    def logits(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        return self.shared(self.mapped(layer, hidden))

    def _fit(
        self, states: torch.Tensor, final: torch.Tensor, steps: int, lr: float, batch: int, generator: torch.Generator
    ) -> None:
        flags = [p.requires_grad for p in self.model.parameters()]
        self.model.requires_grad_(False)
        self.weight.requires_grad_(True)
        self.bias.requires_grad_(True)
        optimizer = torch.optim.Adam([self.weight, self.bias], lr=lr)
        try:
            with torch.enable_grad():
                for _ in range(steps):
                    rows = torch.randint(final.shape[0], (min(batch, final.shape[0]),), generator=generator)
                    rows = rows.to(final.device)
                    with torch.no_grad():
                        teacher = F.log_softmax(self.shared(final[rows]).float(), dim=-1)
                    optimizer.zero_grad(set_to_none=True)
                    for index in range(states.shape[0]):
                        student = F.log_softmax(self.logits(index + 1, states[index, rows]).float(), dim=-1)
                        F.kl_div(student, teacher, log_target=True, reduction="batchmean").backward()
                    optimizer.step()
        finally:
            self.weight.requires_grad_(False)
            self.bias.requires_grad_(False)
            for parameter, flag in zip(self.model.parameters(), flags, strict=True):
                parameter.requires_grad_(flag)

    @torch.no_grad()
    def _kl(self, states: torch.Tensor, final: torch.Tensor, chunk: int = 256) -> list[float]:
        return [_mean_kl(self, index + 1, states[index], final, chunk) for index in range(states.shape[0])]


@torch.no_grad()
def _mean_kl(heads: ExitHeads, layer: int, states: torch.Tensor, final: torch.Tensor, chunk: int) -> float:
    total = 0.0
    for state, last in zip(states.split(chunk), final.split(chunk), strict=True):
        teacher = F.log_softmax(heads.shared(last).float(), dim=-1)
        student = F.log_softmax(heads.logits(layer, state).float(), dim=-1)
        total += float(F.kl_div(student, teacher, log_target=True, reduction="sum"))
    return total / final.shape[0]


@torch.no_grad()
def _layer_states(
    model: Any, windows: torch.Tensor, max_tokens: int, batch_size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The hidden states after every layer at up to `max_tokens` window positions (drawn with `seed`):
    (layers − 1, tokens, hidden) for the exits and (tokens, hidden) for the last layer, in the model's dtype."""
    model.eval()
    samples, length = windows.shape
    count = min(max_tokens, samples * length)
    chosen = torch.randperm(samples * length, generator=torch.Generator().manual_seed(seed))[:count].sort().values
    captured: list[torch.Tensor] = []
    hooks = [
        layer.register_forward_hook(lambda _module, _args, output: captured.append(_tensor(output)))
        for layer in model.model.layers
    ]
    per_layer: list[list[torch.Tensor]] = [[] for _ in model.model.layers]
    try:
        for start in range(0, samples, batch_size):
            batch = windows[start : start + batch_size]
            flat = chosen[(chosen >= start * length) & (chosen < (start + batch.shape[0]) * length)] - start * length
            captured.clear()
            model.model(input_ids=batch.to(model.device), use_cache=False)
            index = flat.to(model.device)
            for store, output in zip(per_layer, captured, strict=True):
                store.append(output.reshape(-1, output.shape[-1])[index])
    finally:
        for hook in hooks:
            hook.remove()
    layers = [torch.cat(store) for store in per_layer]
    return torch.stack(layers[:-1]), layers[-1]


def distillation_kl(model: Any, heads: ExitHeads, windows: torch.Tensor, max_tokens: int = 2048) -> list[float]:
    """Per exit layer (1 … L−1), the mean KL from the final layer's next-token distribution to the head's, over up to
    `max_tokens` window positions: how far each head is from what the full model would say."""
    states, final = _layer_states(model, windows, max_tokens, 8, 0)
    return [_mean_kl(heads, index + 1, states[index], final, 256) for index in range(states.shape[0])]


def _tensor(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


# --- confidence measures ----------------------------------------------------------------------------------------------


class ConfidenceMeasure:
    """How sure the model is after a layer, in [0, 1] for CALM's thresholds (> threshold exits, so 1.0 never does).
    `reads_head` says whether the test itself needs the exit head's logits (it then costs an LM-head read)."""

    reads_head: ClassVar[bool] = True

    def __call__(self, logits: torch.Tensor | None, hidden: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


CONFIDENCE_MEASURES: Registry[type[ConfidenceMeasure]] = Registry("early-exit confidence measure")


@CONFIDENCE_MEASURES.register("softmax-gap")
class SoftmaxGap(ConfidenceMeasure):
    """CALM's softmax response: the top-1 minus the top-2 probability of the next-token distribution."""

    def __call__(self, logits: torch.Tensor | None, hidden: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        assert logits is not None
        top = torch.softmax(logits.float(), dim=-1).topk(2, dim=-1).values
        return top[..., 0] - top[..., 1]


@CONFIDENCE_MEASURES.register("saturation")
class Saturation(ConfidenceMeasure):
    """CALM's hidden-state saturation: the cosine between the hidden state after this layer and the one before (the
    embeddings before layer 1), clamped to [0, 1]."""

    reads_head = False

    def __call__(self, logits: torch.Tensor | None, hidden: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(hidden.float(), previous.float(), dim=-1).clamp(0.0, 1.0)


# --- statistics -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExitCosts:
    """Multiply-accumulates per token of each part of a decoding step (the linear layers' weights)."""

    layer: int  # one decoder layer
    test: int  # one exit test (an LM-head read for softmax-gap, a cosine for saturation)
    head: int  # one read of the exit head, or of the final norm and LM head
    fill: int  # one skipped layer's state propagation (its key and value projections)
    layers: int

    @property
    def full_depth(self) -> int:
        return self.layers * self.layer + self.head

    @classmethod
    def of(cls, model: Any, heads: ExitHeads, measure: ConfidenceMeasure) -> ExitCosts:
        layers = model.model.layers
        head = _linear_macs(model.lm_head) + heads.extra_macs()
        fill = _linear_macs(layers[0].self_attn.k_proj) + _linear_macs(layers[0].self_attn.v_proj)
        test = head if measure.reads_head else 3 * model.config.hidden_size
        return cls(_linear_macs(layers[0]), test, head, fill, len(layers))


def _linear_macs(module: torch.nn.Module) -> int:
    """Multiply-accumulates per token of every linear layer in `module` (a LoRA adapter's A and B included)."""
    return sum(m.in_features * m.out_features for m in module.modules() if isinstance(m, torch.nn.Linear))


@dataclass
class ExitStats:
    """Where generated tokens left the decoder, summed over calls. `computed_layers` counts full layers run on behalf
    of each generated token (a batch runs until its last sequence exits, so a token may pay for layers beyond its own
    exit); `filled_layers` the layers that only got keys and values; `exit_tests` the confidence tests, `head_reads`
    the exit-head and final-head reads. With `costs`, `macs` sums what all of that cost and `test_macs` the tests'
    own part, against `full_depth_macs`, what the same tokens cost at full depth."""

    layers: int
    costs: ExitCosts | None = None
    tokens: int = 0
    exit_layer_sum: int = 0
    computed_layers: int = 0
    filled_layers: int = 0
    exit_tests: int = 0
    head_reads: int = 0
    histogram: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.histogram:
            self.histogram = [0] * self.layers

    @property
    def mean_exit_layer(self) -> float:
        """0 before any token."""
        return self.exit_layer_sum / self.tokens if self.tokens else 0.0

    @property
    def layer_fraction(self) -> float:
        """Full layers run per token over the model's depth; 0 before any token."""
        return self.computed_layers / (self.tokens * self.layers) if self.tokens else 0.0

    @property
    def test_macs(self) -> int:
        return self.exit_tests * self.costs.test if self.costs else 0

    @property
    def macs(self) -> int:
        if self.costs is None:
            return 0
        c = self.costs
        return self.computed_layers * c.layer + self.test_macs + self.head_reads * c.head + self.filled_layers * c.fill

    @property
    def full_depth_macs(self) -> int:
        return self.tokens * self.costs.full_depth if self.costs else 0

    @property
    def compute_fraction(self) -> float | None:
        """The decoding's compute over full depth's for the same tokens, the exit tests included; None without a
        cost model or a token."""
        return self.macs / self.full_depth_macs if self.full_depth_macs else None

    @property
    def test_share(self) -> float | None:
        """The exit tests' share of the decoding's compute."""
        return self.test_macs / self.macs if self.macs else None

    def record(self, exits: torch.Tensor, computed: int, tests: int, reads: int) -> None:
        """Count one step: `exits` holds the 1-based exit layer of each token generated in it; the step ran
        `computed` layers, `tests` confidence tests and `reads` head reads on each of its rows."""
        count = exits.numel()
        self.tokens += count
        self.exit_layer_sum += int(exits.sum())
        self.computed_layers += computed * count
        self.filled_layers += (self.layers - computed) * count
        self.exit_tests += tests * count
        self.head_reads += reads * count
        for index, value in enumerate(torch.bincount(exits.flatten().cpu(), minlength=self.layers + 1)[1:].tolist()):
            self.histogram[index] += value

    def reset(self) -> None:
        self.tokens = self.exit_layer_sum = self.computed_layers = self.filled_layers = 0
        self.exit_tests = self.head_reads = 0
        self.histogram = [0] * self.layers

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean_exit_layer": self.mean_exit_layer, "layer_fraction": self.layer_fraction,
                "macs": self.macs, "test_macs": self.test_macs, "full_depth_macs": self.full_depth_macs,
                "compute_fraction": self.compute_fraction, "test_share": self.test_share}  # fmt: skip


# --- the decoder ------------------------------------------------------------------------------------------------------


class EarlyExitDecoder:
    """Greedy decoding with early exits; `stats` accumulates over calls (reset it between measurements). The
    confidence is tested after every layer from `min_layer` on even at threshold 1, where no token can exit, so such
    a cell measures the decoder's own overhead while producing the model's own tokens."""

    def __init__(self, model: Any, setting: EarlyExit, heads: ExitHeads) -> None:
        check_supported(model)
        self.model = model
        self.setting = setting
        self.heads = heads
        self.measure = CONFIDENCE_MEASURES.get(setting.measure)()
        self.layers = len(model.model.layers)
        self.stats = ExitStats(self.layers, ExitCosts.of(model, heads, self.measure))

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        max_new_tokens: int,
        min_new_tokens: int | None,
        pad_token_id: int,
        eos_token_id: int | Sequence[int],
    ) -> torch.Tensor:
        """As `model.generate(..., do_sample=False)`: the prompts followed by the new tokens, (batch, prompt + n),
        a finished sequence padded with `pad_token_id`; end-of-sequence logits are −inf until `min_new_tokens`."""
        from transformers import DynamicCache

        model = self.model
        model.eval()
        device = model.device
        tokens = input_ids.to(device)
        if attention_mask is None:
            attention_mask = torch.ones_like(tokens)
        attention_mask = attention_mask.to(device)
        positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
        mask = None if bool((attention_mask == 1).all()) else attention_mask
        eos = torch.tensor([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id), device=device)
        unfinished = torch.ones(tokens.shape[0], dtype=torch.bool, device=device)
        cache = DynamicCache(config=model.config)
        step_ids, step_positions = tokens, positions
        for step in range(max_new_tokens):
            suppress = eos if min_new_tokens is not None and step < min_new_tokens else None
            if step == 0:
                hidden, _ = self._layers(step_ids, mask, step_positions, cache, 0, self.layers)
                chosen = _pick(self._final_logits(hidden), suppress)
                exits = torch.full_like(chosen, self.layers)
                computed, tests, reads = self.layers, 0, 1
            else:
                chosen, exits, computed, tests, reads = self._step(step_ids, mask, step_positions, cache, unfinished,
                                                                   suppress)  # fmt: skip
            self.stats.record(exits[unfinished], computed, tests, reads)
            chosen = torch.where(unfinished, chosen, torch.full_like(chosen, pad_token_id))
            tokens = torch.cat([tokens, chosen[:, None]], dim=-1)
            unfinished &= ~torch.isin(chosen, eos)
            if not bool(unfinished.any()):
                break
            step_ids = chosen[:, None]
            step_positions = step_positions[:, -1:] + 1
            if mask is not None:
                mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
        return tokens

    def _layers(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor | None,
        positions: torch.Tensor,
        cache: Any,
        start: int,
        stop: int,
        prepared: tuple[Any, Any] | None = None,
        hidden: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple[Any, Any]]:
        """Run layers [start, stop) as the model's own forward does, from the embeddings when `hidden` is None;
        returns the hidden state and the (causal mask, position embeddings) to reuse for the next layers."""
        inner = self.model.model
        if hidden is None:
            hidden = inner.embed_tokens(ids)
        if prepared is None:
            from transformers.masking_utils import create_causal_mask

            causal_mask = create_causal_mask(
                config=inner.config, inputs_embeds=hidden, attention_mask=mask, past_key_values=cache,
                position_ids=positions,
            )  # fmt: skip
            prepared = (causal_mask, inner.rotary_emb(hidden, position_ids=positions))
        causal_mask, position_embeddings = prepared
        for layer in inner.layers[start:stop]:
            hidden = _tensor(
                layer(hidden, attention_mask=causal_mask, position_embeddings=position_embeddings,
                      position_ids=positions, past_key_values=cache, use_cache=True)
            )  # fmt: skip
        return hidden, prepared

    def _final_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The model's own head on the last position, as `logits_to_keep=1` computes it, in float32."""
        return self.model.lm_head(self.model.model.norm(hidden)[:, -1:, :])[:, -1].float()

    def _step(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor | None,
        positions: torch.Tensor,
        cache: Any,
        unfinished: torch.Tensor,
        suppress: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, int, int, int]:
        """One token per sequence: (tokens, exit layers, layers run, confidence tests, head reads)."""
        chosen = torch.zeros_like(ids[:, 0])
        exits = torch.full_like(chosen, self.layers)
        decided = ~unfinished
        prepared, tests, reads = None, 0, 0
        hidden = self.model.model.embed_tokens(ids)
        for layer in range(1, self.layers):
            previous = hidden
            hidden, prepared = self._layers(ids, mask, positions, cache, layer - 1, layer, prepared, hidden)
            if layer < self.setting.min_layer:
                continue
            logits = self._exit_logits(layer, hidden, suppress) if self.measure.reads_head else None
            confidence = self.measure(logits, hidden[:, -1], previous[:, -1])
            tests += 1
            newly = (confidence > self.setting.threshold) & ~decided
            if bool(newly.any()):
                if logits is None:
                    logits = self._exit_logits(layer, hidden, suppress)
                    reads += 1
                chosen = torch.where(newly, torch.argmax(logits, dim=-1), chosen)
                exits = torch.where(newly, torch.full_like(exits, layer), exits)
                decided |= newly
            if bool(decided.all()):
                self._fill(hidden, prepared[1], cache, layer)
                return chosen, exits, layer, tests, reads
        hidden, _ = self._layers(ids, mask, positions, cache, self.layers - 1, self.layers, prepared, hidden)
        chosen = torch.where(decided, chosen, _pick(self._final_logits(hidden), suppress))
        return chosen, exits, self.layers, tests, reads + 1

    def _exit_logits(self, layer: int, hidden: torch.Tensor, suppress: torch.Tensor | None) -> torch.Tensor:
        return _suppressed(self.heads.logits(layer, hidden[:, -1:, :])[:, -1].float(), suppress)

    def _fill(self, hidden: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor], cache: Any,
              start: int) -> None:  # fmt: skip
        """CALM's state propagation: each skipped layer caches the keys and values of `hidden` (its input norm, key
        and value projections, rotary embedding), with no attention or MLP."""
        cos, sin = (t.unsqueeze(1) for t in position_embeddings)
        for index in range(start, self.layers):
            layer = self.model.model.layers[index]
            attention = layer.self_attn
            normed = layer.input_layernorm(hidden)
            shape = (*normed.shape[:-1], -1, attention.head_dim)
            keys = attention.k_proj(normed).view(shape).transpose(1, 2)
            values = attention.v_proj(normed).view(shape).transpose(1, 2)
            cache.update(keys * cos + _rotate_half(keys) * sin, values, index)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _suppressed(logits: torch.Tensor, eos: torch.Tensor | None) -> torch.Tensor:
    if eos is None:
        return logits
    logits = logits.clone()
    logits[:, eos] = -float("inf")
    return logits


def _pick(logits: torch.Tensor, eos: torch.Tensor | None) -> torch.Tensor:
    return torch.argmax(_suppressed(logits, eos), dim=-1)
