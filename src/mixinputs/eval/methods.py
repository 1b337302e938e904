"""Decoding methods as data: a short spec string <-> a ``MoIConfig`` (None: standard decoding).

Grammar (one method; the command line takes a comma-separated list)::

    standard
    MODE[+NOISE][@REGION][:key=value]...      options after colons (no shell quoting needed)
    MODE[+NOISE][@REGION](key=value, ...)     the same, as labels print it (quote it in a shell)

    MODE    a mode of the registry (``mixinputs.methods.MODES``)
    NOISE   dirichlet | gumbel
    REGION  all | thinking (the mode's default: its ``Method.regions[0]``)
    key     a MoIConfig field, i.e. a request key without ``mixinputs_``: beta, top_k, prior,
            think_end, and each method's own (``methods.key_table``); ``k`` is the mode's K
            (its ``Method.width_key``, else top_k)

Examples: ``soft``, ``soft+gumbel``, ``moi@thinking``, ``moi:beta=2``,
``soft@thinking:cold_stop_entropy=0.01:cold_stop_steps=256``,
``moi@thinking:think_end=151668`` (a think-end token given by id), ``swir``,
``swir:swir_max_switches=2``, ``selar:selar_threshold=0.7``, ``multiplex:k=3``.

A spec is checked by the server's own rule: its parts become the request keys
(``mixinputs_mode``, ``mixinputs_<key>``, ...) and ``MoIConfig.from_request`` parses them, as the
vLLM front end does for every request. So a key of another method (``moi:selar_threshold=0.7``)
is refused here exactly as the server refuses it with a 400, instead of being dropped from the
request while the label still names it; an unknown key gets a "did you mean".

Every method has one stable label (:func:`method_label`): ``MoIConfig.name`` plus the options that
differ from that name's defaults, e.g. ``moi(beta=2)``, ``moi@thinking(cold_stop_entropy=0.01)``.
A label is itself a spec, so what a report prints can be asked for again.
"""

from __future__ import annotations

import math
from dataclasses import fields

from mixinputs.config import (
    KEY_MODE,
    KEY_REGION,
    MODES,
    REGIONS,
    REQUEST_KEYS,
    MoIConfig,
    MoIConfigError,
    did_you_mean,
)
from mixinputs.methods import KEY_NOISE, NOISES, method, spec_examples
from mixinputs.methods import SEQUENCES as _SEQUENCES  # text, or ids a/b/c

_PREFIX = "mixinputs_"
_IN_THE_NAME = (KEY_MODE, KEY_NOISE, KEY_REGION)  # spelled in the spec's name, not as options
OPTIONS = tuple(k.removeprefix(_PREFIX) for k in REQUEST_KEYS if k not in _IN_THE_NAME)
"""The option keys a spec may set: the server's request keys (``config.REQUEST_KEYS``) without
``mixinputs_``; which of them a method accepts is the server's rule too (``from_request``)."""
FORMS = (
    "standard | MODE[+NOISE][@REGION][:key=value]... with MODE in " + "|".join(MODES) + ", NOISE "
    "in "
    + "|".join(NOISES[1:])
    + ", REGION in "
    + "|".join(REGIONS)
    + ", key in "
    + "|".join(OPTIONS)
    + " (e.g. "
    + ", ".join(spec_examples())
    + ")"
)


class MethodSpecError(ValueError):
    """A method spec that does not parse; the message names the bad part and the valid forms."""


def parse_method(spec: str) -> MoIConfig | None:
    """The config a method spec names; None for ``standard``.

    >>> parse_method("moi+gumbel@thinking:think_end=7").name
    'moi+gumbel@thinking'
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
    for part, value, allowed in (
        ("mode", mode, MODES),
        ("noise", noise, NOISES[1:]),
        ("region", region, REGIONS),
    ):
        if (value and value not in allowed) or (part == "mode" and not value):
            raise MethodSpecError(
                f"bad method {spec!r}: unknown {part} {value!r}{did_you_mean(value, allowed)} "
                f"(one of {', '.join(allowed)}); valid forms: {FORMS}"
            )
    request: dict = {KEY_MODE: mode}
    if noise:
        request[KEY_NOISE] = noise
    if region:
        request[KEY_REGION] = region
    explicit: set[str] = set()
    for option in options:
        key, eq, value = (part.strip() for part in option.partition("="))
        if key == "k":  # the mode's K: its width setting where it has one, else top-k
            key = (method(mode).width_key if mode in MODES else None) or "top_k"
        if _PREFIX + key in _IN_THE_NAME:
            raise MethodSpecError(
                f"bad method {spec!r}: option {option!r}: the {key} goes in the name "
                f"(e.g. soft+gumbel@thinking); valid forms: {FORMS}"
            )
        if not eq or key not in OPTIONS or not value:
            hint = did_you_mean(key, (*OPTIONS, "k")) if key not in OPTIONS else ""
            raise MethodSpecError(
                f"bad method {spec!r}: bad option {option!r}{hint}, want key=value; "
                f"valid forms: {FORMS}"
            )
        if key in explicit:
            raise MethodSpecError(f"bad method {spec!r}: option {key!r} given twice")
        explicit.add(key)
        request[_PREFIX + key] = _value(value, sequence=key in _SEQUENCES)
    try:
        # The server's rule (vLLM front end: request_validation), with no MIXINPUTS_BETA default.
        config = MoIConfig.from_request(request, default=None)
    except MoIConfigError as e:
        raise MethodSpecError(f"bad method {spec!r}: {e}") from None
    assert config is not None  # the mode is one of MODES, never "off"
    _check_nothing_dropped(spec, config)
    return config, frozenset(explicit)


def _check_nothing_dropped(spec: str, config: MoIConfig) -> None:
    """The request a config sends (``to_request``) must ask for that same config: a setting it
    would not send is refused rather than silently dropped from every sample."""
    sent = MoIConfig.from_request(config.to_request(), default=None)
    if sent != config:
        lost = [
            f.name for f in fields(MoIConfig) if getattr(sent, f.name) != getattr(config, f.name)
        ]
        raise MethodSpecError(
            f"bad method {spec!r}: its request would not carry {', '.join(lost)}; "
            f"valid forms: {FORMS}"
        )


def method_label(config: MoIConfig | None, beta: bool = True) -> str:
    """The stable label of a method: ``MoIConfig.name`` plus its non-default options.

    ``beta=False`` leaves beta out (eval records keep MoI's beta in a field of its own).

    >>> method_label(MoIConfig(beta=2)), method_label(None), method_label(MoIConfig(mode="soft"))
    ('moi(beta=2)', 'standard', 'soft')
    >>> method_label(parse_method("moi@thinking:cold_stop_entropy=0.01:cold_stop_steps=256"))
    'moi@thinking(cold_stop_entropy=0.01)'
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
