"""Rows of a batch: take some, or put some back (the methods whose work runs on their rows only)."""

from __future__ import annotations

from typing import Any

import torch


def rows_at(t: Any, at: torch.Tensor | None) -> Any:
    """The rows ``at`` [S] of a tensor or of every field of a row NamedTuple (``MethodRows``,
    ``CarriedState``); all of ``t`` when ``at`` is None."""
    if at is None:
        return t
    if isinstance(t, torch.Tensor):
        return t.index_select(0, at)
    return type(t)(*(f.index_select(0, at) for f in t))


def put_rows(at: torch.Tensor | None, into: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
    """``part`` (rows ``at`` of ``into``, or all of them when None) in place of those rows."""
    return part if at is None else into.index_copy(0, at, part)
