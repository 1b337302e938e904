"""What one request asks of MoI, and how it is parsed from the environment and request fields.

Both engines share this: the vLLM plugin (``SamplingParams.extra_args`` / the server's
``vllm_xargs``) and the transformers path. Nothing here imports torch.

Request keys (all optional; any ``mixinputs_*`` key not listed is an error, to catch typos):

==================== ===================================== =====================================
key                  values                                meaning
==================== ===================================== =====================================
``mixinputs_beta``   number >= 0, or ``"inf"``             turns MoI on with this beta
``mixinputs_mode``   ``"moi"``, ``"direct"``, ``"off"``    mixture kind; ``"off"`` opts out
``mixinputs_top_k``  int >= 1                              K of the prior (default 20)
``mixinputs_prior``  ``"raw"``, ``"sampling"``             temperature-1 logits, or the
                                                           distribution the token was drawn from
==================== ===================================== =====================================

A request that sets any of these without ``mixinputs_beta`` takes beta from ``MIXINPUTS_BETA``,
else 1.0 (the original release's default).
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

MODES = ("moi", "direct")
STANDARD_REQUEST = {"mixinputs_mode": "off"}
"""Request fields for standard decoding, even when ``MIXINPUTS_BETA`` makes MoI the default."""
PRIORS = ("raw", "sampling")
KEY_BETA = "mixinputs_beta"
KEY_MODE = "mixinputs_mode"
KEY_TOP_K = "mixinputs_top_k"
KEY_PRIOR = "mixinputs_prior"
REQUEST_KEYS = (KEY_BETA, KEY_MODE, KEY_TOP_K, KEY_PRIOR)


class MoIConfigError(ValueError):
    """A bad MoI setting; the message names the key or variable and what to write instead."""


@dataclass(frozen=True)
class MoIConfig:
    """How one request mixes its inputs.

    >>> MoIConfig(beta=2.0)
    MoIConfig(beta=2.0, mode='moi', top_k=20, prior='raw')
    >>> MoIConfig(beta=-1)
    Traceback (most recent call last):
    ...
    mixinputs.config.MoIConfigError: beta must be >= 0 (or inf), got -1.0; ...
    """

    beta: float = DEFAULT_BETA
    mode: str = "moi"
    top_k: int | None = DEFAULT_TOP_K
    prior: str = "raw"

    def __post_init__(self) -> None:
        object.__setattr__(self, "beta", parse_beta(self.beta, "beta"))
        if self.mode not in MODES:
            raise MoIConfigError(f"mode must be one of {MODES}, got {self.mode!r}")
        object.__setattr__(self, "top_k", parse_top_k(self.top_k, "top_k"))
        if self.prior not in PRIORS:
            raise MoIConfigError(f"prior must be one of {PRIORS}, got {self.prior!r}")

    @property
    def direct(self) -> bool:
        return self.mode == "direct"

    def to_request(self) -> dict[str, Any]:
        """The request fields (``extra_args`` / ``vllm_xargs``) that ask for this config.

        >>> MoIConfig(beta=float("inf"), top_k=5).to_request()["mixinputs_beta"]
        'inf'
        """
        fields: dict[str, Any] = {
            KEY_BETA: "inf" if math.isinf(self.beta) else self.beta,
            KEY_MODE: self.mode,
            KEY_PRIOR: self.prior,
        }
        if self.top_k is not None:
            fields[KEY_TOP_K] = self.top_k
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
            raise MoIConfigError(f"{KEY_MODE} must be 'moi', 'direct' or 'off', got {mode!r}")
        base = default or cls()
        prior = fields.get(KEY_PRIOR, base.prior)
        if prior not in PRIORS:
            raise MoIConfigError(f"{KEY_PRIOR} must be one of {PRIORS}, got {prior!r}")
        return replace(
            base,
            beta=parse_beta(fields.get(KEY_BETA, base.beta), KEY_BETA),
            mode=mode,
            top_k=parse_top_k(fields.get(KEY_TOP_K, base.top_k)),
            prior=prior,
        )


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
