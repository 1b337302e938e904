"""How far a throughput ratio can be trusted: its per-round range, a bootstrap interval of its
median, and a verdict that says plainly when the spread is larger than the effect.

A ratio such as method / vanilla is measured once per round (both arms run in the same round,
next to each other); the bench reports the median of those per-round ratios. On a shared machine
the rounds scatter (another process takes a core for a second), so the median alone can claim a
5 % cost that the rounds do not support. The interval is a percentile bootstrap of the median
(``scipy.stats.bootstrap``): resample the rounds with replacement, take each resample's median,
keep the middle 95 %. It is seeded, so the same rounds always give the same interval.

>>> s = spread_of([0.97, 0.99, 1.01, 0.98, 1.02, 0.96, 1.00, 0.99])
>>> s.median, s.low, s.high
(0.99, 0.96, 1.02)
>>> s.verdict()
'inconclusive: interval [0.975, 1.010] contains 1'
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

CONFIDENCE = 0.95
RESAMPLES = 2000
MIN_ROUNDS = 3  # below this a bootstrap of the median is only the rounds themselves


@dataclass(frozen=True)
class Spread:
    """One ratio's rounds, summarised: median, per-round range, bootstrap interval."""

    median: float
    low: float  # the lowest per-round ratio
    high: float  # the highest
    interval: tuple[float, float]  # CONFIDENCE bootstrap interval of the median
    rounds: int

    @property
    def contains_one(self) -> bool:
        """True when the interval does not tell the ratio apart from 1 (no resolved effect)."""
        return self.interval[0] <= 1.0 <= self.interval[1]

    def verdict(self) -> str:
        """One plain phrase: faster, slower, inconclusive, or too few rounds to tell.

        >>> spread_of([0.90, 0.91, 0.92, 0.89]).verdict()
        'slower: interval [0.890, 0.920] lies below 1'
        >>> spread_of([1.2]).verdict()
        'too few rounds (1) for an interval'
        """
        if self.rounds < MIN_ROUNDS:
            return f"too few rounds ({self.rounds}) for an interval"
        lo, hi = self.interval
        where = f"interval [{lo:.3f}, {hi:.3f}]"
        if self.contains_one:
            return f"inconclusive: {where} contains 1"
        return f"slower: {where} lies below 1" if hi < 1.0 else f"faster: {where} lies above 1"

    def describe(self) -> str:
        """The median, the per-round range and the verdict on one line.

        >>> spread_of([0.885, 0.912, 1.181]).describe()
        '0.912 (rounds 0.885-1.181; inconclusive: interval [0.885, 1.181] contains 1)'
        """
        return f"{self.median:.3f} (rounds {self.low:.3f}-{self.high:.3f}; {self.verdict()})"


def median_interval(
    values: list[float], confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the median of ``values`` (``scipy.stats.bootstrap``,
    seeded: reproducible). One value is its own interval.

    >>> median_interval([1.0, 1.0, 1.0])
    (1.0, 1.0)
    >>> lo, hi = median_interval([0.9, 1.0, 1.1, 1.0, 0.95, 1.05])
    >>> 0.9 <= lo <= 1.0 <= hi <= 1.1
    True
    """
    import numpy as np
    from scipy.stats import bootstrap

    if not values:
        raise ValueError("no rounds to take an interval of")
    if len(values) == 1:  # scipy needs two; one round is all there is to say
        return float(values[0]), float(values[0])
    options = {
        "confidence_level": confidence,
        "n_resamples": resamples,
        "method": "percentile",
        "vectorized": True,
    }
    try:  # scipy >= 1.15 takes ``rng``; older releases a ``random_state``
        result = bootstrap((values,), np.median, rng=np.random.default_rng(seed), **options)
    except TypeError:
        result = bootstrap((values,), np.median, random_state=seed, **options)
    interval = result.confidence_interval
    return float(interval.low), float(interval.high)


def spread_of(ratios: list[float]) -> Spread:
    """The spread of one ratio's per-round values (see the module docstring)."""
    return Spread(
        median=statistics.median(ratios),
        low=min(ratios),
        high=max(ratios),
        interval=median_interval(ratios),
        rounds=len(ratios),
    )
