"""The math-symbol rule SwiReasoning and SeLaR share: a sampled math-symbol token is fed as itself.

Both authors' loops keep a step explicit when its token is a digit, a letter, an operator, a
bracket or a LaTeX command (``mixinputs.math_tokens``: SwiReasoning's ``generation_utils.py``
108-132 @ 7f3b278, SeLaR's 42-66 @ 1198a74). A mode uses it when its ``plain_math`` hook says so;
the front end resolves the token ids once (``plain_ids``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mixinputs.methods.base import Column, Key, Method, RowContext, flag, torch


@dataclass(frozen=True)
class PlainMathFields:
    plain_math: bool = True
    # Resolved by the front end (not a request key): the math-symbol token ids.
    plain_ids: tuple[int, ...] = ()


class PlainMath(Method):
    name = "plain_math"
    is_mode = False
    keys = {
        "mixinputs_plain_math": Key("plain_math", "`true` / `false`", "`true` (both releases)"),
    }
    columns = {"plain_math": Column("bool")}  # a math-symbol token is fed as itself

    def bind(self, modes) -> None:
        self.users = tuple(m for m in modes if m.reads_math)

    def modes(self, all_modes) -> tuple[str, ...]:
        return tuple(m.name for m in all_modes if m.reads_math)

    def check(self, config: Any, set_field, mode: Method) -> None:
        flag(config.plain_math, "mixinputs_plain_math")
        set_field("plain_ids", tuple(int(i) for i in config.plain_ids))

    def used(self, config: Any) -> bool:
        """The config's mode feeds math symbols as themselves."""
        return config.plain_math and any(m.name == config.mode for m in self.users)

    def row(self, config: Any, ctx: RowContext) -> dict[str, Any]:
        return {"plain_math": self.used(config)}


def math_mask(ids: tuple[int, ...], vocab: int, device: Any) -> Any:
    """[V] bool on ``device``: the math-symbol tokens ``ids`` (those below ``vocab``), uploaded
    from pinned memory on CUDA without a host sync.

    >>> math_mask((1, 3, 99), 4, "cpu").tolist()
    [False, True, False, True]
    """
    host = torch.zeros(vocab, dtype=torch.bool)
    host[torch.tensor([i for i in ids if i < vocab], dtype=torch.long)] = True
    if torch.device(device).type == "cuda":
        host = host.pin_memory()
    return host.to(device, non_blocking=True)


def plain_rows(rows, y: torch.Tensor, plain_mask: torch.Tensor | None) -> torch.Tensor:
    """[M] bool: the row feeds its token ``y`` [M] as itself (a math symbol)."""
    if plain_mask is None:
        return torch.zeros_like(rows.plain_math)
    return rows.plain_math & plain_mask[y.clamp(min=0)]


PLAIN_MATH = PlainMath()
