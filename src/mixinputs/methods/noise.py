"""Dirichlet and Gumbel-softmax noise on the fed weights (Wu et al. 2025, arXiv 2508.03440).

Dirichlet(w / τ) weights (α = 1/τ), or Gumbel-softmax ``softmax((log w + g) / τ)``, drawn from the
counter-based generator (:mod:`mixinputs.core.rng`) keyed by (seed, output position, token id):
a seeded row gets the same noise in any batch, on any device, after any preemption. Soft
thinking's Dirichlet is drawn over every token the sampler keeps, then the top-K of the draws is
taken (``kept_dirichlet``), as both releases do (Randomized Soft Thinking @ 4a95b5a,
``sglang/srt/layers/sampler.py:221-234``; Soft Thinking @ b97407c, 160-170). A mode takes noise
when its ``Method.noise`` says so; its defaults are the mode's ``noise_temperatures``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from mixinputs.methods.base import Column, Key, Method, MoIConfigError, RowContext, positive, torch

NOISES = ("none", "dirichlet", "gumbel")
NOISE_CODES = {"none": 0, "dirichlet": 1, "gumbel": 2}
DEFAULT_NOISE_TEMPERATURE = {"dirichlet": 1.0, "gumbel": 0.5}
"""MoI with noise (mixinputs' own combination, no release): Dirichlet τ 1.0 (α = 1/τ = 1),
Gumbel τ 0.5. A mode with a release of its own sets ``noise_temperatures``."""
DIRICHLET_FLOOR = 1e-7
"""Randomized Soft Thinking draws Dirichlet noise over the tokens whose kept probability is above
1e-7 (``sglang/srt/layers/sampler.py:223``, ``probs > 1e-7``)."""
DIRICHLET_SUPPORTS = ("kept", "top_k")
KEPT_CHUNK = 8192  # vocabulary tokens per pass of the Gamma draws over every kept token
KEY_NOISE = "mixinputs_noise"
KEY_NOISE_TEMPERATURE = "mixinputs_noise_temperature"
KEY_DIRICHLET_SUPPORT = "mixinputs_dirichlet_support"


@dataclass(frozen=True)
class NoiseFields:
    noise: str = "none"
    noise_temperature: float | None = None  # None: the mode's default (Dirichlet: α = 1/τ)
    dirichlet_support: str | None = None  # None: the mode's first ``dirichlet_supports``


class KeptDraws(NamedTuple):
    """Dirichlet draws over every kept token, for some rows (``kept_dirichlet``): their top-K
    candidates are the top-K of Gamma draws over every token the sampler keeps."""

    ids: torch.Tensor  # [D, K] long
    scores: torch.Tensor  # [D, K] float32: log of the draws (-inf past the row's own K)
    rows: torch.Tensor | None = None  # [D] long, ascending: which rows (None: every row)


class Noise(Method):
    name = "noise"
    is_mode = False
    title = "noisy mixtures"
    specs = ("soft+dirichlet", "soft+gumbel", "moi+gumbel")
    asks = '`"mixinputs_noise": "dirichlet"` or `"gumbel"` (modes `soft`, `moi`)'
    feeds = (
        "the mode's weights `w` replaced by a draw from Dirichlet(`w/τ`) (α = 1/τ; soft: over "
        "every kept token, then the top 15, α 4), or by `softmax((log w + g)/τ)` with Gumbel "
        "noise `g` (τ 0.5, top 15); soft emits the heaviest; drawn from the request's seed"
    )
    paper = "Wu et al. 2025, [arXiv 2508.03440](https://arxiv.org/abs/2508.03440)"
    keys = {
        KEY_NOISE: Key("noise", '`"none"`, `"dirichlet"`, `"gumbel"`', '`"none"`', own=False),
        KEY_NOISE_TEMPERATURE: Key(
            "noise_temperature", "number > 0 (needs a noise; Dirichlet's α = 1/τ)",
            "`soft`: dirichlet 0.25, gumbel 0.5 (Randomized Soft Thinking's scripts); "
            "`moi`: 1.0, 0.5", own=False,
        ),
        KEY_DIRICHLET_SUPPORT: Key(
            "dirichlet_support",
            '`"kept"` (every token the sampler keeps, then the top-K) or `"top_k"`',
            '`"kept"` (releases)',
        ),
    }  # fmt: skip
    preset_fields = ("dirichlet_support",)
    derived = ("dirichlet_kept",)
    columns = {
        "noise": Column("long"),  # NOISE_CODES
        "noise_temperature": Column("float32"),  # > 0 where noise is on
        "dirichlet_kept": Column("bool"),  # Dirichlet over every kept token, then the top-K
    }

    def bind(self, modes) -> None:
        self.noisy_modes = tuple(m.name for m in modes if m.noise)
        self.mode_supports = {m.name: getattr(m, "dirichlet_supports", ()) for m in modes}
        self.kept_modes = tuple(name for name, s in self.mode_supports.items() if s)

    def modes(self, all_modes) -> tuple[str, ...]:
        """The modes that take noise."""
        return tuple(m.name for m in all_modes if m.noise)

    def key_modes(self, key: str, all_modes) -> tuple[str, ...]:
        if key == KEY_DIRICHLET_SUPPORT:  # the modes that say where their Dirichlet is drawn
            return tuple(m.name for m in all_modes if getattr(m, "dirichlet_supports", ()))
        return self.modes(all_modes)

    def check(self, config: Any, set_field, mode: Method) -> None:
        if config.noise not in NOISES:
            raise MoIConfigError(f"{KEY_NOISE} must be one of {NOISES}, got {config.noise!r}")
        if config.noise != "none" and not mode.noise:
            takes = " or ".join(repr(m) for m in self.noisy_modes)
            raise MoIConfigError(f"{KEY_NOISE} applies to mode {takes}, not {config.mode!r}")
        if config.noise_temperature is not None:
            if config.noise == "none":
                raise MoIConfigError(
                    f"{KEY_NOISE_TEMPERATURE} needs {KEY_NOISE}='dirichlet' or 'gumbel'"
                )
            set_field(
                "noise_temperature", positive(config.noise_temperature, KEY_NOISE_TEMPERATURE)
            )
        elif config.noise != "none":
            defaults = getattr(mode, "noise_temperatures", DEFAULT_NOISE_TEMPERATURE)
            set_field("noise_temperature", defaults[config.noise])
        support = config.dirichlet_support
        if support is not None:
            if support not in DIRICHLET_SUPPORTS:
                raise MoIConfigError(
                    f"{KEY_DIRICHLET_SUPPORT} must be one of {DIRICHLET_SUPPORTS}, got {support!r}"
                )
            if config.noise != "dirichlet" or not getattr(mode, "dirichlet_supports", ()):
                modes = " or ".join(repr(m) for m in self.kept_modes)
                raise MoIConfigError(
                    f"{KEY_DIRICHLET_SUPPORT} sets where the Dirichlet noise is drawn: it needs "
                    f"mode {modes} with {KEY_NOISE}='dirichlet'"
                )

    def to_request(self, config: Any) -> dict[str, Any]:
        if config.noise == "none":
            return {}
        return {KEY_NOISE: config.noise, KEY_NOISE_TEMPERATURE: config.noise_temperature}

    def from_request(self, fields: Any, base: Any, mode: str) -> dict[str, Any]:
        # Noise is asked per request: a default config's does not carry over.
        return {
            "noise": fields.get(KEY_NOISE, "none"),
            "noise_temperature": fields.get(KEY_NOISE_TEMPERATURE),
        }

    def dirichlet_kept(self, config: Any) -> bool:
        """``config.dirichlet_kept``: its Dirichlet is drawn over every kept token first."""
        return dirichlet_kept(config, self.mode_supports)

    def needs_step(self, config: Any) -> bool:
        return config.noise != "none"

    def draws_random(self, config: Any) -> bool:
        return config.noise != "none"

    def label(self, config: Any) -> str:
        return "" if config.noise == "none" else f"+{config.noise}"

    def row(self, config: Any, ctx: RowContext) -> dict[str, Any]:
        return {
            "noise": NOISE_CODES[config.noise],
            "noise_temperature": config.noise_temperature or 1.0,
            "dirichlet_kept": self.dirichlet_kept(config) and not ctx.point_mass,
        }

    def work(self, config: Any, settings: Any, cut: bool) -> set[str]:
        if not settings.dirichlet_kept:
            return set()
        return {"kept_draws", "kept_cut"} if cut else {"kept_draws"}

    # 2. Dirichlet as released: these rows' candidates are the top-K of their Gamma draws over
    #    every kept token (their scores are the draws already).
    def on_candidates(self, d, rows, state, inputs) -> None:
        from mixinputs.core.select import put_rows as put

        kept = None if inputs is None else inputs.kept
        if kept is None:  # d.drawn stays all False
            return
        k = d.k
        d.drawn = rows.dirichlet_kept
        drawn = d.drawn[:, None]
        new_ids = torch.where(drawn, put(kept.rows, d.ids[:, :k], kept.ids), d.ids[:, :k])
        drawn_scores = put(kept.rows, d.scores[:, :k], kept.scores)
        new = torch.where(drawn, drawn_scores, d.scores[:, :k])
        d.ids = torch.cat([new_ids, d.ids[:, k:]], dim=-1)
        d.scores = torch.cat([new, d.scores[:, k:]], dim=-1)

    # 3. Noise on the mode's weights while in the region, as the scores of a direct mixture
    #    (softmax gives them back).
    def on_weights(self, d, rows, state, inputs) -> None:
        from mixinputs.core.weights import mixture_weights

        k = d.k
        noisy = state.thinking & (rows.noise > 0)
        weights = mixture_weights(d.scores, d.beta, d.direct)  # [M, K+1]
        # MoI's y in its own top-K holds weight in two columns (its own and the y slot) that
        # would share one noise draw (noise is keyed by token): move all of y's weight into the
        # y slot first. A soft row emitting its top-1 gives y no weight at all (the slot then
        # holds the emitted token).
        y_col = (d.ids[:, :k] == d.ids[:, k:]) & ~rows.soft_top1[:, None]  # [M, K]
        y_mass = torch.where(y_col, weights[:, :k], 0.0).sum(dim=-1, keepdim=True)
        weights = torch.cat([weights[:, :k].masked_fill(y_col, 0.0), weights[:, k:] + y_mass], -1)
        noised = torch.where(d.drawn[:, None], d.scores, noisy_scores(weights, d.ids, rows))
        d.scores = torch.where(noisy[:, None], noised, d.scores)
        d.direct = d.direct | noisy


def kept_rows(rows) -> Any:
    """[M] bool: the rows whose Dirichlet is drawn over every kept token (the "kept_draws"
    work)."""
    return rows.dirichlet_kept


def dirichlet_kept(config: Any, supports: dict[str, tuple[str, ...]]) -> bool:
    """Its Dirichlet noise is drawn over every token the sampler keeps, and the top-K taken
    after (the releases' order); otherwise over the top-K weights. ``supports``: each mode's
    ``dirichlet_supports`` (the first is its default)."""
    own = supports.get(config.mode, ())
    support = config.dirichlet_support or (own[0] if own else "top_k")
    return config.noise == "dirichlet" and support == "kept"


def noisy_scores(weights: torch.Tensor, ids: torch.Tensor, rows) -> torch.Tensor:
    """Scores [M, C] whose softmax is the noised ``weights`` [M, C] (zero weights stay zero).

    Dirichlet: ``log Gamma(w / τ)`` per candidate; Gumbel: ``(log w + g) / τ``. Noise of row b,
    candidate token t is drawn from ``(seed[b], position[b], t)`` only.

    >>> from mixinputs.config import MoIConfig
    >>> from mixinputs.core.rows import method_rows
    >>> rows = method_rows([MoIConfig(noise="gumbel")], [3], [11])
    >>> w = torch.tensor([[0.5, 0.5, 0.0]])
    >>> s = noisy_scores(w, torch.tensor([[4, 9, 9]]), rows)
    >>> bool(torch.isinf(s[0, 2])), torch.equal(s, noisy_scores(w, torch.tensor([[4, 9, 9]]), rows))
    (True, True)
    """
    from mixinputs.core.rng import counter_log_gamma, counter_uniform

    w = weights.float()
    tau = rows.noise_temperature.float().clamp(min=1e-6)[:, None]  # [M, 1]
    log_w = torch.log(w)  # -inf where w = 0
    seed, pos = rows.seed[:, None, None], rows.position[:, None, None]
    # Gumbel-softmax: g = -log(-log u).
    u = counter_uniform(seed, pos, ids[:, :, None], ids.new_zeros((1, 1, 1)))
    gumbel = (log_w - torch.log(-torch.log(u[..., 0]))) / tau
    # Dirichlet(alpha = w / tau), i.e. Dirichlet(α·w) with α = 1/τ: normalized Gamma draws.
    dirichlet = counter_log_gamma(w / tau, rows.seed, rows.position, ids)
    return torch.where((rows.noise == NOISE_CODES["gumbel"])[:, None], gumbel, dirichlet)


def kept_dirichlet(logits: torch.Tensor, rows, width: int, chunk: int = KEPT_CHUNK) -> KeptDraws:
    """Soft thinking's Dirichlet noise as both releases draw it: over every token the sampler
    keeps, then the top-K (Randomized Soft Thinking @ 4a95b5a, ``sglang/srt/layers/sampler.py``
    221-234; Soft Thinking @ b97407c, 160-170).

    ``logits`` [D, V]: the distribution each row samples from, cut to the sampler's top-k /
    top-p (-inf: not kept); ``rows`` [D]. With ``p`` its softmax, each token with ``p > 1e-7``
    (``DIRICHLET_FLOOR``, 4a95b5a line 223) gets a draw ``G_t ~ Gamma(α·p_t)`` (α = 1/τ,
    ``counter_log_gamma``); the candidates are the top ``width`` draws, cut to the row's own K,
    with scores ``log G`` -- their softmax is the release's ``G / Σ G`` renormalized over the
    top-K. The vocabulary is drawn ``chunk`` tokens at a time (a fixed number of passes).
    """
    from mixinputs.core.rng import counter_log_gamma

    m, vocab = logits.shape
    device = logits.device
    p = torch.softmax(logits.float(), dim=-1)  # [D, V]
    alpha = p / rows.noise_temperature.float().clamp(min=1e-6)[:, None]
    ninf = float("-inf")
    best = p.new_full((m, width), ninf)
    best_ids = torch.zeros((m, width), dtype=torch.long, device=device)
    for start in range(0, vocab, chunk):
        tokens = torch.arange(start, min(start + chunk, vocab), device=device)
        part = tokens[None].expand(m, -1)
        draws = counter_log_gamma(alpha[:, start : start + chunk], rows.seed, rows.position, part)
        draws = draws.masked_fill(p[:, start : start + chunk] <= DIRICHLET_FLOOR, ninf)
        values, where = torch.topk(torch.cat([best, draws], dim=1), width, dim=-1)
        best_ids = torch.cat([best_ids, part], dim=1).gather(1, where)
        best = values
    own_k = torch.where(rows.top_k > 0, rows.top_k, width)
    beyond = torch.arange(width, device=device)[None] >= own_k[:, None]
    return KeptDraws(best_ids, best.masked_fill(beyond, ninf))


NOISE = Noise()
