"""Per-row settings and carried state, laid out from the method registry.

An engine keeps one settings row per running request (``RowSettings``: host scalars, built once
by ``row_settings``), gathers a step's rows as ``MethodRows`` ([M] tensors), and carries each
row's ``CarriedState`` from step to step. Their columns are the core's own (below) plus every
method's ``Method.columns`` and ``Method.state``: adding a method adds its columns here without
touching this file.
"""

from __future__ import annotations

import math
from collections import namedtuple
from typing import Any

import torch

from mixinputs.methods import MODES, everything, method
from mixinputs.methods.base import NO_TOKEN, Column, RowContext

__all__ = [
    "ROW_DTYPES",
    "ROW_WIDTHS",
    "STATE_DTYPES",
    "WORK",
    "CarriedState",
    "MethodRows",
    "RowSettings",
    "fresh_state",
    "method_rows",
    "row_settings",
]

CORE_COLUMNS = {
    "beta": Column("float32"),  # inf = exactly E[y]
    "direct": Column("bool"),  # w = p (direct mixture, soft thinking)
    "seed": Column("long"),  # the seed of every draw (noise, Multiplex)
    "top_k": Column("long"),  # the row's own K (0: the whole vocabulary)
    "sampling": Column("bool"),  # its prior is the sampler's distribution
    "temperature": Column("float32"),  # the request's (1 for greedy requests)
    "eos": Column("long"),  # the EOS a method ending the request emits (NO_TOKEN: none)
    "family": Column("long"),  # the mode's ``family_code``: its input replaces the core's
    "greedy_recipe": Column("bool"),  # greedy, yet reads its mode's recipe distribution
}
STEP_COLUMNS = {
    "position": Column("long"),  # output index j of the token sampled this step
    "vocab_entropy": Column("float32"),  # the whole vocabulary's entropy (Cold Stop; NaN:
    #                                          not measured), set by the engine each step
}
WORK = ("forces", "vocab_entropy", "kept_draws", "kept_cut", "masked_prior")
"""The optional work an engine runs for some rows only (``Method.work``): write the token a
method emits over the sampled one, Cold Stop's whole-vocabulary entropy, Dirichlet draws over
every kept token (and under the sampler's own top-k / top-p), draws from the distribution the
sampler's top-k / top-p keep."""


def _columns() -> dict[str, Column]:
    columns = dict(CORE_COLUMNS)
    for m in everything():
        for name, column in m.columns.items():
            if name in columns:
                raise ValueError(f"{type(m).__name__} declares column {name!r} a second time")
            columns[name] = column
    return columns


_DTYPES = {"float32": torch.float32, "long": torch.long, "bool": torch.bool}
_ROW = _columns()
ROW_DTYPES = {name: _DTYPES[c.dtype] for name, c in _ROW.items()}
"""The tensor dtype of each ``RowSettings`` field on the device."""
ROW_WIDTHS = {name: c.width for name, c in _ROW.items() if c.width > 1}
"""The fields that are token sequences, and their length; every other field is one value."""
STATE = {name: s for m in everything() for name, s in m.state.items()}
STATE_DTYPES = {name: _DTYPES[s.dtype] for name, s in STATE.items()}
"""The tensor dtype of each ``CarriedState`` field (what a row carries from step to step)."""

RowSettings = namedtuple("RowSettings", list(_ROW))
RowSettings.__doc__ = """One request's settings as host scalars (token sequences: tuples of
``MAX_QUEUE`` ids): the core's columns and every method's (``ROW_DTYPES``)."""
MethodRows = namedtuple("MethodRows", [*_ROW, *STEP_COLUMNS])
MethodRows.__doc__ = """The settings of the rows that mix this step: [M] tensors on one device
([M, MAX_QUEUE] for token sequences), ``RowSettings`` plus the step's position and measured
entropy."""
CarriedState = namedtuple("CarriedState", list(STATE))
CarriedState.__doc__ = """What a row carries from step to step: [M] tensors, one per method's
``Method.state`` column (``STATE_DTYPES``)."""


def row_settings(
    config: Any,
    *,
    seed: int = 0,
    greedy: bool = False,
    temperature: float = 1.0,
    max_tokens: int | None = None,
) -> RowSettings:
    """The settings row of one request (a ``MoIConfig`` whose tokens are resolved to ids).

    ``greedy``: the request decodes greedily. Its sampling distribution is then a point mass on
    y, so a method that reads that distribution (soft thinking, a ``"sampling"`` prior, SeLaR,
    Multiplex) feeds exactly ``E[y]`` (beta = inf, no direct mixture, no method step) -- except
    a mode with a greedy recipe (``Method.greedy_recipe``), which then reads that recipe's
    distribution. ``temperature``: the request's (Cold Stop's entropy is taken at it; greedy
    requests at 1, as Soft Thinking's release sets them, ``sampling_params.py:113-116``).
    ``max_tokens``: the request's (SwiReasoning's ramp length). Every engine builds its rows
    through this one function.

    >>> from mixinputs.config import MoIConfig
    >>> soft = MoIConfig(mode="soft", think_end=5)
    >>> row_settings(soft).soft, row_settings(soft, greedy=True).beta
    (True, inf)
    """
    mode = method(config.mode)
    recipe_of = mode.greedy_recipe(config)
    sampling = config.prior == "sampling"
    recipe = greedy and recipe_of is not None
    point_mass = sampling and greedy and not recipe
    if recipe:
        temperature = recipe_of[0]
    elif greedy or not temperature > 0:
        temperature = 1.0
    ctx = RowContext(greedy, point_mass, float(temperature), max_tokens)
    values = {
        "beta": math.inf if point_mass else float(config.beta),
        "direct": mode.direct and not point_mass,
        "seed": int(seed),
        "top_k": 0 if config.top_k is None else int(config.top_k),  # 0: the whole vocabulary
        "sampling": sampling,
        "temperature": float(temperature),
        "eos": NO_TOKEN if config.eos is None else int(config.eos),
        "family": 0 if point_mass else mode.family_code,
        "greedy_recipe": recipe,
    }
    for m in everything():
        values.update(m.row(config, ctx))
    return RowSettings(**values)


def method_rows(
    configs,
    positions,
    seeds,
    device=None,
    greedy: bool = False,
    temperature: float = 1.0,
    max_tokens: int | None = None,
) -> MethodRows:
    """``MethodRows`` for a list of ``MoIConfig`` whose tokens are ids (host side); the step's
    ``vocab_entropy`` is NaN (not measured).

    >>> from mixinputs.config import MoIConfig
    >>> rows = method_rows([MoIConfig(mode="soft", noise="gumbel", think_end=5)], [0], [7])
    >>> rows.soft.tolist(), rows.noise.tolist(), rows.noise_temperature.tolist()
    ([True], [2], [0.5])
    """
    settings = [
        row_settings(c, seed=s, greedy=greedy, temperature=temperature, max_tokens=max_tokens)
        for c, s in zip(configs, seeds, strict=True)
    ]
    columns = {
        name: torch.tensor([getattr(r, name) for r in settings], dtype=dtype)
        for name, dtype in ROW_DTYPES.items()
    }
    columns["position"] = torch.tensor(list(positions), dtype=torch.long)
    columns["vocab_entropy"] = torch.full((len(settings),), float("nan"))
    return MethodRows(**{n: columns[n].to(device) for n in MethodRows._fields})


def fresh_state(batch: int, device=None) -> CarriedState:
    """The state of rows that have not sampled yet: each method's ``StateColumn.fresh``."""
    return CarriedState(
        *(
            torch.full((batch,), s.fresh, dtype=_DTYPES[s.dtype], device=device)
            for s in STATE.values()
        )
    )


def fresh_values() -> tuple:
    """``fresh_state`` as host values, in ``STATE_DTYPES`` order."""
    return tuple(s.fresh for s in STATE.values())


def max_width(config: Any) -> int:
    """Candidate columns this config's input needs (the engine's K + 1 must hold them)."""
    mode = method(config.mode)
    return max(mode.min_width, *(m.max_width(config) for m in MODES))
