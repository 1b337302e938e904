"""One measured shape of one method: tok/s per arm and the per-round ratios between the arms.

Fields are named by arm (``vanilla``, ``standard``, ``method``); ``method`` holds the mixing
arm's label (``moi``, ``soft+gumbel``, ...). Result files written before the fields were named
that way used ``moi_*``, ``ratio`` and ``*_vs_vanilla``; :meth:`Result.from_dict` reads both.

>>> r = Result.from_rates("vllm", 8, 32, standard=[99, 98], method=[90, 99], vanilla=[100, 100])
>>> round(r.method_over_vanilla, 3), r.method_over_vanilla_ratios
(0.945, [0.9, 0.99])
>>> Result.from_dict({**r.to_dict(), "method": "soft"}).method
'soft'
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field, fields

from mixinputs.bench.spread import Spread, spread_of

# Names the result files of earlier releases used -> today's names.
OLD_FIELD_NAMES = {
    "moi_tok_s": "method_tok_s",
    "moi_tpot_ms": "method_tpot_ms",
    "ratio": "method_over_standard",
    "ratios": "method_over_standard_ratios",
    "moi_vs_vanilla": "method_over_vanilla",
    "moi_vs_vanilla_ratios": "method_over_vanilla_ratios",
    "standard_vs_vanilla": "standard_over_vanilla",
    "standard_vs_vanilla_ratios": "standard_over_vanilla_ratios",
}

# The three ratios, numerator and denominator arm; "method" stands for the mixing arm's label.
RATIOS = {
    "method_over_vanilla": ("method", "vanilla"),
    "standard_over_vanilla": ("standard", "vanilla"),
    "method_over_standard": ("method", "standard"),
}


@dataclass
class Result:
    """Medians over rounds, and each ratio as the median of its per-round ratios."""

    backend: str
    batch_size: int
    max_tokens: int
    rounds: int
    standard_tok_s: float
    method_tok_s: float
    method_over_standard: float
    method_over_standard_ratios: list[float] = field(default_factory=list)
    standard_tpot_ms: float = 0.0  # time per output token, per request
    method_tpot_ms: float = 0.0
    vanilla_tok_s: float | None = None  # vLLM with no plugin loaded (vLLM backend only)
    vanilla_tpot_ms: float | None = None
    method_over_vanilla: float | None = None
    method_over_vanilla_ratios: list[float] = field(default_factory=list)
    standard_over_vanilla: float | None = None
    standard_over_vanilla_ratios: list[float] = field(default_factory=list)
    method: str = "moi"  # the mixing arm: "moi", or a method label (``eval.methods``)
    # What the tok/s figures time: "decode" (vLLM today: decode steps only) or "call" (the
    # whole generate call, prefill included: transformers, and every file before the decode clock)
    clock: str = "call"
    # Each ratio's 95 % bootstrap interval of the median (``spread``), by the ratio's field name.
    intervals: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def from_rates(
        cls,
        backend: str,
        batch: int,
        max_tokens: int,
        standard: list[float],
        method: list[float],
        vanilla: list[float] | None = None,
        method_name: str = "moi",
        clock: str = "call",
    ) -> Result:
        """Tokens per second per round for each arm -> medians, per-round ratios, intervals."""
        rates = {"standard": standard, "method": method}
        if vanilla is not None:
            rates["vanilla"] = vanilla
        result = cls(
            backend=backend,
            batch_size=batch,
            max_tokens=max_tokens,
            rounds=len(standard),
            standard_tok_s=statistics.median(standard),
            method_tok_s=statistics.median(method),
            method_over_standard=0.0,  # set below with the other ratios
            standard_tpot_ms=1000 * batch / statistics.median(standard),
            method_tpot_ms=1000 * batch / statistics.median(method),
            method=method_name,
            clock=clock,
        )
        if vanilla is not None:
            result.vanilla_tok_s = statistics.median(vanilla)
            result.vanilla_tpot_ms = 1000 * batch / result.vanilla_tok_s
        for name, (num, den) in RATIOS.items():
            if num in rates and den in rates:
                per_round = [n / d for n, d in zip(rates[num], rates[den], strict=True)]
                spread = spread_of(per_round)
                setattr(result, name, spread.median)
                setattr(result, f"{name}_ratios", per_round)
                result.intervals[name] = list(spread.interval)
        return result

    @classmethod
    def from_dict(cls, data: dict) -> Result:
        """A result as written to JSON, today's field names or an earlier release's.

        >>> old = {"backend": "vllm", "batch_size": 8, "max_tokens": 32, "rounds": 1,
        ...        "standard_tok_s": 50.0, "moi_tok_s": 49.0, "ratio": 0.98, "ratios": [0.98]}
        >>> r = Result.from_dict(old)
        >>> r.method, r.method_tok_s, r.method_over_standard_ratios
        ('moi', 49.0, [0.98])
        """
        known = {f.name for f in fields(cls)}
        renamed = {OLD_FIELD_NAMES.get(key, key): value for key, value in data.items()}
        return cls(**{key: value for key, value in renamed.items() if key in known})

    def to_dict(self) -> dict:
        """The JSON form (today's field names)."""
        return asdict(self)

    def spreads(self) -> dict[str, Spread]:
        """Each measured ratio's spread, by field name (``method_over_vanilla``, ...); computed
        from the per-round ratios, so an old file without ``intervals`` gets them too."""
        out = {}
        for name in RATIOS:
            per_round = getattr(self, f"{name}_ratios")
            if per_round:
                out[name] = spread_of(per_round)
        return out

    def ratio_label(self, name: str) -> str:
        """``method_over_vanilla`` -> ``soft+gumbel/vanilla`` for this result's method."""
        num, den = RATIOS[name]
        return f"{self.method if num == 'method' else num}/{den}"
