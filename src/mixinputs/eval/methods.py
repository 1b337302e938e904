"""Decoding methods as data: a short spec string <-> a ``MoIConfig`` (None: standard decoding).

Grammar (one method; the command line takes a comma-separated list)::

    standard
    MODE[+NOISE][@REGION][:key=value]...      options after colons (no shell quoting needed)
    MODE[+NOISE][@REGION](key=value, ...)     the same, as labels print it (quote it in a shell)

    MODE    moi | direct | soft | swir | selar | multiplex
    NOISE   dirichlet | gumbel
    REGION  all | thinking (the mode's default: all; multiplex: thinking)
    key     a MoIConfig field, i.e. a request key without ``mixinputs_``: beta, top_k, prior,
            think_end, cold_stop_entropy, cold_stop_steps, noise_temperature, and each
            family method's own (swir_window, selar_threshold, multiplex_width, ...);
            ``k`` is the mode's K (multiplex: multiplex_width, else top_k)

Examples: ``soft``, ``soft+gumbel``, ``moi@thinking``, ``moi:beta=2``,
``soft@thinking:cold_stop_entropy=0.01:cold_stop_steps=256``,
``moi@thinking:think_end=151668`` (a think-end token given by id), ``swir``,
``swir:swir_max_switches=2``, ``selar:selar_threshold=0.7``, ``multiplex:k=3``.

Every method has one stable label (:func:`method_label`): ``MoIConfig.name`` plus the options that
differ from that name's defaults, e.g. ``moi(beta=2)``, ``soft@thinking(cold_stop_entropy=0.01)``.
A label is itself a spec, so what a report prints can be asked for again.
"""

from __future__ import annotations

import math
from dataclasses import fields

from mixinputs.config import METHOD_KEYS, MODES, NOISES, REGIONS, MoIConfig, MoIConfigError

OPTIONS = (
    "beta",
    "top_k",
    "prior",
    "think_end",
    "cold_stop_entropy",
    "cold_stop_steps",
    "noise_temperature",
    *(field for field, _ in METHOD_KEYS.values()),
)
_SEQUENCES = ("swir_convergence", "swir_termination")  # text, or token ids joined by "/"
FORMS = (
    "standard | MODE[+NOISE][@REGION][:key=value]... with MODE in " + "|".join(MODES) + ", NOISE "
    "in dirichlet|gumbel, REGION in all|thinking, key in " + "|".join(OPTIONS) + " (e.g. soft, "
    "soft+gumbel@thinking, moi:beta=2, soft@thinking:cold_stop_entropy=0.01, swir, "
    "selar:selar_threshold=0.7, multiplex:multiplex_width=3)"
)


class MethodSpecError(ValueError):
    """A method spec that does not parse; the message names the bad part and the valid forms."""


def parse_method(spec: str) -> MoIConfig | None:
    """The config a method spec names; None for ``standard``.

    >>> parse_method("soft+gumbel@thinking:think_end=7").name
    'soft+gumbel@thinking'
    >>> parse_method("moi:beta=2") == parse_method("moi(beta=2)") == MoIConfig(beta=2)
    True
    >>> parse_method("standard") is None
    True
    """
    return parse_method_options(spec)[0]


def parse_method_options(spec: str) -> tuple[MoIConfig | None, frozenset[str]]:
    """The config a spec names and the option keys it sets itself (``--beta`` fills the rest).

    >>> parse_method_options("moi@thinking:beta=4")[1]
    frozenset({'beta'})
    """
    text = spec.strip()
    if text == "standard":
        return None, frozenset()
    head, options = _split_options(text, spec)
    head, _, region = head.partition("@")
    mode, _, noise = head.partition("+")
    if mode not in MODES:
        raise MethodSpecError(f"bad method {spec!r}: unknown mode {mode!r}; valid forms: {FORMS}")
    if noise and noise not in NOISES[1:]:
        raise MethodSpecError(
            f"bad method {spec!r}: unknown noise {noise!r} (one of {NOISES[1:]}); "
            f"valid forms: {FORMS}"
        )
    if region and region not in REGIONS:
        raise MethodSpecError(
            f"bad method {spec!r}: unknown region {region!r} (one of {REGIONS}); "
            f"valid forms: {FORMS}"
        )
    values: dict = {"mode": mode, "noise": noise or "none"}
    if region:
        values["region"] = region
    for option in options:
        key, eq, value = (part.strip() for part in option.partition("="))
        if key == "k":  # the mode's K: Multiplex's draws, every other mode's top-k
            key = "multiplex_width" if mode == "multiplex" else "top_k"
        if key in ("mode", "noise", "region"):
            raise MethodSpecError(
                f"bad method {spec!r}: option {option!r}: the {key} goes in the name "
                f"(e.g. soft+gumbel@thinking); valid forms: {FORMS}"
            )
        if not eq or key not in OPTIONS or not value:
            raise MethodSpecError(
                f"bad method {spec!r}: bad option {option!r}, want key=value with key in "
                f"{OPTIONS}; valid forms: {FORMS}"
            )
        if key in values:
            raise MethodSpecError(f"bad method {spec!r}: option {key!r} given twice")
        values[key] = _value(value, sequence=key in _SEQUENCES)
    try:
        config = MoIConfig(**values)
    except MoIConfigError as e:
        raise MethodSpecError(f"bad method {spec!r}: {e}") from None
    return config, frozenset(values) - {"mode", "noise", "region"}


def method_label(config: MoIConfig | None, beta: bool = True) -> str:
    """The stable label of a method: ``MoIConfig.name`` plus its non-default options.

    ``beta=False`` leaves beta out (eval records keep MoI's beta in a field of its own).

    >>> method_label(MoIConfig(beta=2)), method_label(None), method_label(MoIConfig(mode="soft"))
    ('moi(beta=2)', 'standard', 'soft')
    >>> method_label(parse_method("soft@thinking:cold_stop_entropy=0.01:cold_stop_steps=256"))
    'soft@thinking(cold_stop_entropy=0.01)'
    """
    if config is None:
        return "standard"
    base = MoIConfig(mode=config.mode, noise=config.noise, region=config.region)
    changed = [
        f"{f.name}={_text(getattr(config, f.name))}"
        for f in fields(MoIConfig)
        if f.name in OPTIONS
        and (beta or f.name != "beta")
        and getattr(config, f.name) != getattr(base, f.name)
    ]
    return config.name + (f"({', '.join(changed)})" if changed else "")


def split_methods(text: str) -> list[str]:
    """A comma-separated list of specs; commas inside a label's parentheses do not split.

    >>> split_methods("standard, soft,moi(beta=2, top_k=5)")
    ['standard', 'soft', 'moi(beta=2, top_k=5)']
    """
    specs, depth, start = [], 0, 0
    for i, char in enumerate(text + ","):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            specs.append(text[start:i].strip())
            start = i + 1
    specs = [s for s in specs if s]
    if not specs:
        raise MethodSpecError(f"no method given; valid forms: {FORMS}")
    return specs


def parse_methods(text: str) -> list[tuple[str, MoIConfig | None]]:
    """A comma-separated list of specs -> (label, config), each method once.

    >>> [label for label, _ in parse_methods("standard, soft,moi@thinking:think_end=5,moi:beta=1")]
    ['standard', 'soft', 'moi@thinking(think_end=5)', 'moi']
    """
    methods: dict[str, MoIConfig | None] = {}
    for spec in split_methods(text):
        config = parse_method(spec)
        methods.setdefault(method_label(config), config)
    return list(methods.items())


def _split_options(text: str, spec: str) -> tuple[str, list[str]]:
    """``head:a=1:b=2`` or ``head(a=1, b=2)`` -> (head, ["a=1", "b=2"])."""
    if "(" in text:
        head, _, rest = text.partition("(")
        if not rest.endswith(")") or "(" in rest or ")" in rest[:-1] or ":" in head:
            raise MethodSpecError(
                f"bad method {spec!r}: options go in one pair of parentheses at the end, "
                f"NAME(key=value, ...), or after colons; valid forms: {FORMS}"
            )
        body = rest[:-1].strip()
        return head.strip(), [o for o in body.split(",")] if body else []
    head, *options = text.split(":")
    return head.strip(), options


def _value(text: str, sequence: bool = False):
    """A spec option's value: a number, true / false, token ids "1/2/3" (sequences), or text.

    >>> _value("2"), _value("false"), _value("5/6", sequence=True), _value("</think>")
    (2, False, (5, 6), '</think>')
    """
    if sequence and all(part.isdigit() for part in text.split("/")):
        return tuple(int(part) for part in text.split("/"))
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if text.lower() in ("inf", "infinity"):
        return math.inf
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _text(value) -> str:
    """A value as labels write it: whole floats without ``.0``, others exactly (they parse back).

    >>> _text(2.0), _text(0.01), _text(float("inf")), _text("</think>")
    ('2', '0.01', 'inf', '</think>')
    """
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "/".join(str(v) for v in value)
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)
