"""What one request asks of MoI, and how it is parsed from the environment and request fields.

Both engines share this: the vLLM plugin (``SamplingParams.extra_args`` / the server's
``vllm_xargs``) and the transformers path, and so does ``--method``: ``MoIConfig`` holds the one
rule set for mode, prior, region and K, and each method's own checks (``mixinputs.methods``), so
every path accepts and refuses the same settings. Nothing here imports torch.

Request keys (all optional; any ``mixinputs_*`` key not listed is an error, to catch typos):
``mixinputs_beta`` (a number >= 0, or ``"inf"``), ``mixinputs_mode`` (a registry mode, or
``"off"`` to opt out), ``mixinputs_top_k``, ``mixinputs_prior`` (``"raw"``: temperature-1 logits,
``"sampling"``: the distribution the token was drawn from), ``mixinputs_region`` (``"all"``, or
``"thinking"``: mix until the think-end token), ``mixinputs_think_end``, and each method's own
keys (``methods.METHOD_KEYS``, ``methods.GENERAL_KEYS``; the table is generated into the docs by
``methods.key_table``). A key of another mode is an error.

A request that sets any of these without ``mixinputs_beta`` takes beta from ``MIXINPUTS_BETA``,
else 1.0 (the original release's default).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from mixinputs.methods import GENERAL_KEYS, METHOD_KEYS, MethodFields, everything, method
from mixinputs.methods import MODES as _MODES
from mixinputs.methods.base import (
    DEFAULT_BETA,
    DEFAULT_THINK_END,
    DEFAULT_TOP_K,
    MAX_QUEUE,
    MODE_PRIOR,
    MODE_REGION,
    MODE_TOP_K,
    PRIORS,
    REGIONS,
    MoIConfigError,
    count,
    parse_beta,
    parse_token,
    parse_tokens,
    parse_top_k,
)

__all__ = [
    "DEFAULT_BETA",
    "DEFAULT_MODE",
    "DEFAULT_THINK_END",
    "DEFAULT_TOP_K",
    "DIRECT_MIXTURE_BETA",
    "DIRECT_MODE",
    "ENV_BETA",
    "KEY_RESOLVED",
    "MAX_QUEUE",
    "METHOD_KEYS",
    "MODES",
    "PRIORS",
    "REGIONS",
    "REQUEST_KEYS",
    "STANDARD_REQUEST",
    "MoIConfig",
    "MoIConfigError",
    "did_you_mean",
    "parse_beta",
    "parse_think_end",
    "parse_token",
    "parse_tokens",
    "parse_top_k",
]

ENV_BETA = "MIXINPUTS_BETA"
DIRECT_MIXTURE_BETA = -100.0
"""The original release's sentinel: ``MIXINPUTS_BETA=-100`` means direct mixture."""
MODES = tuple(m.name for m in _MODES)
DEFAULT_MODE = MODES[0]
"""Mixture of Inputs: what ``MIXINPUTS_BETA`` and a request with only ``mixinputs_beta`` ask
for."""
DIRECT_MODE = "direct"
"""Direct mixture: what ``MIXINPUTS_BETA=-100`` asks for (the original release's contract)."""
STANDARD_REQUEST = {"mixinputs_mode": "off"}
"""Request fields for standard decoding, even when ``MIXINPUTS_BETA`` makes MoI the default."""
KEY_BETA = "mixinputs_beta"
KEY_MODE = "mixinputs_mode"
KEY_TOP_K = "mixinputs_top_k"
KEY_PRIOR = "mixinputs_prior"
KEY_REGION = "mixinputs_region"
KEY_THINK_END = "mixinputs_think_end"
KEY_RESOLVED = "mixinputs_resolved"
"""Where the front end writes a request's resolved config (``MoIConfig.to_resolved``) into the
engine's own copy of its sampling params; engine core and workers read only this. Not a request
key: a request that sends it is refused like any unknown ``mixinputs_*`` key."""
REQUEST_KEYS = (
    KEY_BETA,
    KEY_MODE,
    KEY_TOP_K,
    KEY_PRIOR,
    KEY_REGION,
    KEY_THINK_END,
    *GENERAL_KEYS,
    *METHOD_KEYS,
)
_OWN_FIELDS = tuple(field for field, _ in METHOD_KEYS.values())
_DERIVED = {name: m for m in everything() for name in m.derived}


@dataclass(frozen=True)
class MoIConfig(MethodFields):
    """How one request mixes its inputs: the common settings, then every method's own
    (``mixinputs.methods.MethodFields``); a mode-dependent default is the mode's.

    >>> MoIConfig(beta=2.0).top_k, MoIConfig(mode="soft").top_k, MoIConfig(mode="soft").prior
    (20, 10, 'sampling')
    >>> MoIConfig(mode="soft").region, MoIConfig(mode="soft", noise="dirichlet").noise_temperature
    ('thinking', 0.25)
    >>> MoIConfig(mode="selar", prior="raw")
    Traceback (most recent call last):
    ...
    mixinputs.methods.base.MoIConfigError: mode 'selar' mixes over the distribution the token ...
    >>> MoIConfig(beta=-1)
    Traceback (most recent call last):
    ...
    mixinputs.methods.base.MoIConfigError: beta must be >= 0 (or inf), got -1.0; ...
    """

    def __post_init__(self) -> None:
        set_field = _field_setter(self)
        set_field("beta", parse_beta(self.beta, "beta"))
        if self.mode not in MODES:
            raise MoIConfigError(f"mode must be one of {MODES}, got {self.mode!r}")
        mode = method(self.mode)
        # The one rule set for K, prior and region: the mode's default, or a value it takes.
        if self.top_k is MODE_TOP_K:  # it may depend on the noise (soft: 10, noisy 15)
            set_field("top_k", mode.default_top_k(self))
        set_field("top_k", parse_top_k(self.top_k, "top_k"))
        if self.prior is MODE_PRIOR:
            set_field("prior", mode.priors[0])
        if self.prior not in PRIORS:
            raise MoIConfigError(f"prior must be one of {PRIORS}, got {self.prior!r}")
        if self.prior not in mode.priors:
            reads = {
                "sampling": "mixes over the distribution the token is sampled from; drop "
                f"{KEY_PRIOR} (or set it to 'sampling')",
                "raw": f"reads the raw (temperature-1) distribution: drop {KEY_PRIOR}",
            }
            raise MoIConfigError(f"mode {self.mode!r} {reads[mode.priors[0]]}")
        if self.region is MODE_REGION:
            set_field("region", mode.regions[0])
        if self.region not in REGIONS:
            raise MoIConfigError(f"{KEY_REGION} must be one of {REGIONS}, got {self.region!r}")
        if self.region not in mode.regions:
            raise MoIConfigError(
                f"mode {self.mode!r} runs over the whole generation ({self.mode} has its own "
                f"rule for the think-end token): drop {KEY_REGION}"
            )
        set_field("think_end", parse_think_end(self.think_end))
        # Each method's own fields (and the options': Cold Stop, noise, the math tokens).
        for m in everything():
            m.check(self, set_field, mode)
        if self.eos is not None:
            set_field("eos", count(self.eos, "eos", minimum=0))

    # -- what the config needs (each method answers for its own) ------------------------------
    def __getattr__(self, name: str) -> Any:
        # A method's own derived settings (``Method.derived``: ``soft``, ``stop_measure``, ...).
        owner = _DERIVED.get(name)
        if owner is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(owner, name)(self)

    @property
    def method(self):
        """The mode's ``Method`` (``mixinputs.methods``)."""
        return method(self.mode)

    @property
    def direct(self) -> bool:
        """The fed weights are the distribution itself (direct mixture, soft thinking)."""
        return method(self.mode).direct

    @property
    def needs_method_step(self) -> bool:
        """A method beyond MoI's and direct mixture's weights runs: the step runs
        ``apply_methods``."""
        return any(m.needs_step(self) for m in everything())

    @property
    def draws_random(self) -> bool:
        """Its inputs depend on random draws (noise, Multiplex's K samples): keyed by the seed."""
        return any(m.draws_random(self) for m in everything())

    @property
    def needs_eos(self) -> bool:
        """It emits EOS itself: Cold Stop's after-thinking end, SwiReasoning's answer budget."""
        return any(m.needs_eos(self) for m in everything())

    @property
    def carries_state(self) -> bool:
        """Its steps depend on earlier ones (still thinking, Cold Stop's low-entropy streak,
        SwiReasoning's mode and reference entropy): a request resumed after a preemption must go
        on from the state it had."""
        return any(m.carries_state(self) for m in everything())

    @property
    def chooses(self) -> bool:
        """A method chooses what a row emits from its weights and state (before y is known)."""
        return any(m.chooses(self) for m in everything())

    @property
    def needs_think_end(self) -> bool:
        return "think_end" in self.tokens_to_resolve

    @property
    def tokens_to_resolve(self) -> dict[str, str | int | tuple[int, ...] | None]:
        """The fields a front end turns from text into token ids with its tokenizer (None: the
        method's own default for this model, e.g. SwiReasoning's convergence words)."""
        fields: dict[str, Any] = {}
        if self.region == "thinking":
            fields["think_end"] = self.think_end
        for m in everything():
            fields.update(m.tokens(self))
        return fields

    @property
    def name(self) -> str:
        """A short label: mode, noise and region (``"soft+gumbel@thinking"``).

        >>> MoIConfig(mode="soft", noise="gumbel", region="all").name
        'soft+gumbel@all'
        """
        label = self.mode + "".join(m.label(self) for m in everything())
        default_region = method(self.mode).regions[0]
        return label + ("" if self.region == default_region else f"@{self.region}")

    def to_request(self) -> dict[str, Any]:
        """The request fields (``extra_args`` / ``vllm_xargs``) that ask for this config.

        >>> MoIConfig(beta=float("inf"), top_k=5).to_request()["mixinputs_beta"]
        'inf'
        """
        mode = method(self.mode)
        fields: dict[str, Any] = {
            KEY_BETA: "inf" if math.isinf(self.beta) else self.beta,
            KEY_MODE: self.mode,
        }
        if len(mode.priors) > 1:
            fields[KEY_PRIOR] = self.prior
        fields[KEY_TOP_K] = self.top_k  # None (the whole vocabulary) is refused by engines
        if self.region != "all" or mode.regions[0] != "all":
            fields[KEY_REGION] = self.region
        if self.needs_think_end:
            fields[KEY_THINK_END] = self.think_end
        for m in everything():
            fields.update(m.to_request(self))
        # The method's own keys, where they differ from the defaults (None: the preset's own).
        for key, (name, modes) in METHOD_KEYS.items():
            value = getattr(self, name)
            if self.mode in modes and value != getattr(MoIConfig, name):
                fields[key] = list(value) if isinstance(value, tuple) else value
        return fields

    def to_resolved(self) -> dict[str, Any]:
        """Every field, as the front end hands a validated config to the engine
        (``KEY_RESOLVED``); ``from_resolved`` reads it back.

        >>> c = MoIConfig(region="thinking", think_end=7)
        >>> MoIConfig.from_resolved(c.to_resolved()) == c
        True
        """
        return asdict(self)

    @classmethod
    def from_resolved(cls, fields: Mapping[str, Any]) -> MoIConfig:
        """The config ``to_resolved`` wrote (a ``MoIConfigError`` if it is not one)."""
        if not isinstance(fields, Mapping):
            raise MoIConfigError(f"{KEY_RESOLVED} must be a mapping, got {type(fields).__name__}")
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
        try:
            return cls(**fields)
        except TypeError as e:
            raise MoIConfigError(f"{KEY_RESOLVED}: {e}") from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MoIConfig | None:
        """The default config ``MIXINPUTS_BETA`` asks for, or None when it is unset or empty.

        >>> MoIConfig.from_env({"MIXINPUTS_BETA": "-100"}).mode
        'direct'
        """
        env = os.environ if environ is None else environ
        raw = env.get(ENV_BETA, "").strip()
        if not raw:
            return None
        try:
            value = float(raw)
        except ValueError:
            raise MoIConfigError(
                f"{ENV_BETA}={raw!r} is not a number: set it to a beta >= 0 (e.g. 1.0), "
                f"to {DIRECT_MIXTURE_BETA:g} for direct mixture, or unset it to turn MoI off"
            ) from None
        if value == DIRECT_MIXTURE_BETA:
            return cls(beta=DEFAULT_BETA, mode=DIRECT_MODE)
        if math.isnan(value) or value < 0:
            raise MoIConfigError(
                f"{ENV_BETA}={raw!r} is out of range: use a beta >= 0 (e.g. 1.0), "
                f"{DIRECT_MIXTURE_BETA:g} for direct mixture, or unset it to turn MoI off"
            )
        return cls(beta=value)

    @classmethod
    def from_request(
        cls, extra_args: Mapping[str, Any] | None, default: MoIConfig | None = None
    ) -> MoIConfig | None:
        """The config a request asks for (``extra_args``), falling back to ``default``.

        Returns None when the request uses standard decoding.

        >>> MoIConfig.from_request({"mixinputs_beta": 0.5}).beta
        0.5
        >>> MoIConfig.from_request({"mixinputs_mode": "off"}, default=MoIConfig()) is None
        True
        >>> MoIConfig.from_request({"mixinputs_mode": "soft"}).top_k
        10
        """
        fields = {k: v for k, v in (extra_args or {}).items() if k.startswith("mixinputs_")}
        unknown = sorted(set(fields) - set(REQUEST_KEYS))
        if unknown:
            raise MoIConfigError(
                f"unknown request key(s) {unknown}; known keys are {list(REQUEST_KEYS)}"
            )
        if not fields:
            return default
        mode = fields.get(KEY_MODE, default.mode if default else DEFAULT_MODE)
        if mode == "off":
            return None
        if mode not in MODES:
            raise MoIConfigError(f"{KEY_MODE} must be one of {[*MODES, 'off']}, got {mode!r}")
        own = {}
        for key, (field_name, modes) in METHOD_KEYS.items():
            if key in fields:
                if mode not in modes:
                    raise MoIConfigError(
                        f"{key} belongs to mode {' or '.join(map(repr, modes))}, and this "
                        f"request's mode is {mode!r}"
                    )
                own[field_name] = fields[key]
        base = default or cls()
        # The mode's prior unless the request names one (MoIConfig refuses a wrong one).
        prior = fields.get(KEY_PRIOR, base.prior if mode == base.mode else MODE_PRIOR)
        if prior is not MODE_PRIOR and prior not in PRIORS:
            raise MoIConfigError(f"{KEY_PRIOR} must be one of {PRIORS}, got {prior!r}")
        shared = {}
        for m in everything():
            shared.update(m.from_request(fields, base, mode))
        # A mode's own K unless the request names one (the default config's K came from its mode
        # and noise).
        same_preset = (mode, shared.get("noise", "none")) == (base.mode, base.noise)
        top_k = fields.get(KEY_TOP_K, base.top_k if same_preset else MODE_TOP_K)
        if top_k is not MODE_TOP_K:
            top_k = parse_top_k(top_k)
        region = fields.get(KEY_REGION, base.region if mode == base.mode else MODE_REGION)
        thinking = region == "thinking" or (
            region is MODE_REGION and method(mode).regions[0] == "thinking"
        )
        if KEY_THINK_END in fields and not thinking and "think_end" not in _mode_tokens(mode):
            raise MoIConfigError(
                f"{KEY_THINK_END} marks where the thinking region ends: it needs "
                f"{KEY_REGION}='thinking'"
            )
        if mode != base.mode:  # another mode's own settings do not carry over
            base = replace(base, **{f: getattr(cls, f) for f in _OWN_FIELDS})
        if not same_preset:  # nor a preset's defaults (e.g. where its noise is drawn)
            shared.update(
                {f: getattr(cls, f) for m in everything() for f in m.preset_fields if f not in own}
            )
        try:
            return replace(
                base,
                beta=parse_beta(fields.get(KEY_BETA, base.beta), KEY_BETA),
                mode=mode,
                top_k=top_k,
                prior=prior,
                region=region,
                think_end=fields.get(KEY_THINK_END, base.think_end),
                **{**shared, **own},
            )
        except MoIConfigError as e:
            raise MoIConfigError(_with_key_names(str(e))) from None


def _mode_tokens(mode: str) -> dict[str, Any]:
    """The tokens a mode resolves with its defaults (does it read a think-end token itself?)."""
    return method(mode).tokens(MoIConfig(mode=mode))


def _with_key_names(message: str) -> str:
    """Errors raised by the dataclass name its fields; requests name keys."""
    for name in ("beta", "mode", "top_k", "prior"):
        if message.startswith(f"{name} "):
            return f"mixinputs_{message}"
    return message


def _field_setter(config: MoIConfig):
    def set_field(name: str, value: Any) -> None:
        object.__setattr__(config, name, value)

    return set_field


def parse_think_end(value: Any) -> str | int:
    """The think-end token as its text (resolved by the engine's tokenizer) or its id.

    >>> parse_think_end("</think>"), parse_think_end(151668)
    ('</think>', 151668)
    """
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise MoIConfigError(
            f"{KEY_THINK_END} must be the think-end token's text or id, got {value!r}"
        )
    if isinstance(value, int) and value < 0:
        raise MoIConfigError(f"{KEY_THINK_END} as a token id must be >= 0, got {value}")
    if isinstance(value, str) and not value:
        raise MoIConfigError(f"{KEY_THINK_END} must not be empty (default '{DEFAULT_THINK_END}')")
    return value


def did_you_mean(word: str, choices: Any) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices`` to a mistyped ``word``, else "".

    One rule for every name a user types (request keys, method spec options, tasks).

    >>> did_you_mean("mixinputs_bta", REQUEST_KEYS), did_you_mean("zzz", REQUEST_KEYS)
    (" (did you mean 'mixinputs_beta'?)", '')
    """
    import difflib

    options = [str(c) for c in choices]
    by_lower = {c.lower(): c for c in options}
    close = difflib.get_close_matches(str(word).lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""
