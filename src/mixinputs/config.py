"""What one request asks of MoI, and how it is parsed from the environment and request fields.

Both engines share this: the vLLM plugin (``SamplingParams.extra_args`` / the server's
``vllm_xargs``) and the transformers path. Nothing here imports torch.

Request keys (all optional; any ``mixinputs_*`` key not listed is an error, to catch typos):

================================= ============================= ==================================
key                               values                        meaning
================================= ============================= ==================================
``mixinputs_beta``                number >= 0, or ``"inf"``     turns MoI on with this beta
``mixinputs_mode``                ``"moi"``, ``"direct"``,      what is fed: MoI's posterior mean,
                                  ``"soft"``, ``"off"``         ``Σ p_i E[i]``, Soft Thinking's
                                                                concept token; ``"off"`` opts out
``mixinputs_top_k``               int >= 1                      K of the prior (20; soft: 10)
``mixinputs_prior``               ``"raw"``, ``"sampling"``     temperature-1 logits, or the
                                                                distribution the token was drawn
                                                                from (soft always uses the latter)
``mixinputs_region``              ``"all"``, ``"thinking"``     mix every output token, or only
                                                                until the think-end token
``mixinputs_think_end``           token text or id              the think-end token (``</think>``)
``mixinputs_cold_stop_entropy``   number > 0 (nats)             Cold Stop: entropy threshold τ
``mixinputs_cold_stop_steps``     int >= 1                      Cold Stop: L low-entropy steps (256)
``mixinputs_noise``               ``"none"``, ``"dirichlet"``,  randomized weights (moi, soft)
                                  ``"gumbel"``
``mixinputs_noise_temperature``   number > 0                    their τ (dirichlet 1.0, gumbel 0.5)
================================= ============================= ==================================

A request that sets any of these without ``mixinputs_beta`` takes beta from ``MIXINPUTS_BETA``,
else 1.0 (the original release's default).

Where the methods come from: MoI and direct mixture (Zhuang et al. 2025, arXiv 2505.14827), Soft
Thinking with Cold Stop (Zhang et al. 2025, arXiv 2505.15778), Dirichlet and Gumbel-softmax noise
(Wu et al. 2025, arXiv 2508.03440).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

ENV_BETA = "MIXINPUTS_BETA"
DIRECT_MIXTURE_BETA = -100.0
"""The original release's sentinel: ``MIXINPUTS_BETA=-100`` means direct mixture."""
DEFAULT_BETA = 1.0
DEFAULT_TOP_K = 20
SOFT_TOP_K = 10
"""Soft Thinking's release mixes its concept token over the top 10 tokens (``--max_topk 10``)."""
DEFAULT_THINK_END = "</think>"
DEFAULT_COLD_STOP_STEPS = 256
"""Soft Thinking's release default for ``--early_stopping_length_threshold``."""
DEFAULT_NOISE_TEMPERATURE = {"dirichlet": 1.0, "gumbel": 0.5}
"""Soft Thinking's release: ``--dirichlet_alpha 1.0``, ``--gumbel_softmax_temperature 0.5``."""

MODES = ("moi", "direct", "soft")
REGIONS = ("all", "thinking")
NOISES = ("none", "dirichlet", "gumbel")
STANDARD_REQUEST = {"mixinputs_mode": "off"}
"""Request fields for standard decoding, even when ``MIXINPUTS_BETA`` makes MoI the default."""
PRIORS = ("raw", "sampling")
KEY_BETA = "mixinputs_beta"
KEY_MODE = "mixinputs_mode"
KEY_TOP_K = "mixinputs_top_k"
KEY_PRIOR = "mixinputs_prior"
KEY_REGION = "mixinputs_region"
KEY_THINK_END = "mixinputs_think_end"
KEY_COLD_STOP_ENTROPY = "mixinputs_cold_stop_entropy"
KEY_COLD_STOP_STEPS = "mixinputs_cold_stop_steps"
KEY_NOISE = "mixinputs_noise"
KEY_NOISE_TEMPERATURE = "mixinputs_noise_temperature"
REQUEST_KEYS = (
    KEY_BETA,
    KEY_MODE,
    KEY_TOP_K,
    KEY_PRIOR,
    KEY_REGION,
    KEY_THINK_END,
    KEY_COLD_STOP_ENTROPY,
    KEY_COLD_STOP_STEPS,
    KEY_NOISE,
    KEY_NOISE_TEMPERATURE,
)


class _ModeTopK:
    def __repr__(self) -> str:
        return "<the mode's K>"


_MODE_TOP_K: Any = _ModeTopK()  # MoIConfig.top_k's default: the mode's own K (20, soft 10)


class MoIConfigError(ValueError):
    """A bad MoI setting; the message names the key or variable and what to write instead."""


@dataclass(frozen=True)
class MoIConfig:
    """How one request mixes its inputs.

    >>> MoIConfig(beta=2.0).top_k, MoIConfig(mode="soft").top_k, MoIConfig(mode="soft").prior
    (20, 10, 'sampling')
    >>> MoIConfig(beta=-1)
    Traceback (most recent call last):
    ...
    mixinputs.config.MoIConfigError: beta must be >= 0 (or inf), got -1.0; ...
    """

    beta: float = DEFAULT_BETA
    mode: str = "moi"
    top_k: int | None = _MODE_TOP_K
    prior: str = "raw"
    region: str = "all"
    think_end: str | int = DEFAULT_THINK_END  # token text, or its id once resolved
    cold_stop_entropy: float | None = None  # nats; None: no Cold Stop
    cold_stop_steps: int = DEFAULT_COLD_STOP_STEPS
    noise: str = "none"
    noise_temperature: float | None = None  # None: the noise's default

    def __post_init__(self) -> None:
        object.__setattr__(self, "beta", parse_beta(self.beta, "beta"))
        if self.mode not in MODES:
            raise MoIConfigError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.top_k is _MODE_TOP_K:
            object.__setattr__(self, "top_k", SOFT_TOP_K if self.mode == "soft" else DEFAULT_TOP_K)
        object.__setattr__(self, "top_k", parse_top_k(self.top_k, "top_k"))
        if self.prior not in PRIORS:
            raise MoIConfigError(f"prior must be one of {PRIORS}, got {self.prior!r}")
        if self.mode == "soft":  # the concept token is over p~, the distribution sampled from
            object.__setattr__(self, "prior", "sampling")
        if self.region not in REGIONS:
            raise MoIConfigError(f"{KEY_REGION} must be one of {REGIONS}, got {self.region!r}")
        object.__setattr__(self, "think_end", parse_think_end(self.think_end))
        if self.cold_stop_entropy is not None:
            tau = _positive(self.cold_stop_entropy, KEY_COLD_STOP_ENTROPY)
            object.__setattr__(self, "cold_stop_entropy", tau)
            if self.region != "thinking":
                raise MoIConfigError(
                    f"{KEY_COLD_STOP_ENTROPY} ends the thinking region: it needs "
                    f"{KEY_REGION}='thinking'"
                )
        steps = self.cold_stop_steps
        if isinstance(steps, float) and steps.is_integer():
            steps = int(steps)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise MoIConfigError(f"{KEY_COLD_STOP_STEPS} must be an int >= 1, got {steps!r}")
        object.__setattr__(self, "cold_stop_steps", steps)
        if self.noise not in NOISES:
            raise MoIConfigError(f"{KEY_NOISE} must be one of {NOISES}, got {self.noise!r}")
        if self.noise != "none" and self.mode == "direct":
            raise MoIConfigError(
                f"{KEY_NOISE} applies to mode 'moi' or 'soft', not 'direct' (direct mixture "
                "with Dirichlet/Gumbel noise is mode 'soft' with prior over p~)"
            )
        if self.noise_temperature is not None:
            if self.noise == "none":
                raise MoIConfigError(
                    f"{KEY_NOISE_TEMPERATURE} needs {KEY_NOISE}='dirichlet' or 'gumbel'"
                )
            tau = _positive(self.noise_temperature, KEY_NOISE_TEMPERATURE)
            object.__setattr__(self, "noise_temperature", tau)
        elif self.noise != "none":
            object.__setattr__(self, "noise_temperature", DEFAULT_NOISE_TEMPERATURE[self.noise])

    @property
    def direct(self) -> bool:
        """The fed weights are the distribution itself (direct mixture, soft thinking)."""
        return self.mode in ("direct", "soft")

    @property
    def soft(self) -> bool:
        return self.mode == "soft"

    @property
    def needs_method_step(self) -> bool:
        """Soft thinking, a thinking region or noise: the step runs ``mixing.apply_methods``."""
        return self.soft or self.region != "all" or self.noise != "none"

    @property
    def needs_think_end(self) -> bool:
        return self.region == "thinking"

    @property
    def name(self) -> str:
        """A short label: mode, noise and region (``"soft+gumbel@thinking"``).

        >>> MoIConfig(mode="soft", noise="gumbel", region="thinking").name
        'soft+gumbel@thinking'
        """
        label = self.mode + ("" if self.noise == "none" else f"+{self.noise}")
        return label + ("" if self.region == "all" else f"@{self.region}")

    def to_request(self) -> dict[str, Any]:
        """The request fields (``extra_args`` / ``vllm_xargs``) that ask for this config.

        >>> MoIConfig(beta=float("inf"), top_k=5).to_request()["mixinputs_beta"]
        'inf'
        """
        fields: dict[str, Any] = {
            KEY_BETA: "inf" if math.isinf(self.beta) else self.beta,
            KEY_MODE: self.mode,
        }
        if self.mode != "soft":
            fields[KEY_PRIOR] = self.prior
        fields[KEY_TOP_K] = self.top_k  # None (the whole vocabulary) is refused by engines
        if self.region != "all":
            fields[KEY_REGION] = self.region
        if self.needs_think_end:
            fields[KEY_THINK_END] = self.think_end
        if self.cold_stop_entropy is not None:
            fields[KEY_COLD_STOP_ENTROPY] = self.cold_stop_entropy
            fields[KEY_COLD_STOP_STEPS] = self.cold_stop_steps
        if self.noise != "none":
            fields[KEY_NOISE] = self.noise
            fields[KEY_NOISE_TEMPERATURE] = self.noise_temperature
        return fields

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
            return cls(beta=DEFAULT_BETA, mode="direct")
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
        mode = fields.get(KEY_MODE, default.mode if default else "moi")
        if mode == "off":
            return None
        if mode not in MODES:
            raise MoIConfigError(
                f"{KEY_MODE} must be 'moi', 'direct', 'soft' or 'off', got {mode!r}"
            )
        base = default or cls()
        prior = fields.get(KEY_PRIOR, base.prior)
        if prior not in PRIORS:
            raise MoIConfigError(f"{KEY_PRIOR} must be one of {PRIORS}, got {prior!r}")
        if mode == "soft" and fields.get(KEY_PRIOR, "sampling") != "sampling":
            raise MoIConfigError(
                f"mode 'soft' mixes over the distribution the token is sampled from; drop "
                f"{KEY_PRIOR} (or set it to 'sampling')"
            )
        # A mode's own K unless the request names one (the default config's K came from its mode).
        top_k = fields.get(KEY_TOP_K, base.top_k if mode == base.mode else _MODE_TOP_K)
        if top_k is not _MODE_TOP_K:
            top_k = parse_top_k(top_k)
        noise = fields.get(KEY_NOISE, "none")
        if KEY_THINK_END in fields and fields.get(KEY_REGION, base.region) != "thinking":
            raise MoIConfigError(
                f"{KEY_THINK_END} marks where the thinking region ends: it needs "
                f"{KEY_REGION}='thinking'"
            )
        try:
            return replace(
                base,
                beta=parse_beta(fields.get(KEY_BETA, base.beta), KEY_BETA),
                mode=mode,
                top_k=top_k,
                prior=prior,
                region=fields.get(KEY_REGION, base.region),
                think_end=fields.get(KEY_THINK_END, base.think_end),
                cold_stop_entropy=fields.get(KEY_COLD_STOP_ENTROPY, base.cold_stop_entropy),
                cold_stop_steps=_cold_stop_steps(fields, base),
                noise=noise,
                noise_temperature=fields.get(KEY_NOISE_TEMPERATURE),
            )
        except MoIConfigError as e:
            raise MoIConfigError(_with_key_names(str(e))) from None


def _cold_stop_steps(fields: Mapping[str, Any], base: MoIConfig) -> Any:
    explicit_steps = KEY_COLD_STOP_STEPS in fields and KEY_COLD_STOP_ENTROPY not in fields
    if explicit_steps and base.cold_stop_entropy is None:
        raise MoIConfigError(
            f"{KEY_COLD_STOP_STEPS} needs {KEY_COLD_STOP_ENTROPY} (the entropy threshold)"
        )
    return fields.get(KEY_COLD_STOP_STEPS, base.cold_stop_steps)


def _with_key_names(message: str) -> str:
    """Errors raised by the dataclass name its fields; requests name keys."""
    for name in ("beta", "mode", "top_k", "prior"):
        if message.startswith(f"{name} "):
            return f"mixinputs_{message}"
    return message


def _positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MoIConfigError(f"{name} must be a number > 0, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise MoIConfigError(f"{name} must be a finite number > 0, got {value!r}")
    return number


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


def parse_beta(value: Any, name: str = "beta") -> float:
    """``value`` as a valid MoI beta (a number >= 0, ``inf`` or ``"inf"``), else a clear error.

    >>> parse_beta(2), parse_beta("inf")
    (2.0, inf)
    """
    if isinstance(value, str) and value.strip().lower() in ("inf", "infinity", "+inf"):
        return math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MoIConfigError(f"{name} must be a number >= 0 or 'inf', got {value!r}")
    beta = float(value)
    if math.isnan(beta) or beta < 0:
        mode_name = "mode" if name == "beta" else KEY_MODE
        hint = f"; for direct mixture use {mode_name}='direct'"
        raise MoIConfigError(f"{name} must be >= 0 (or inf), got {beta}{hint}")
    return beta


def parse_top_k(value: Any, name: str = KEY_TOP_K) -> int | None:
    """``value`` as a valid K (an int >= 1), or None for the whole vocabulary.

    >>> parse_top_k(20.0), parse_top_k(None)
    (20, None)
    """
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MoIConfigError(
            f"{name} must be an int >= 1 (or None: whole vocabulary), got {value!r}"
        )
    return value
