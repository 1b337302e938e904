"""The registry: every method of the soft-input family, one module each.

``MODES`` (the ``mixinputs_mode`` values) and ``OPTIONS`` (what several modes share: the thinking
region with Cold Stop, noise, the math-symbol rule) are built from the modules below; everything
else reads them from here: ``MoIConfig``'s fields and rules (``mixinputs.config``), the request
keys, the engine's settings columns and carried state (``mixinputs.core.rows``), the mixing
core's stages (``mixinputs.core.step``), the ``--method`` grammar and help, and the README / docs
tables (``key_table``, ``methods_table``; a test keeps the docs equal to them).

Adding a method is one module (a ``Method`` subclass and its ``Fields``), one line in ``MODES``
and one base in ``MethodFields``, its tests and its docs section; nothing outside this package
names it.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

from mixinputs.methods.base import CommonFields, Method, MoIConfigError
from mixinputs.methods.moi import DIRECT, MOI
from mixinputs.methods.multiplex import MULTIPLEX, MultiplexFields
from mixinputs.methods.noise import (
    KEY_NOISE,
    NOISE,
    NOISES,
    KeptDraws,
    NoiseFields,
    kept_dirichlet,
    kept_rows,
)
from mixinputs.methods.plain_math import PLAIN_MATH, PlainMathFields, math_mask
from mixinputs.methods.selar import SELAR, SelarFields
from mixinputs.methods.soft import REGION, SOFT, RegionFields, SoftFields, measure_vocab_entropy
from mixinputs.methods.swir import SWIR, SwirFields

__all__ = [
    "FAMILY",
    "KEY_NOISE",
    "METHOD_KEYS",
    "MODES",
    "NOISES",
    "OPTIONS",
    "SEQUENCES",
    "KeptDraws",
    "Method",
    "MethodFields",
    "MoIConfigError",
    "draw_kept",
    "everything",
    "kept_rows",
    "key_table",
    "math_mask",
    "measure_entropy",
    "method",
    "method_help",
    "methods_table",
    "spec_examples",
    "uses_math_tokens",
    "work_of",
    "write_tables",
]

MODES: tuple[Method, ...] = (MOI, DIRECT, SOFT, SWIR, MULTIPLEX, SELAR)
"""Every ``mixinputs_mode`` value's method, in the order docs and errors list them."""
OPTIONS: tuple[Method, ...] = (REGION, NOISE, PLAIN_MATH)
"""What several modes share; each says which modes take it."""


@dataclass(frozen=True)
class MethodFields(PlainMathFields, MultiplexFields, SelarFields, SwirFields, SoftFields,
                   NoiseFields, RegionFields, CommonFields):  # fmt: skip
    """Every setting: ``MoIConfig`` inherits them (a dataclass lays fields out in reverse
    order of its bases: the common ones first, then each method's)."""


_BY_NAME = {m.name: m for m in MODES}
FAMILY: tuple[Method, ...] = tuple(m for m in MODES if m.family_code)
"""The modes whose input replaces the mixing core's (stage 7 of ``core.step``)."""
for _option in (*MODES, *OPTIONS):
    _option.bind(MODES)


measure_entropy = measure_vocab_entropy
"""The "vocab_entropy" work (``core.rows.WORK``): ``measure_entropy(rows, raw, at)`` [E]."""
draw_kept = kept_dirichlet
"""The "kept_draws" work: ``draw_kept(logits, rows, width)`` -> ``KeptDraws``, on the rows
``kept_rows(rows)`` marks."""


def uses_math_tokens(config) -> bool:
    """The config's mode feeds a sampled math-symbol token as itself (``plain_math``)."""
    return PLAIN_MATH.used(config)


def work_of(config, settings, cut: bool) -> set[str]:
    """The optional engine work (``core.rows.WORK``) a request needs; ``settings``: its
    ``RowSettings``, ``cut``: its sampler has a top-k / top-p of its own."""
    return set().union(*(m.work(config, settings, cut) for m in everything()))


def everything() -> tuple[Method, ...]:
    """Modes then options: the order their stages, columns and state are laid out in."""
    return (*OPTIONS, *MODES)


def method(mode: str) -> Method:
    """The method of a mode (``MoIConfigError`` naming the valid ones otherwise).

    >>> method("soft").top_k
    10
    """
    try:
        return _BY_NAME[mode]
    except (KeyError, TypeError):
        names = [*_BY_NAME, "off"]
        raise MoIConfigError(f"mode must be one of {names}, got {mode!r}") from None


def _keys() -> dict[str, tuple[str, tuple[str, ...]]]:
    keys = {}
    for m in everything():
        for key, spec in m.keys.items():
            if spec.own:
                keys[key] = (spec.field, m.key_modes(key, MODES))
    return keys


METHOD_KEYS = _keys()
"""request key -> (MoIConfig field, the modes it belongs to): a request sets a method's own key
only with one of those modes."""
SEQUENCES = tuple(name for m in everything() for name in m.sequences)
"""The settings that are token sequences (text, or a list of ids), whichever method has them."""
GENERAL_KEYS = {
    key: spec.field for m in everything() for key, spec in m.keys.items() if not spec.own
}
"""The keys several modes share, checked by ``MoIConfig``'s rules (region, Cold Stop, noise)."""


def key_table() -> str:
    """The docs' table of every request key (Markdown, ``docs/methods.md``), from the registry:
    the settings every mode has, then each method's and option's own."""
    modes = ", ".join(f'`"{m.name}"`' for m in MODES)
    own_k = "; ".join(
        f"`{m.name}`: {m.top_k_doc or m.top_k}" for m in MODES if m.top_k != MOI.top_k
    )
    sampling = ", ".join(f"`{m.name}`" for m in MODES if m.priors == ("sampling",))
    raw_only = ", ".join(f"`{m.name}`" for m in MODES if m.priors == ("raw",))
    thinking = ", ".join(f"`{m.name}`" for m in MODES if m.regions[0] == "thinking")
    rows = [
        ("mixinputs_beta", "any", 'number ≥ 0, or `"inf"`', "1.0 (or `MIXINPUTS_BETA`)"),
        ("mixinputs_mode", "—", f'{modes}, `"off"` (opt out)', f'`"{MODES[0].name}"`'),
        (
            "mixinputs_top_k",
            "any",
            "int ≥ 1 (at most `MIXINPUTS_MAX_TOP_K` in vLLM)",
            f"{MOI.top_k}; {own_k}",
        ),
        (
            "mixinputs_prior",
            "any",
            '`"raw"` (temperature-1 logits) or `"sampling"` (the distribution y was drawn from)',
            f'`"raw"`; {sampling}: only `"sampling"`; {raw_only}: only `"raw"`',
        ),
        (
            "mixinputs_region",
            "any",
            '`"all"`, `"thinking"` (mix until the think-end token)',
            f'`"all"`; {thinking}: `"thinking"`',
        ),
        ("mixinputs_think_end", "any", "the think-end token's text or id", '`"</think>"`'),
    ]
    lines = ["| key | modes | values | default |", "|---|---|---|---|"]
    lines += [
        f"| `{key}` | {modes_} | {values} | {default} |" for key, modes_, values, default in rows
    ]
    for m in everything():
        for key, spec in m.keys.items():
            names = ", ".join(f"`{n}`" for n in m.key_modes(key, MODES))
            lines.append(f"| `{key}` | {names} | {spec.values} | {spec.default} |")
    return "\n".join(lines)


def methods_table() -> str:
    """The README's table of the methods (Markdown), from the registry: standard decoding, then
    every mode's row and every option's."""
    lines = [
        "| method | request keys | `--method` | what it feeds (y: the sampled token, E: the "
        "embeddings) | paper |",
        "|---|---|---|---|---|",
        '| standard decoding | none, or `"mixinputs_mode": "off"` | `standard` | `E[y]` | |',
    ]
    for m in (*MODES, *OPTIONS):
        lines += ["| " + " | ".join(row) + " |" for row in m.table_rows()]
    return "\n".join(lines)


GENERATED = {"methods-table": methods_table, "request-keys": key_table}
"""The docs tables the registry writes: marker name -> its generator (``write_tables``)."""


def write_tables(text: str, check: bool = False) -> str:
    """``text`` (a Markdown page) with each generated table between its markers
    (``<!-- generated: NAME -->`` ... ``<!-- end generated -->``) made anew; ``check``: raise
    ``ValueError`` naming the table when it differs instead."""
    for name, make in GENERATED.items():
        start = f"<!-- generated: {name} -->\n"
        if start not in text:
            continue
        head, rest = text.split(start, 1)
        old, tail = rest.split("<!-- end generated -->", 1)
        new = make() + "\n"
        if check and old != new:
            raise ValueError(f"the {name} table is out of date")
        text = head + start + new + "<!-- end generated -->" + tail
    return text


def spec_examples() -> list[str]:
    """``--method`` examples, every mode's (``Method.specs``)."""
    return [spec for m in MODES for spec in m.specs]


def method_help() -> str:
    """The ``--method`` grammar's MODE / NOISE / REGION / key lines, from the registry."""
    modes = ", ".join(f"{m.name} ({m.title})" for m in MODES)
    noisy = " and ".join(m.name for m in MODES if m.noise)
    thinking = ", ".join(m.name for m in MODES if m.regions[0] == "thinking")
    width = ", ".join(f"{m.name}: {m.width_key}" for m in MODES if m.width_key)
    wrap = textwrap.TextWrapper(width=96, subsequent_indent=" " * 12)
    return (
        wrap.fill(f"    MODE    {modes}") + "\n"
        f"    NOISE   {' | '.join(NOISES[1:])} (noisy weights; {noisy} only)\n"
        "    REGION  all | thinking (mix only until the think-end token, </think>); the default\n"
        f"            is all, {thinking}'s thinking\n"
        "    key     a request key without mixinputs_ (beta, top_k, prior, think_end, and each\n"
        f"            method's own); k is the mode's K ({width}; else top_k)\n"
    )
