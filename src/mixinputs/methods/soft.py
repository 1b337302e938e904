"""Soft Thinking (Zhang et al. 2025, arXiv 2505.15778), with the thinking region and Cold Stop.

Two entries of the registry live here:

- ``SOFT``, the mode ``"soft"``: while thinking, the concept token ``Σ p̃_i E[i]`` over the top-K
  of the distribution the token is sampled from (the sampled token's own slot carries no weight),
  and the row emits the heaviest token of the weights it is fed, after noise (eric-ai-lab/
  Soft-Thinking @ b97407c, ``sglang/srt/layers/sampler.py:204``,
  ``batch_next_token_ids = topk_indices[:, 0]``).
- ``REGION``, what every mode with a thinking region shares: a row mixes until it emits its
  think-end token, then feeds plain embeddings; **Cold Stop** (``cold_stop_entropy`` τ,
  ``cold_stop_steps`` L): after L consecutive thinking steps whose entropy is below τ the emitted
  token becomes the think-end token; with ``cold_stop_abort``, L more low-entropy steps after
  thinking end the request (its next token is EOS), as Soft Thinking's release does
  (``schedule_batch.py:761-769``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mixinputs.methods.base import (
    Column,
    Key,
    Method,
    MoIConfigError,
    RowContext,
    StateColumn,
    choice,
    count,
    positive,
    torch,
)

SOFT_TOP_K = 10
"""Soft Thinking's release mixes its concept token over the top 10 tokens (``--max_topk 10``)."""
SOFT_NOISE_TOP_K = 15
"""Randomized Soft Thinking's K: ``--max_topk 15`` (WJMacro/Randomized-Soft-Thinking @ 4a95b5a,
``scripts/st/st_with_dirichlet.sh:13``, ``st_with_gumbel.sh:16``)."""
SOFT_EMITS = ("top1", "sample")
"""What a soft-thinking row emits while thinking: ``"top1"``, the heaviest token of the weights it
is fed (after noise) -- Soft Thinking's release (``sampler.py:204``); ``"sample"``, the token the
engine's sampler drew (what mixinputs emitted before)."""
DEFAULT_COLD_STOP_STEPS = 256
"""Soft Thinking's release default for ``--early_stopping_length_threshold``."""
COLD_STOP_MEASURES = ("vocab", "vocab_normalized", "candidates")
"""What Cold Stop compares with τ: ``"vocab"``, the entropy (nats) of softmax(logits / T) over
the whole vocabulary, before top-k / top-p / min-p, T the request's temperature (1 for greedy
requests) -- Soft Thinking's release (``sglang/srt/layers/sampler.py:141``; greedy:
``sampling_params.py:113-116``); ``"vocab_normalized"``, the same divided by log V (Randomized
Soft Thinking, ``sampler.py:175-176``); ``"candidates"``, the entropy of the row's top-K
candidates after the sampler's filters (no pass over the vocabulary)."""
MEASURE_CODES = {name: code for code, name in enumerate(COLD_STOP_MEASURES)}
NO_THINK_END = -1  # think_end of a row that mixes every output token (region "all")
KEY_COLD_STOP_ENTROPY = "mixinputs_cold_stop_entropy"
KEY_COLD_STOP_STEPS = "mixinputs_cold_stop_steps"
KEY_COLD_STOP_MEASURE = "mixinputs_cold_stop_measure"
KEY_COLD_STOP_ABORT = "mixinputs_cold_stop_abort"


@dataclass(frozen=True)
class SoftFields:
    # What a soft-thinking row emits while thinking (``SOFT_EMITS``).
    soft_emit: str = "top1"


@dataclass(frozen=True)
class RegionFields:
    cold_stop_entropy: float | None = None  # None: no Cold Stop (nats, or / log V)
    cold_stop_steps: int = DEFAULT_COLD_STOP_STEPS
    # None: the release's default for this preset (``stop_measure``, ``stop_abort``).
    cold_stop_measure: str | None = None
    cold_stop_abort: bool | None = None


class Soft(Method):
    name = "soft"
    title = "Soft Thinking"
    asks = '`"mixinputs_mode": "soft"` (+ `mixinputs_soft_emit`)'
    feeds = (
        "while thinking (until `</think>`, the default region), the concept token `Σ p̃_i E[i]`, "
        "`p̃` the distribution y was sampled from (after temperature, top-k, top-p, min-p) "
        "renormalized over its top 10; it emits its top-1, not y, as released"
    )
    paper = "Zhang et al. 2025, [arXiv 2505.15778](https://arxiv.org/abs/2505.15778)"
    specs = ("soft", "soft@all", "soft:soft_emit=sample")
    top_k = SOFT_TOP_K
    top_k_doc = f"{SOFT_TOP_K} (with noise {SOFT_NOISE_TOP_K})"
    priors = ("sampling",)
    regions = ("thinking", "all")
    noise = True
    direct = True
    # Its think-end text resolves as its release does: the LAST token of the text's encoding
    # (``managers/schedule_batch.py:735``), logged when the text is not one token.
    think_end_last_token = True
    derived = ("soft",)
    # Soft thinking with noise follows Randomized Soft Thinking (WJMacro/Randomized-Soft-Thinking
    # @ 4a95b5a): ``scripts/st/st_with_dirichlet.sh:31`` ``--dirichlet_alpha 4.0`` (Dirichlet(α·p):
    # τ = 1/α = 0.25) and ``st_with_gumbel.sh:35`` ``--gumbel_temperature 0.5``; its Dirichlet is
    # drawn over every kept token, then the top-K (``sampler.py:221-234``).
    noise_temperatures = {"dirichlet": 0.25, "gumbel": 0.5}
    dirichlet_supports = ("kept", "top_k")
    keys = {
        "mixinputs_soft_emit": Key(
            "soft_emit", '`"top1"`, `"sample"`', '`"top1"` (release, `sampler.py:204`)'
        ),
    }
    columns = {"soft": Column("bool"), "soft_top1": Column("bool")}

    def soft(self, config: Any) -> bool:
        """``config.soft``: the mode is soft thinking."""
        return config.mode == self.name

    def worst_case(self, k: int) -> dict[str, Any]:
        # Cold Stop's entropy, Dirichlet draws over every kept token and the sampler's masks.
        return {"region": "thinking", "cold_stop_entropy": 0.01, "noise": "dirichlet"}

    def default_top_k(self, config: Any) -> int:
        return SOFT_NOISE_TOP_K if config.noise != "none" else SOFT_TOP_K

    def check(self, config: Any, set_field, mode: Method) -> None:
        choice(config.soft_emit, "mixinputs_soft_emit", SOFT_EMITS)

    def needs_step(self, config: Any) -> bool:
        return config.mode == self.name

    def work(self, config: Any, settings: Any, cut: bool) -> set[str]:
        return {"forces"} if settings.soft_top1 else set()

    def chooses(self, config: Any) -> bool:
        """What a row emits depends on its weights and state, decided before y is known."""
        return config.mode == self.name

    def row(self, config: Any, ctx: RowContext) -> dict[str, Any]:
        soft = config.mode == self.name and not ctx.point_mass
        return {"soft": soft, "soft_top1": soft and config.soft_emit == "top1"}

    # 4. The emitted token: a soft row in its region emits the heaviest candidate it is fed
    #    (release: the top-1 of the final weights, after noise), not the sampled one.
    def on_emit(self, d, rows, state, inputs) -> None:
        top1 = state.thinking & rows.soft_top1
        heaviest = d.ids.gather(1, d.scores.argmax(dim=-1, keepdim=True))[:, 0]
        d.emitted = torch.where(top1, heaviest, d.emitted)
        d.chosen = d.chosen | top1


class Region(Method):
    """The thinking region and Cold Stop, for every mode whose ``regions`` include "thinking"."""

    name = "region"
    is_mode = False
    title = "Cold Stop"
    keys = {
        KEY_COLD_STOP_ENTROPY: Key(
            "cold_stop_entropy", "number > 0, nats (needs region `\"thinking\"`)",
            "none: no Cold Stop", own=False,
        ),
        KEY_COLD_STOP_STEPS: Key(
            "cold_stop_steps", "int ≥ 1", "256 (release `--early_stopping_length_threshold`)",
            own=False,
        ),
        KEY_COLD_STOP_MEASURE: Key(
            "cold_stop_measure",
            '`"vocab"` (nats), `"vocab_normalized"` (÷ log V), `"candidates"` (the cut top-K)',
            '`"vocab"`; with noise `"vocab_normalized"` (releases)',
        ),
        KEY_COLD_STOP_ABORT: Key(
            "cold_stop_abort", "`true` / `false`: after thinking, L low-entropy steps end the "
            "request", "`true`; with noise `false` (releases)",
        ),
    }  # fmt: skip
    columns = {
        "think_end": Column("long"),  # NO_THINK_END for region "all"
        "cold_stop_entropy": Column("float32"),  # <= 0: no Cold Stop
        "cold_stop_steps": Column("long"),
        "cold_stop_measure": Column("long"),  # MEASURE_CODES
        "cold_stop_abort": Column("bool"),
    }
    derived = ("stop_measure", "stop_abort")
    state = {
        "thinking": StateColumn("bool", True),  # still mixing (always True for region "all")
        "low_entropy_steps": StateColumn("long", 0),  # consecutive steps below τ
        "ended": StateColumn("bool", False),  # Cold Stop ended the request: EOS from now
    }

    def table_rows(self) -> list[tuple[str, str, str, str, str]]:
        return [
            (
                "mixing while thinking",
                '`"mixinputs_region": "thinking"` (any mode; `soft`, `multiplex`: the default)',
                "`moi@thinking`, `soft+gumbel`",
                "the mode's input from the first output token until the think-end token, then "
                "`E[y]`",
                "",
            ),
            (
                "Cold Stop",
                '`"mixinputs_cold_stop_entropy": τ` (+ `mixinputs_cold_stop_steps` L, '
                "`_measure`, `_abort`), in a thinking region",
                "`soft:cold_stop_entropy=0.01`",
                "after L thinking steps in a row whose whole-vocabulary entropy at the request's "
                "temperature is < τ, the emitted token is the think-end token; without noise, L "
                "more such steps after thinking end the request (EOS), as released",
                "Zhang et al. 2025, [arXiv 2505.15778](https://arxiv.org/abs/2505.15778)",
            ),
        ]

    def stop_measure(self, config: Any) -> str | None:
        """``config.stop_measure`` (``stop_measure`` below)."""
        return stop_measure(config)

    def stop_abort(self, config: Any) -> bool:
        """``config.stop_abort`` (``stop_abort`` below)."""
        return stop_abort(config)

    def modes(self, all_modes) -> tuple[str, ...]:
        """The modes its own keys belong to: those with a thinking region."""
        return tuple(m.name for m in all_modes if "thinking" in m.regions)

    def check(self, config: Any, set_field, mode: Method) -> None:
        if config.cold_stop_entropy is not None:
            set_field(
                "cold_stop_entropy", positive(config.cold_stop_entropy, KEY_COLD_STOP_ENTROPY)
            )
            if config.region != "thinking":
                raise MoIConfigError(
                    f"{KEY_COLD_STOP_ENTROPY} ends the thinking region: it needs "
                    "mixinputs_region='thinking'"
                )
        set_field("cold_stop_steps", count(config.cold_stop_steps, KEY_COLD_STOP_STEPS))
        if config.cold_stop_entropy is None and config.cold_stop_steps != DEFAULT_COLD_STOP_STEPS:
            raise MoIConfigError(
                f"{KEY_COLD_STOP_STEPS} needs {KEY_COLD_STOP_ENTROPY} (the entropy threshold)"
            )
        measure, abort = config.cold_stop_measure, config.cold_stop_abort
        if (measure is not None or abort is not None) and config.cold_stop_entropy is None:
            key = KEY_COLD_STOP_MEASURE if measure is not None else KEY_COLD_STOP_ABORT
            raise MoIConfigError(f"{key} needs {KEY_COLD_STOP_ENTROPY} (Cold Stop's threshold)")
        if measure is not None:
            choice(measure, KEY_COLD_STOP_MEASURE, COLD_STOP_MEASURES)
        if abort is not None and not isinstance(abort, bool):
            raise MoIConfigError(f"{KEY_COLD_STOP_ABORT} must be true or false, got {abort!r}")

    def to_request(self, config: Any) -> dict[str, Any]:
        if config.cold_stop_entropy is None:
            return {}
        return {
            KEY_COLD_STOP_ENTROPY: config.cold_stop_entropy,
            KEY_COLD_STOP_STEPS: config.cold_stop_steps,
        }

    def from_request(self, fields: Any, base: Any, mode: str) -> dict[str, Any]:
        explicit_steps = KEY_COLD_STOP_STEPS in fields and KEY_COLD_STOP_ENTROPY not in fields
        if explicit_steps and base.cold_stop_entropy is None:
            raise MoIConfigError(
                f"{KEY_COLD_STOP_STEPS} needs {KEY_COLD_STOP_ENTROPY} (the entropy threshold)"
            )
        return {
            "cold_stop_entropy": fields.get(KEY_COLD_STOP_ENTROPY, base.cold_stop_entropy),
            "cold_stop_steps": fields.get(KEY_COLD_STOP_STEPS, base.cold_stop_steps),
        }

    def needs_step(self, config: Any) -> bool:
        return config.region != "all"

    def carries_state(self, config: Any) -> bool:
        return config.region != "all"

    def needs_eos(self, config: Any) -> bool:
        return stop_abort(config)

    def eos_reason(self, config: Any) -> str:
        return (
            f"{KEY_COLD_STOP_ENTROPY} ends the request with the EOS token (set "
            f"{KEY_COLD_STOP_ABORT} to false to keep it going)"
        )

    def chooses(self, config: Any) -> bool:
        return config.cold_stop_entropy is not None

    def row(self, config: Any, ctx: RowContext) -> dict[str, Any]:
        measure = stop_measure(config)
        return {
            "think_end": int(config.think_end) if config.region == "thinking" else NO_THINK_END,
            "cold_stop_entropy": config.cold_stop_entropy or 0.0,
            "cold_stop_steps": config.cold_stop_steps,
            "cold_stop_measure": MEASURE_CODES[measure] if measure is not None else 0,
            "cold_stop_abort": stop_abort(config),
        }

    def work(self, config: Any, settings: Any, cut: bool) -> set[str]:
        if config.cold_stop_entropy is None:
            return set()
        vocab = stop_measure(config) != "candidates"
        return {"forces", "vocab_entropy"} if vocab else {"forces"}

    # 5. Cold Stop: count consecutive low-entropy steps; at L while thinking the emitted token
    #    becomes the think-end token; at L after thinking (cold_stop_abort) the request ends:
    #    from the next step on it emits EOS. Then the region: a row mixes until it emits its
    #    think-end token; from that token on, plain inputs.
    def on_region(self, d, rows, state, inputs) -> None:
        from mixinputs.core.weights import candidate_entropy

        thinking = state.thinking
        entropy = torch.where(
            rows.cold_stop_measure == MEASURE_CODES["candidates"],
            candidate_entropy(d.measured),
            rows.vocab_entropy,
        )
        low = entropy < rows.cold_stop_entropy  # τ <= 0 (no Cold Stop) and NaN: never
        counting = thinking | rows.cold_stop_abort
        low_steps = torch.where(counting & low, state.low_entropy_steps + 1, 0)
        reached = low & (low_steps >= rows.cold_stop_steps)
        cold = thinking & reached
        emitted = torch.where(cold, rows.think_end, d.emitted)
        ending = state.ended & (rows.eos >= 0)
        d.emitted = torch.where(ending, rows.eos, emitted)
        ended = state.ended | (~thinking & rows.cold_stop_abort & reached)
        d.active = thinking & (d.emitted != rows.think_end)
        carry = d.active | (~thinking & rows.cold_stop_abort)  # the count goes on after thinking
        d.state.update(
            thinking=d.active, low_entropy_steps=torch.where(carry, low_steps, 0), ended=ended
        )
        d.chosen = d.chosen | cold | ending


def stop_measure(config: Any) -> str | None:
    """The entropy Cold Stop tests (``COLD_STOP_MEASURES``), None without Cold Stop: as asked,
    else the release the preset follows -- ``"vocab"`` (Soft Thinking) without noise,
    ``"vocab_normalized"`` (Randomized Soft Thinking) with it."""
    if config.cold_stop_entropy is None:
        return None
    if config.cold_stop_measure is not None:
        return config.cold_stop_measure
    return "vocab" if config.noise == "none" else "vocab_normalized"


def stop_abort(config: Any) -> bool:
    """After thinking, L more low-entropy steps in a row end the request: as asked, else as the
    preset's release -- Soft Thinking does (``schedule_batch.py:761-769``), Randomized Soft
    Thinking (noise) does not (its ``update_topk_info`` stops counting at ``</think>``)."""
    if config.cold_stop_entropy is None:
        return False
    if config.cold_stop_abort is not None:
        return config.cold_stop_abort
    return config.noise == "none"


def vocab_entropy(
    logits: torch.Tensor, temperature: torch.Tensor, normalized: torch.Tensor
) -> torch.Tensor:
    """Cold Stop's entropy as released: [M] float32, the entropy (nats) of softmax(logits / T)
    over the whole vocabulary, before top-k / top-p / min-p, ``-Σ p log max(p, 1e-12)`` (Soft
    Thinking @ b97407c, ``sglang/srt/layers/sampler.py:141``); where ``normalized`` [M], divided
    by log V (Randomized Soft Thinking @ 4a95b5a, ``sampler.py:175-176``). ``logits`` [M, V]
    raw, ``temperature`` [M] > 0.

    >>> vocab_entropy(torch.zeros(1, 4), torch.ones(1), torch.tensor([True])).tolist()
    [1.0]
    """
    import math

    p = torch.softmax(logits.float() / temperature.float()[:, None], dim=-1)
    h = -(p * p.clamp(min=1e-12).log()).sum(dim=-1)
    return torch.where(normalized, h / math.log(logits.shape[-1]), h)


def measure_vocab_entropy(
    rows, logits: torch.Tensor, at: torch.Tensor | None = None
) -> torch.Tensor:
    """[M] (or [E], the rows ``at``) Cold Stop's whole-vocabulary entropy of ``logits`` [M, V]
    (raw) at each row's temperature, over log V where the row's measure says so."""
    normalized = rows.cold_stop_measure == MEASURE_CODES["vocab_normalized"]
    temperature = rows.temperature
    if at is not None:
        logits, temperature = logits.index_select(0, at), temperature.index_select(0, at)
        normalized = normalized.index_select(0, at)
    return vocab_entropy(logits, temperature, normalized)


SOFT = Soft()
REGION = Region()
