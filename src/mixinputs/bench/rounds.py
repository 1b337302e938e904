"""The round schedule: every arm once per round, the order rotating, so that slow spells of a
shared machine fall on all arms alike and no arm always runs first (or right after another)."""

from __future__ import annotations

from collections.abc import Callable


def interleaved_arms(
    arms: dict[str, Callable[[], float]],
    rounds: int,
    warmup: int = 1,
    after_round: Callable[[int, float], None] | None = None,
) -> dict[str, list[float]]:
    """Seconds per round for each arm: ``warmup`` rounds (not counted), then ``rounds`` rounds
    in which every arm runs once, the order rotating by one each round. ``after_round(r,
    seconds)`` hears of each counted round as it ends (the run's time estimate).

    >>> calls = []
    >>> out = interleaved_arms({"a": lambda: calls.append("a") or 1.0,
    ...                         "b": lambda: calls.append("b") or 2.0}, rounds=2)
    >>> calls, out
    (['a', 'b', 'a', 'b', 'b', 'a'], {'a': [1.0, 1.0], 'b': [2.0, 2.0]})
    """
    names = list(arms)
    for _ in range(warmup):
        for name in names:
            arms[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(arms[name]())
        if after_round is not None:
            after_round(r, sum(times[name][-1] for name in names))
    return times


def interleaved(
    run: Callable[[bool], float], tokens: int, rounds: int, warmup: int = 1
) -> tuple[list[float], list[float]]:
    """Two arms from one function, ``run(mixing) -> seconds``: tok/s per round of the standard
    arm and of the mixing arm, after ``warmup`` uncounted rounds of both.

    >>> interleaved(lambda mixing: 2.0 if mixing else 1.0, tokens=10, rounds=2, warmup=0)
    ([10.0, 10.0], [5.0, 5.0])
    """
    arms = {"standard": lambda: run(False), "method": lambda: run(True)}
    times = interleaved_arms(arms, rounds, warmup=warmup)
    return [tokens / t for t in times["standard"]], [tokens / t for t in times["method"]]
