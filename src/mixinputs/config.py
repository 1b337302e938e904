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
``mixinputs_top_k``               int >= 1                      K of the prior (20; soft: 10,
                                                                soft with noise: 15; selar: 3)
``mixinputs_prior``               ``"raw"``, ``"sampling"``     temperature-1 logits, or the
                                                                distribution the token was drawn
                                                                from (soft, selar, multiplex: only
                                                                the latter; swir: only the former)
``mixinputs_region``              ``"all"``, ``"thinking"``     mix every output token, or only
                                                                until the think-end token (soft,
                                                                multiplex: ``"thinking"``)
``mixinputs_think_end``           token text or id              the think-end token (``</think>``)
``mixinputs_cold_stop_entropy``   number > 0                    Cold Stop: entropy threshold τ
``mixinputs_cold_stop_steps``     int >= 1                      Cold Stop: L low-entropy steps (256)
``mixinputs_cold_stop_measure``   ``"vocab"``,                  the entropy Cold Stop tests (see
                                  ``"vocab_normalized"``,       ``COLD_STOP_MEASURES``)
                                  ``"candidates"``
``mixinputs_cold_stop_abort``     true / false                  after thinking, L low-entropy steps
                                                                end the request (release: true
                                                                without noise, false with)
``mixinputs_noise``               ``"none"``, ``"dirichlet"``,  randomized weights (moi, soft)
                                  ``"gumbel"``
``mixinputs_noise_temperature``   number > 0                    their τ; Dirichlet's α = 1/τ (soft:
                                                                dirichlet 0.25 = α 4, gumbel 0.5;
                                                                moi: 1.0, 0.5)
``mixinputs_dirichlet_support``   ``"kept"``, ``"top_k"``       soft's Dirichlet: over every token
                                                                the sampler keeps, then the top-K
                                                                (release), or over the top-K
================================= ============================= ==================================

Each method's own keys (``METHOD_KEYS``; a key for another mode is an error) are listed in
``docs/soft-input-methods.md``: Soft Thinking's emitted token (``"soft"``), SwiReasoning
(``"swir"``), SeLaR (``"selar"``) and Multiplex Thinking (``"multiplex"``), with the authors'
released defaults (each cited there, file and line).

A request that sets any of these without ``mixinputs_beta`` takes beta from ``MIXINPUTS_BETA``,
else 1.0 (the original release's default).

Where the methods come from: MoI and direct mixture (Zhuang et al. 2025, arXiv 2505.14827), Soft
Thinking with Cold Stop (Zhang et al. 2025, arXiv 2505.15778), Dirichlet and Gumbel-softmax noise
(Wu et al. 2025, arXiv 2508.03440), SwiReasoning (Shi et al. 2025, arXiv 2510.05069), SeLaR
(arXiv 2604.08299), Multiplex Thinking (arXiv 2601.08808).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
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
"""MoI with noise (mixinputs' own combination, no release): Dirichlet τ 1.0 (α = 1/τ = 1),
Gumbel τ 0.5."""
SOFT_NOISE_TEMPERATURE = {"dirichlet": 0.25, "gumbel": 0.5}
"""Soft thinking with noise follows the release Wu et al. published (github
WJMacro/Randomized-Soft-Thinking @ 4a95b5a): ``scripts/st/st_with_dirichlet.sh:31``
``--dirichlet_alpha 4.0`` (Dirichlet(α·p): τ = 1/α = 0.25) and ``st_with_gumbel.sh:35``
``--gumbel_temperature 0.5``."""
SOFT_NOISE_TOP_K = 15
"""And their K: ``--max_topk 15`` (``st_with_dirichlet.sh:13``, ``st_with_gumbel.sh:16``)."""
DIRICHLET_FLOOR = 1e-7
"""Randomized Soft Thinking draws Dirichlet noise over the tokens whose kept probability is above
1e-7 (``sglang/srt/layers/sampler.py:223``, ``probs > 1e-7``)."""
COLD_STOP_MEASURES = ("vocab", "vocab_normalized", "candidates")
"""What Cold Stop compares with τ: ``"vocab"``, the entropy (nats) of softmax(logits / T) over
the whole vocabulary, before top-k / top-p / min-p, T the request's temperature (1 for greedy
requests) -- Soft Thinking's release (eric-ai-lab/Soft-Thinking @ b97407c,
``sglang/srt/layers/sampler.py:141``; greedy: ``sampling_params.py:113-116``);
``"vocab_normalized"``, the same divided by log V (Randomized Soft Thinking,
``sampler.py:175-176``);
``"candidates"``, the entropy of the row's top-K candidates after the sampler's filters (what
mixinputs measured before; no pass over the vocabulary)."""
SOFT_EMITS = ("top1", "sample")
"""What a soft-thinking row emits while thinking: ``"top1"``, the heaviest token of the weights it
is fed (after noise) -- Soft Thinking's release (``sampler.py:204``,
``batch_next_token_ids = topk_indices[:, 0]``); ``"sample"``, the token the engine's sampler
drew (what mixinputs emitted before)."""
DIRICHLET_SUPPORTS = ("kept", "top_k")
SELAR_GATES = ("row", "always")
"""``"row"``: each row gates on its own entropy (the paper's rule; default); ``"always"``: every
step feeds the latent input, what the released batched runs amount to (any gated row of the batch
makes every row latent, ``src/generation_utils.py:221-232, 275-303`` @ 1198a74)."""
SELAR_GREEDY = ("point_mass", "released")
"""A greedy SeLaR request: ``"point_mass"``, its sampling distribution is onehot(y), so it feeds
E[y] (default); ``"released"``, it gates and mixes over the released recipe's distribution
(``SELAR_RECIPE``), as ``generate_selar`` does with ``do_sample=False`` (lines 243-261)."""
SELAR_RECIPE = (0.6, 20, 0.95)
"""(temperature, top-k, top-p) of SeLaR's released runs (``scripts/run.py:247-249``); a greedy
request under ``selar_greedy="released"`` reads its distribution at these."""
SWIR_RAMP_TOKENS = 38912
"""SwiReasoning's ramp length when a request has no ``max_tokens`` (``run.py:579``)."""

DEFAULT_THINK_START = "<think>"
# SwiReasoning's released defaults (github sdc17/SwiReasoning, generation_utils.py 232-241 and
# run.py 574-583 @ 7f3b278): alpha 1.0, beta 0.7, window 512, no switch cap, 32 answer tokens
# after the termination phrase; the ramps grow over the request's max_new_tokens (341, 347).
SWIR_LINEBREAK = "\\n"
"""SwiReasoning blends its first latent input with ``E[convert_tokens_to_ids("\\n")]``: the
token spelled backslash + n (1699 in Qwen vocabularies), not the newline token."""
SWIR_CONVERGENCE = "</think>"
SWIR_CONVERGENCE_OTHER = "\n\n</think>\n\n"
"""SwiReasoning's convergence words: ``"</think>"`` for a Qwen model, this for any other
(``run.py:458``, ``"</think>" if "Qwen" in model_name else "\n\n</think>\n\n"``)."""
SWIR_TERMINATION = "</think>\n\nThe final answer is"
MAX_QUEUE = 16
"""The longest convergence / termination token sequence SwiReasoning can inject."""
# SeLaR's released run (github Parker-rfu/SeLaReasoning, scripts/run.py 261-262 @ 1198a74):
# k 3, tau 0.5; the contrastive weight is the function default 1.0.
SELAR_TOP_K = 3
# Multiplex Thinking's released settings (github GMLR-Penn/Multiplex-Thinking, scripts/train.sh
# 183, 303 @ 6e524ac): width 3, weights proportional to the draws' probabilities.
MULTIPLEX_WIDTH = 3

MODES = ("moi", "direct", "soft", "swir", "selar", "multiplex")
FAMILY_MODES = ("swir", "selar", "multiplex")
"""Modes whose input is not a mixture of the prior's top-K (``mixing.family_step``)."""
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
KEY_COLD_STOP_MEASURE = "mixinputs_cold_stop_measure"
KEY_COLD_STOP_ABORT = "mixinputs_cold_stop_abort"
KEY_DIRICHLET_SUPPORT = "mixinputs_dirichlet_support"
KEY_RESOLVED = "mixinputs_resolved"
"""Where the front end writes a request's resolved config (``MoIConfig.to_resolved``) into the
engine's own copy of its sampling params; engine core and workers read only this. Not a request
key: a request that sends it is refused like any unknown ``mixinputs_*`` key."""
METHOD_KEYS = {
    # key: (MoIConfig field, the modes it belongs to)
    "mixinputs_swir_alpha": ("swir_alpha", ("swir",)),
    "mixinputs_swir_beta": ("swir_beta", ("swir",)),
    "mixinputs_swir_window": ("swir_window", ("swir",)),
    "mixinputs_swir_max_switches": ("swir_max_switches", ("swir",)),
    "mixinputs_swir_ramp_tokens": ("swir_ramp_tokens", ("swir",)),
    "mixinputs_swir_answer_tokens": ("swir_answer_tokens", ("swir",)),
    "mixinputs_swir_linebreak": ("swir_linebreak", ("swir",)),
    "mixinputs_swir_convergence": ("swir_convergence", ("swir",)),
    "mixinputs_swir_termination": ("swir_termination", ("swir",)),
    "mixinputs_think_start": ("think_start", ("swir",)),
    "mixinputs_selar_threshold": ("selar_threshold", ("selar",)),
    "mixinputs_selar_contrast": ("selar_contrast", ("selar",)),
    "mixinputs_multiplex_width": ("multiplex_width", ("multiplex",)),
    "mixinputs_multiplex_weighted": ("multiplex_weighted", ("multiplex",)),
    "mixinputs_plain_math": ("plain_math", ("swir", "selar")),
    "mixinputs_soft_emit": ("soft_emit", ("soft",)),
    "mixinputs_selar_gate": ("selar_gate", ("selar",)),
    "mixinputs_selar_greedy": ("selar_greedy", ("selar",)),
    # Cold Stop's and the noise's own settings (their modes: those a thinking region or noise
    # applies to; each also needs Cold Stop or Dirichlet noise on).
    KEY_COLD_STOP_MEASURE: ("cold_stop_measure", ("moi", "direct", "soft", "multiplex")),
    KEY_COLD_STOP_ABORT: ("cold_stop_abort", ("moi", "direct", "soft", "multiplex")),
    KEY_DIRICHLET_SUPPORT: ("dirichlet_support", ("soft",)),
}
"""The keys of one method each: a request sets them only with that method's mode."""
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
    *METHOD_KEYS,
)


class _ModeDefault:
    """A field's default that depends on the mode (and noise): resolved in ``__post_init__``."""

    def __init__(self, what: str):
        self.what = what

    def __repr__(self) -> str:
        return f"<the mode's {self.what}>"


_MODE_TOP_K: Any = _ModeDefault("K")  # 20; soft 10, soft with noise 15; selar 3
_MODE_TOP_KS = {"soft": SOFT_TOP_K, "selar": SELAR_TOP_K}
_MODE_REGION: Any = _ModeDefault("region")  # "all"; soft and multiplex: "thinking"
_THINKING_MODES = ("soft", "multiplex")  # their releases mix only until </think>
_MODE_PRIOR: Any = _ModeDefault("prior")  # "raw"; soft, selar, multiplex: "sampling"
_SAMPLING_MODES = ("soft", "selar", "multiplex")  # read the distribution the token is drawn from


def _mode_top_k(mode: str, noise: str) -> int:
    if mode == "soft" and noise != "none":
        return SOFT_NOISE_TOP_K
    return _MODE_TOP_KS.get(mode, DEFAULT_TOP_K)


class MoIConfigError(ValueError):
    """A bad MoI setting; the message names the key or variable and what to write instead."""


@dataclass(frozen=True)
class MoIConfig:
    """How one request mixes its inputs.

    >>> MoIConfig(beta=2.0).top_k, MoIConfig(mode="soft").top_k, MoIConfig(mode="soft").prior
    (20, 10, 'sampling')
    >>> MoIConfig(mode="soft").region, MoIConfig(mode="soft", noise="dirichlet").noise_temperature
    ('thinking', 0.25)
    >>> MoIConfig(mode="selar", prior="raw")
    Traceback (most recent call last):
    ...
    mixinputs.config.MoIConfigError: mode 'selar' mixes over the distribution the token is ...
    >>> MoIConfig(beta=-1)
    Traceback (most recent call last):
    ...
    mixinputs.config.MoIConfigError: beta must be >= 0 (or inf), got -1.0; ...
    """

    beta: float = DEFAULT_BETA
    mode: str = "moi"
    top_k: int | None = _MODE_TOP_K
    prior: str = _MODE_PRIOR  # "raw"; soft, selar, multiplex: "sampling" (and only that)
    region: str = _MODE_REGION  # "all"; soft, multiplex: "thinking"
    think_end: str | int = DEFAULT_THINK_END  # token text, or its id once resolved
    cold_stop_entropy: float | None = None  # None: no Cold Stop (nats, or / log V)
    cold_stop_steps: int = DEFAULT_COLD_STOP_STEPS
    # None: the release's default for this preset (``stop_measure``, ``stop_abort``).
    cold_stop_measure: str | None = None
    cold_stop_abort: bool | None = None
    noise: str = "none"
    noise_temperature: float | None = None  # None: the noise's default (Dirichlet: α = 1/τ)
    dirichlet_support: str | None = None  # None: soft "kept", moi "top_k" (``dirichlet_kept``)
    # Soft thinking: what a row emits while thinking (``SOFT_EMITS``).
    soft_emit: str = "top1"
    # SwiReasoning (mode "swir"): the blend coefficients' starts, the window W, the switch cap
    # M (None: off), the ramps' length, the answer budget after the termination phrase, and
    # the tokens it feeds or injects (text, or ids once resolved).
    swir_alpha: float = 1.0
    swir_beta: float = 0.7
    swir_window: int = 512
    swir_max_switches: int | None = None
    swir_ramp_tokens: int | None = None  # None: the request's max_tokens (max_new_tokens)
    swir_answer_tokens: int = 32
    swir_linebreak: str | int = SWIR_LINEBREAK
    swir_convergence: str | tuple[int, ...] | None = None  # None: by the model's family
    swir_termination: str | tuple[int, ...] = SWIR_TERMINATION
    think_start: str | int = DEFAULT_THINK_START
    # SeLaR (mode "selar", K = top_k): the normalized-entropy gate τ and the contrastive weight.
    selar_threshold: float = 0.5
    selar_contrast: float = 1.0
    selar_gate: str = "row"  # SELAR_GATES
    selar_greedy: str = "point_mass"  # SELAR_GREEDY
    # Multiplex Thinking (mode "multiplex"): K draws, weighted by their probabilities or not.
    multiplex_width: int = MULTIPLEX_WIDTH
    multiplex_weighted: bool = True
    # SwiReasoning and SeLaR feed a sampled math-symbol token as itself.
    plain_math: bool = True
    # Resolved by the front end (not request keys): the EOS id SwiReasoning's answer budget and
    # Cold Stop's after-thinking end emit, and the math-symbol token ids ``plain_math`` refers to.
    eos: int | None = None
    plain_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "beta", parse_beta(self.beta, "beta"))
        if self.mode not in MODES:
            raise MoIConfigError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.noise not in NOISES:
            raise MoIConfigError(f"{KEY_NOISE} must be one of {NOISES}, got {self.noise!r}")
        if self.top_k is _MODE_TOP_K:
            object.__setattr__(self, "top_k", _mode_top_k(self.mode, self.noise))
        object.__setattr__(self, "top_k", parse_top_k(self.top_k, "top_k"))
        # One rule for the prior, whichever way a config is made: a mode that reads one
        # distribution refuses the other (it is never silently swapped).
        if self.prior is _MODE_PRIOR:
            object.__setattr__(self, "prior", "sampling" if self.mode in _SAMPLING_MODES else "raw")
        if self.prior not in PRIORS:
            raise MoIConfigError(f"prior must be one of {PRIORS}, got {self.prior!r}")
        if self.mode in _SAMPLING_MODES and self.prior != "sampling":
            raise MoIConfigError(
                f"mode {self.mode!r} mixes over the distribution the token is sampled from; drop "
                f"{KEY_PRIOR} (or set it to 'sampling')"
            )
        if self.mode == "swir" and self.prior != "raw":
            raise MoIConfigError(
                "mode 'swir' reads the raw (temperature-1) distribution: drop mixinputs_prior"
            )
        if self.region is _MODE_REGION:
            region = "thinking" if self.mode in _THINKING_MODES else "all"
            object.__setattr__(self, "region", region)
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
        self._check_cold_stop()
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
            defaults = SOFT_NOISE_TEMPERATURE if self.mode == "soft" else DEFAULT_NOISE_TEMPERATURE
            object.__setattr__(self, "noise_temperature", defaults[self.noise])
        if self.dirichlet_support is not None:
            if self.dirichlet_support not in DIRICHLET_SUPPORTS:
                raise MoIConfigError(
                    f"{KEY_DIRICHLET_SUPPORT} must be one of {DIRICHLET_SUPPORTS}, got "
                    f"{self.dirichlet_support!r}"
                )
            if self.noise != "dirichlet" or self.mode != "soft":
                raise MoIConfigError(
                    f"{KEY_DIRICHLET_SUPPORT} sets where soft thinking's Dirichlet noise is drawn: "
                    f"it needs mode 'soft' with {KEY_NOISE}='dirichlet'"
                )
        if self.soft_emit not in SOFT_EMITS:
            raise MoIConfigError(
                f"mixinputs_soft_emit must be one of {SOFT_EMITS}, got {self.soft_emit!r}"
            )
        self._check_family()

    def _check_cold_stop(self) -> None:
        """Cold Stop's measure and after-thinking end: only with Cold Stop on."""
        measure, abort = self.cold_stop_measure, self.cold_stop_abort
        if (measure is not None or abort is not None) and self.cold_stop_entropy is None:
            key = KEY_COLD_STOP_MEASURE if measure is not None else KEY_COLD_STOP_ABORT
            raise MoIConfigError(f"{key} needs {KEY_COLD_STOP_ENTROPY} (Cold Stop's threshold)")
        if measure is not None and measure not in COLD_STOP_MEASURES:
            raise MoIConfigError(
                f"{KEY_COLD_STOP_MEASURE} must be one of {COLD_STOP_MEASURES}, got {measure!r}"
            )
        if abort is not None and not isinstance(abort, bool):
            raise MoIConfigError(f"{KEY_COLD_STOP_ABORT} must be true or false, got {abort!r}")

    def _check_family(self) -> None:
        """The three family methods' own fields (see ``METHOD_KEYS``)."""
        if self.mode in FAMILY_MODES and self.noise != "none":
            raise MoIConfigError(f"{KEY_NOISE} applies to mode 'moi' or 'soft', not {self.mode!r}")
        if self.mode in ("swir", "selar") and self.region != "all":
            raise MoIConfigError(
                f"mode {self.mode!r} runs over the whole generation ({self.mode} has its own "
                f"rule for the think-end token): drop {KEY_REGION}"
            )
        field = _field_setter(self)
        field("swir_alpha", _unit(self.swir_alpha, "mixinputs_swir_alpha"))
        field("swir_beta", _unit(self.swir_beta, "mixinputs_swir_beta"))
        field("swir_window", _count(self.swir_window, "mixinputs_swir_window"))
        if self.swir_max_switches is not None:
            field(
                "swir_max_switches", _count(self.swir_max_switches, "mixinputs_swir_max_switches")
            )
        if self.swir_ramp_tokens is not None:
            field("swir_ramp_tokens", _count(self.swir_ramp_tokens, "mixinputs_swir_ramp_tokens"))
        field("swir_answer_tokens", _count(self.swir_answer_tokens, "mixinputs_swir_answer_tokens"))
        field("swir_linebreak", parse_token(self.swir_linebreak, "mixinputs_swir_linebreak"))
        field("think_start", parse_token(self.think_start, "mixinputs_think_start"))
        if self.swir_convergence is not None:
            phrase = parse_tokens(self.swir_convergence, "mixinputs_swir_convergence")
            field("swir_convergence", phrase)
        field("swir_termination", parse_tokens(self.swir_termination, "mixinputs_swir_termination"))
        field("selar_threshold", _unit(self.selar_threshold, "mixinputs_selar_threshold"))
        contrast = self.selar_contrast
        if (
            isinstance(contrast, bool)
            or not isinstance(contrast, (int, float))
            or not (math.isfinite(contrast) and contrast >= 0)
        ):
            raise MoIConfigError(
                f"mixinputs_selar_contrast must be a finite number >= 0, got {contrast!r}"
            )
        field("selar_contrast", float(contrast))
        for name, values in (("selar_gate", SELAR_GATES), ("selar_greedy", SELAR_GREEDY)):
            if getattr(self, name) not in values:
                raise MoIConfigError(
                    f"mixinputs_{name} must be one of {values}, got {getattr(self, name)!r}"
                )
        field("multiplex_width", _count(self.multiplex_width, "mixinputs_multiplex_width"))
        for name in ("multiplex_weighted", "plain_math"):
            if not isinstance(getattr(self, name), bool):
                raise MoIConfigError(
                    f"mixinputs_{name} must be true or false, got {getattr(self, name)!r}"
                )
        if self.eos is not None:
            field("eos", _count(self.eos, "eos", minimum=0))
        field("plain_ids", tuple(int(i) for i in self.plain_ids))

    @property
    def direct(self) -> bool:
        """The fed weights are the distribution itself (direct mixture, soft thinking)."""
        return self.mode in ("direct", "soft")

    @property
    def soft(self) -> bool:
        return self.mode == "soft"

    @property
    def stop_measure(self) -> str | None:
        """The entropy Cold Stop tests (``COLD_STOP_MEASURES``), None without Cold Stop: as
        asked, else the release the preset follows -- ``"vocab"`` (Soft Thinking) without noise,
        ``"vocab_normalized"`` (Randomized Soft Thinking) with it.

        >>> MoIConfig(mode="soft", cold_stop_entropy=0.01).stop_measure
        'vocab'
        """
        if self.cold_stop_entropy is None:
            return None
        if self.cold_stop_measure is not None:
            return self.cold_stop_measure
        return "vocab" if self.noise == "none" else "vocab_normalized"

    @property
    def stop_abort(self) -> bool:
        """After thinking, L more low-entropy steps in a row end the request: as asked, else as
        the preset's release -- Soft Thinking does (``schedule_batch.py:761-769``), Randomized
        Soft Thinking (noise) does not (its ``update_topk_info`` stops counting at ``</think>``).

        >>> MoIConfig(mode="soft", cold_stop_entropy=0.01).stop_abort
        True
        """
        if self.cold_stop_entropy is None:
            return False
        if self.cold_stop_abort is not None:
            return self.cold_stop_abort
        return self.noise == "none"

    @property
    def dirichlet_kept(self) -> bool:
        """Soft thinking's Dirichlet noise is drawn over every token the sampler keeps, and the
        top-K taken after (the releases' order); otherwise over the top-K weights."""
        support = self.dirichlet_support or ("kept" if self.mode == "soft" else "top_k")
        return self.noise == "dirichlet" and support == "kept"

    @property
    def needs_method_step(self) -> bool:
        """Soft thinking, a family method, a thinking region or noise: the step runs
        ``mixing.apply_methods``."""
        return (
            self.soft or self.mode in FAMILY_MODES or self.region != "all" or self.noise != "none"
        )

    @property
    def draws_random(self) -> bool:
        """Its inputs depend on random draws (noise, Multiplex's K samples): keyed by the seed."""
        return self.noise != "none" or self.mode == "multiplex"

    @property
    def needs_eos(self) -> bool:
        """It emits EOS itself: Cold Stop's after-thinking end, SwiReasoning's answer budget."""
        return self.stop_abort or (self.mode == "swir" and self.swir_max_switches is not None)

    @property
    def carries_state(self) -> bool:
        """Its steps depend on earlier ones (still thinking, Cold Stop's low-entropy streak,
        SwiReasoning's mode and reference entropy): a request resumed after a preemption must go
        on from the state it had."""
        return self.region != "all" or self.mode == "swir"

    @property
    def needs_think_end(self) -> bool:
        return self.region == "thinking" or self.mode == "swir"

    @property
    def tokens_to_resolve(self) -> dict[str, str | int | tuple[int, ...] | None]:
        """The fields a front end turns from text into token ids with its tokenizer (a None
        convergence phrase: the model family's, ``SWIR_CONVERGENCE_OTHER``)."""
        fields: dict[str, Any] = {}
        if self.needs_think_end:
            fields["think_end"] = self.think_end
        if self.mode == "swir":
            fields.update(think_start=self.think_start, swir_linebreak=self.swir_linebreak)
            if self.swir_max_switches is not None:  # the phrases are injected under a cap only
                fields.update(
                    swir_convergence=self.swir_convergence,
                    swir_termination=self.swir_termination,
                )
        return fields

    @property
    def name(self) -> str:
        """A short label: mode, noise and region (``"soft+gumbel@thinking"``).

        >>> MoIConfig(mode="soft", noise="gumbel", region="all").name
        'soft+gumbel@all'
        """
        label = self.mode + ("" if self.noise == "none" else f"+{self.noise}")
        default_region = "thinking" if self.mode in _THINKING_MODES else "all"
        return label + ("" if self.region == default_region else f"@{self.region}")

    def to_request(self) -> dict[str, Any]:
        """The request fields (``extra_args`` / ``vllm_xargs``) that ask for this config.

        >>> MoIConfig(beta=float("inf"), top_k=5).to_request()["mixinputs_beta"]
        'inf'
        """
        fields: dict[str, Any] = {
            KEY_BETA: "inf" if math.isinf(self.beta) else self.beta,
            KEY_MODE: self.mode,
        }
        if self.mode not in _SAMPLING_MODES:
            fields[KEY_PRIOR] = self.prior
        fields[KEY_TOP_K] = self.top_k  # None (the whole vocabulary) is refused by engines
        if self.region != "all" or self.mode in _THINKING_MODES:
            fields[KEY_REGION] = self.region
        if self.needs_think_end:
            fields[KEY_THINK_END] = self.think_end
        if self.cold_stop_entropy is not None:
            fields[KEY_COLD_STOP_ENTROPY] = self.cold_stop_entropy
            fields[KEY_COLD_STOP_STEPS] = self.cold_stop_steps
        if self.noise != "none":
            fields[KEY_NOISE] = self.noise
            fields[KEY_NOISE_TEMPERATURE] = self.noise_temperature
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
            raise MoIConfigError(f"{KEY_MODE} must be one of {[*MODES, 'off']}, got {mode!r}")
        method = {}
        for key, (field_name, modes) in METHOD_KEYS.items():
            if key in fields:
                if mode not in modes:
                    raise MoIConfigError(
                        f"{key} belongs to mode {' or '.join(map(repr, modes))}, and this "
                        f"request's mode is {mode!r}"
                    )
                method[field_name] = fields[key]
        base = default or cls()
        # The mode's prior unless the request names one (MoIConfig refuses a wrong one).
        prior = fields.get(KEY_PRIOR, base.prior if mode == base.mode else _MODE_PRIOR)
        if prior is not _MODE_PRIOR and prior not in PRIORS:
            raise MoIConfigError(f"{KEY_PRIOR} must be one of {PRIORS}, got {prior!r}")
        noise = fields.get(KEY_NOISE, "none")
        # A mode's own K unless the request names one (the default config's K came from its mode
        # and noise).
        same_preset = (mode, noise) == (base.mode, base.noise)
        top_k = fields.get(KEY_TOP_K, base.top_k if same_preset else _MODE_TOP_K)
        if top_k is not _MODE_TOP_K:
            top_k = parse_top_k(top_k)
        region = fields.get(KEY_REGION, base.region if mode == base.mode else _MODE_REGION)
        thinking = region == "thinking" or (region is _MODE_REGION and mode in _THINKING_MODES)
        if KEY_THINK_END in fields and not thinking and mode != "swir":
            raise MoIConfigError(
                f"{KEY_THINK_END} marks where the thinking region ends: it needs "
                f"{KEY_REGION}='thinking'"
            )
        if mode != base.mode:  # another mode's own settings do not carry over
            base = replace(base, **{f: getattr(cls, f) for f, _ in METHOD_KEYS.values()})
        try:
            return replace(
                base,
                beta=parse_beta(fields.get(KEY_BETA, base.beta), KEY_BETA),
                mode=mode,
                top_k=top_k,
                prior=prior,
                region=region,
                think_end=fields.get(KEY_THINK_END, base.think_end),
                cold_stop_entropy=fields.get(KEY_COLD_STOP_ENTROPY, base.cold_stop_entropy),
                cold_stop_steps=_cold_stop_steps(fields, base),
                noise=noise,
                noise_temperature=fields.get(KEY_NOISE_TEMPERATURE),
                **{"dirichlet_support": base.dirichlet_support if same_preset else None, **method},
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


def _field_setter(config: MoIConfig):
    def set_field(name: str, value: Any) -> None:
        object.__setattr__(config, name, value)

    return set_field


def _unit(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise MoIConfigError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _count(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise MoIConfigError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def parse_token(value: Any, name: str) -> str | int:
    """One token as its text (resolved by the engine's tokenizer) or its id.

    >>> parse_token("<think>", "k"), parse_token(151667.0, "k")
    ('<think>', 151667)
    """
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, str)) or value in (-1, ""):
        raise MoIConfigError(f"{name} must be a token's text or id, got {value!r}")
    if isinstance(value, int) and value < 0:
        raise MoIConfigError(f"{name} as a token id must be >= 0, got {value}")
    return value


def parse_tokens(value: Any, name: str) -> str | tuple[int, ...]:
    """A token sequence as text (tokenized by the engine) or a list of 1 to ``MAX_QUEUE`` ids.

    >>> parse_tokens([5, 6], "k"), parse_tokens("</think>", "k")
    ((5, 6), '</think>')
    """
    if isinstance(value, str) and value:
        return value
    ids = tuple(value) if isinstance(value, (list, tuple)) else None
    bad = ids is None or not 1 <= len(ids) <= MAX_QUEUE
    if not bad:
        bad = any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in ids)
    if bad:
        raise MoIConfigError(
            f"{name} must be text or a list of 1 to {MAX_QUEUE} token ids, got {value!r}"
        )
    return ids


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
