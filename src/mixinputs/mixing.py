"""The Mixture-of-Inputs math: pure PyTorch, batched, one code path for every device.

This module imports nothing from vLLM or transformers. Engine adapters only move data into it.

The recipe for one decode step, per row b (a request):

1. Candidates. The top-K raw logits, plus the sampled token y as one extra slot:
   ``ids = [topk_ids..., y]``. When y is already in the top-K the extra slot gets a score of
   -inf (zero probability), so y is never counted twice. Shapes stay fixed at K + 1.
2. Prior. ``p = softmax(scores)`` over the candidates (temperature 1), i.e. the next-token
   distribution restricted to ``top-K ∪ {y}`` and renormalized there.
3. Confidence. ``H = entropy(p) / log(n)``, where ``n`` is the number of candidates with non-zero
   probability (K, or K + 1 when y was outside the top-K; fewer when a grammar masked tokens to
   -inf). ``H`` lies in [0, 1]; a single candidate has ``H = 0``.
4. Posterior mean. ``w = (H·p + (β+1−H)·onehot(y)) / (β+1)`` written as
   ``t = 1/(β+1); w = t·H·p + (1 − t·H)·onehot(y)``, which is exact at β = inf (``w = onehot``).
   Direct mixture ignores y: ``w = p``.
5. Mixture. ``h = Σ_i w_i E[ids_i]``, accumulated in float32, returned in the embedding's dtype.

Rule for y outside the top-K (temperature, top-p or a grammar can sample it): y joins the
candidates with its own probability, so ``w`` stays a convex combination (non-negative, sums to
one). The original release kept p on the top-K only and added ``(1−H)·E[y]`` on top, whose weights
then sum to ``1 + H·β/(β+1)``-ish values that are not a distribution. When y is in the top-K both
rules are the same formula.

The soft-input family (``apply_methods``, after step 1, per row; see each function):

- **Soft Thinking** (``soft``): the concept token ``Σ p̃_i E[i]`` over the top-K of the
  distribution the token is sampled from; the sampled token's own slot carries no weight.
- **Region** (``think_end``): a row mixes until it samples its think-end token; that token and
  every later one are fed as plain embeddings (``w = onehot(y)``).
- **Cold Stop** (``cold_stop_entropy`` τ, ``cold_stop_steps`` L): after L consecutive thinking
  steps whose entropy (nats, over the row's top-K) is below τ, the token sampled at that step is
  replaced by the think-end token, as in Soft Thinking's release.
- **Noise** (``noise``): Dirichlet(w / τ) weights, or Gumbel-softmax ``softmax((log w + g) / τ)``,
  drawn from a counter-based generator keyed by (seed, output position, token id): a seeded row
  gets the same noise in any batch, on any device, after any preemption.

No function here syncs with the host, loops over the batch in Python, or modifies its inputs;
all shapes depend only on (B, K, D), so the step can be captured in a CUDA graph.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from mixinputs.config import DEFAULT_TOP_K, parse_beta, parse_top_k

__all__ = [
    "DEFAULT_TOP_K",
    "NOISE_CODES",
    "Candidates",
    "MethodRows",
    "MethodStep",
    "RegionState",
    "apply_methods",
    "candidate_entropy",
    "candidates_from_logits",
    "candidates_from_topk",
    "counter_uniform",
    "method_rows",
    "mix_candidates",
    "mix_embeddings",
    "mix_rows",
    "mix_step",
    "mixture_weights",
    "noisy_scores",
    "normalized_entropy",
    "restrict_to_row_k",
    "sampling_prior_masks",
    "top_k_of",
]


class Candidates(NamedTuple):
    """The tokens a mixture is made of, for a batch of B rows.

    ``ids`` [B, K+1] int64 token ids, the last column is the sampled token y.
    ``scores`` [B, K+1] float32 logits or log-probs (any per-row shift; only softmax is taken),
    ``-inf`` where a slot carries no probability (the y slot when y is already in the top-K).
    """

    ids: torch.Tensor
    scores: torch.Tensor


def _resolve_top_k(top_k: int | None, vocab_size: int) -> int:
    k = parse_top_k(top_k, "top_k")
    return vocab_size if k is None else min(k, vocab_size)


def candidates_from_logits(
    logits: torch.Tensor,
    sampled_ids: torch.Tensor,
    top_k: int | None = DEFAULT_TOP_K,
    row_top_k: torch.Tensor | None = None,
) -> Candidates:
    """Top-K of ``logits`` [B, V] plus the sampled token as slot K (see the module's rule).

    ``top_k=None`` or ``top_k >= V`` uses the whole vocabulary (the paper's literal definition).
    ``row_top_k`` [B] (each <= ``top_k``) gives rows their own K inside the fixed width
    ``top_k + 1`` (see :func:`candidates_from_topk`): a row's result then depends on its own K
    only, never on the other rows of the batch.

    >>> c = candidates_from_logits(torch.tensor([[0.0, 2.0, 1.0]]), torch.tensor([0]), top_k=2)
    >>> c.ids.tolist(), c.scores.tolist()
    ([[1, 2, 0]], [[2.0, 1.0, 0.0]])
    """
    k = _resolve_top_k(top_k, logits.shape[-1])
    topk_scores, topk_ids = top_k_of(logits, k)
    sampled_ids = sampled_ids.to(device=logits.device, dtype=torch.long)
    sampled_scores = logits.gather(-1, sampled_ids.unsqueeze(-1)).squeeze(-1)
    return candidates_from_topk(topk_scores, topk_ids, sampled_ids, sampled_scores, row_top_k)


_BLOCK = 64  # vocabulary block for the two-stage top-K on CPU


def top_k_of(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.topk(logits, k)`` [B, k] values and ids, sorted descending; faster on CPU.

    On CPU (where ``torch.topk`` over a large vocabulary is slow) it takes two stages: the max of
    each block of 64 logits, the top-k blocks, then the top-k inside them. The top-k elements lie
    in those k blocks, so the values are exactly ``torch.topk``'s (equal logits may swap ids, as
    ``torch.topk`` itself does across devices). GPUs use ``torch.topk`` directly.

    >>> x = torch.randn(3, 64 * 100)
    >>> torch.equal(top_k_of(x, 20)[0], torch.topk(x, 20).values)
    True
    """
    batch, vocab = logits.shape
    if logits.device.type != "cpu" or vocab % _BLOCK or vocab < 8 * _BLOCK * k:
        return torch.topk(logits, k, dim=-1)
    blocks = logits.float().reshape(batch, vocab // _BLOCK, _BLOCK)  # CPU max-reductions: fp32
    best_blocks = blocks.amax(dim=-1).topk(k, dim=-1).indices  # [B, k]
    inside = blocks.gather(1, best_blocks.unsqueeze(-1).expand(batch, k, _BLOCK))
    values, where = inside.reshape(batch, k * _BLOCK).topk(k, dim=-1)  # [B, k]
    ids = best_blocks.gather(1, where // _BLOCK) * _BLOCK + where % _BLOCK
    return values.to(logits.dtype), ids


def candidates_from_topk(
    topk_scores: torch.Tensor,
    topk_ids: torch.Tensor,
    sampled_ids: torch.Tensor,
    sampled_scores: torch.Tensor,
    row_top_k: torch.Tensor | None = None,
) -> Candidates:
    """Candidates from a top-K an engine already has, without another pass over the vocabulary.

    ``topk_scores`` [B, K] logits or log-probs sorted descending and ``topk_ids`` [B, K];
    ``sampled_ids`` [B] and ``sampled_scores`` [B], the sampled token's score on the same scale
    as ``topk_scores``.

    ``row_top_k`` [B] (optional, each in [1, K]): row b keeps only its first ``row_top_k[b]``
    columns; the others get score -inf (weight exactly 0). Whether y is "in the top-K" is judged
    on the row's own K, so a row's candidates, weights and mixture are bit-identical whatever the
    width K its batch uses. Engines use one fixed width (their largest K) for every batch.

    >>> c = candidates_from_topk(torch.tensor([[-0.1, -2.0]]), torch.tensor([[4, 7]]),
    ...                          torch.tensor([4]), torch.tensor([-0.1]))
    >>> c.ids.tolist(), c.scores.tolist()
    ([[4, 7, 4]], [[-0.10000000149011612, -2.0, -inf]])
    >>> c = candidates_from_topk(torch.tensor([[-0.1, -2.0]]), torch.tensor([[4, 7]]),
    ...                          torch.tensor([7]), torch.tensor([-2.0]), torch.tensor([1]))
    >>> c.scores.tolist()  # K = 1 for this row: 7 is outside its top-1, so y keeps its score
    [[-0.10000000149011612, -inf, -2.0]]
    """
    sampled_ids = sampled_ids.to(dtype=torch.long)
    y_in_topk = (topk_ids == sampled_ids.unsqueeze(-1)).any(dim=-1)
    y_score = torch.where(y_in_topk, float("-inf"), sampled_scores.float())
    ids = torch.cat([topk_ids.to(torch.long), sampled_ids.unsqueeze(-1)], dim=-1)
    scores = torch.cat([topk_scores.float(), y_score.unsqueeze(-1)], dim=-1)
    cands = Candidates(ids, scores)
    return cands if row_top_k is None else restrict_to_row_k(cands, row_top_k)


def restrict_to_row_k(cands: Candidates, row_top_k: torch.Tensor) -> Candidates:
    """Candidates of width K + 1 cut down to each row's own K inside the same width.

    Columns ``>= row_top_k[b]`` of the top-K get score -inf (weight exactly 0). When the sampled
    token y sat in such a column, it is outside the row's own top-K: the y slot takes back that
    column's score, exactly as if the row had been built with its own K.

    >>> c = Candidates(torch.tensor([[5, 9, 2]]), torch.tensor([[1.0, 0.5, float("-inf")]]))
    >>> restrict_to_row_k(c, torch.tensor([1])).scores.tolist()  # y = 2 is not in the top-1
    [[1.0, -inf, -inf]]
    >>> c = Candidates(torch.tensor([[5, 9, 9]]), torch.tensor([[1.0, 0.5, float("-inf")]]))
    >>> restrict_to_row_k(c, torch.tensor([1])).scores.tolist()  # y = 9 was column 1: its score
    [[1.0, -inf, 0.5]]
    """
    ids, scores = cands
    k = ids.shape[-1] - 1
    cols = torch.arange(k, device=ids.device)
    beyond = cols.unsqueeze(0) >= row_top_k.to(ids.device).unsqueeze(-1)  # [B, K]
    y_beyond = beyond & (ids[:, :k] == ids[:, k:])  # [B, K]: y sits in a column cut off
    y_moved = scores[:, :k].masked_fill(~y_beyond, float("-inf")).amax(dim=-1)  # [B]
    y_score = torch.where(y_beyond.any(dim=-1), y_moved, scores[:, k])
    top = scores[:, :k].masked_fill(beyond, float("-inf"))
    return Candidates(ids, torch.cat([top, y_score.unsqueeze(-1)], dim=-1))


def normalized_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy of each row of ``probs`` [B, C] divided by log(#non-zero entries), in [0, 1].

    Rows with a single non-zero entry have entropy 0.

    >>> normalized_entropy(torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])).tolist()
    [1.0, 0.0]
    """
    probs = probs.float()
    nonzero = probs > 0
    plogp = torch.where(nonzero, probs * torch.log(torch.where(nonzero, probs, 1.0)), 0.0)
    entropy = -plogp.sum(dim=-1)
    log_n = torch.log(nonzero.sum(dim=-1).clamp(min=1).float())
    # log(1) = 0 and entropy = 0 there: define 0/0 as 0 (one candidate, no uncertainty).
    h = torch.where(log_n > 0, entropy / log_n.clamp(min=1e-30), 0.0)
    return h.clamp(0.0, 1.0)


def mixture_weights(
    scores: torch.Tensor,
    beta: torch.Tensor,
    direct: torch.Tensor | None = None,
) -> torch.Tensor:
    """MoI weights [B, C] float32 over candidates whose last column is the sampled token.

    ``scores`` [B, C] logits/log-probs (-inf = no mass); ``beta`` [B] float (inf allowed);
    ``direct`` [B] bool, rows that use direct mixture ``w = p`` (None: none).

    Here y is the token in slot 0 (so its own slot 2 has score -inf); H = 1 and β = 1 give
    ``w = (p + onehot(y)) / 2`` split over its two slots:

    >>> w = mixture_weights(torch.tensor([[0.0, 0.0, float("-inf")]]), torch.tensor([1.0]))
    >>> [round(x, 4) for x in w[0].tolist()]
    [0.25, 0.25, 0.5]
    """
    probs = torch.softmax(scores.float(), dim=-1)  # [B, C]
    h = normalized_entropy(probs)  # [B]
    t = 1.0 / (beta.to(device=scores.device, dtype=torch.float32) + 1.0)  # 0 at beta = inf
    th = (t * h).unsqueeze(-1)  # [B, 1]
    onehot = torch.zeros_like(probs)
    onehot[:, -1] = 1.0
    weights = th * probs + (1.0 - th) * onehot
    if direct is not None:
        weights = torch.where(direct.to(scores.device).unsqueeze(-1), probs, weights)
    return weights


def mix_rows(weights: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``h[b] = Σ_c weights[b, c] · rows[b, c]``: [B, D] in ``rows.dtype``, accumulated in float32.

    ``rows`` [B, C, D] are the candidates' input embeddings, however the model makes them (a
    plain lookup, or a scaled one as in Gemma). A weight of exactly 0 contributes exactly nothing.

    >>> mix_rows(torch.tensor([[0.25, 0.75]]), torch.tensor([[[4.0, 0.0], [0.0, 4.0]]])).tolist()
    [[1.0, 3.0]]
    """
    mixed = (weights.float().unsqueeze(-1) * rows.float()).sum(dim=1)
    return mixed.to(rows.dtype)


def mix_candidates(
    ids: torch.Tensor, weights: torch.Tensor, embedding: torch.Tensor
) -> torch.Tensor:
    """``h[b] = Σ_c weights[b, c] · embedding[ids[b, c]]``: [B, D] in ``embedding.dtype``.

    >>> E = torch.eye(3)
    >>> mix_candidates(torch.tensor([[0, 2]]), torch.tensor([[0.25, 0.75]]), E).tolist()
    [[0.25, 0.0, 0.75]]
    """
    return mix_rows(weights, embedding[ids])  # embedding[ids]: [B, C, D]


def _as_beta_tensor(beta: float | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    if isinstance(beta, torch.Tensor):
        if beta.dim() == 0:
            beta = beta.expand(batch)
        if beta.shape != (batch,):
            raise ValueError(
                f"beta must be a float or a [B] = [{batch}] tensor, got {tuple(beta.shape)}"
            )
        if beta.is_floating_point() is False:
            beta = beta.float()
        bad = torch.isnan(beta) | (beta < 0)
        if bool(bad.any()):  # a host sync, fine for this user-facing entry point
            raise ValueError(
                "every beta must be >= 0 (or inf for plain token embeddings); "
                f"bad rows: {bad.nonzero().flatten().tolist()}"
            )
        return beta.to(device=device, dtype=torch.float32)
    return torch.full((batch,), parse_beta(beta), dtype=torch.float32, device=device)


def _as_direct_mask(
    mode: str | torch.Tensor, batch: int, device: torch.device
) -> torch.Tensor | None:
    if isinstance(mode, torch.Tensor):
        if mode.dtype != torch.bool or mode.shape != (batch,):
            raise ValueError(
                f"mode as a tensor must be a [B] = [{batch}] bool tensor (True = direct mixture), "
                f"got {mode.dtype} {tuple(mode.shape)}"
            )
        return mode.to(device)
    if mode == "moi":
        return None
    if mode == "direct":
        return torch.ones(batch, dtype=torch.bool, device=device)
    raise ValueError(f"mode must be 'moi' or 'direct' (or a [B] bool tensor), got {mode!r}")


def mix_embeddings(
    logits: torch.Tensor,
    sampled_ids: torch.Tensor,
    embedding: torch.Tensor,
    beta: float | torch.Tensor,
    *,
    mode: str | torch.Tensor = "moi",
    top_k: int | None = DEFAULT_TOP_K,
) -> torch.Tensor:
    """The MoI input embedding for the next step: ``h`` [B, D] in ``embedding.dtype``.

    Args:
        logits: [B, V] raw next-token logits (any float dtype; math runs in float32).
        sampled_ids: [B] the token each row sampled (y).
        embedding: [V, D] the model's input embedding matrix.
        beta: float, or [B] tensor per row; ``>= 0``, ``inf`` gives exactly ``E[y]``.
        mode: ``"moi"``, ``"direct"`` (``h = Σ p_i E[i]``, the original ``MIXINPUTS_BETA=-100``),
            or a [B] bool tensor, True where a row uses direct mixture.
        top_k: K, the prior's support (default 20 as in the original); ``None`` = whole vocabulary.

    With p the temperature-1 softmax over the candidates ``top-K ∪ {y}`` and
    ``H = entropy(p) / log(#candidates)``, MoI weights are
    ``w = (H·p + (β+1−H)·onehot(y)) / (β+1)`` and ``h = Σ w_i E[i]``.
    **y outside the top-K**: y becomes candidate K+1 with its own probability, so the weights stay
    a convex combination; when y is in the top-K this equals the original release's
    ``H·Σ((p + β·onehot)/(1+β))·E + (1−H)·E[y]``.

    Example:
        >>> E = torch.eye(4)
        >>> logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
        >>> h = mix_embeddings(logits, torch.tensor([1]), E, beta=float("inf"))
        >>> h.tolist()  # beta = inf: the plain embedding of the sampled token
        [[0.0, 1.0, 0.0, 0.0]]
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be [B, V], got shape {tuple(logits.shape)}")
    batch, vocab = logits.shape
    if sampled_ids.shape != (batch,):
        raise ValueError(f"sampled_ids must be [B] = [{batch}], got {tuple(sampled_ids.shape)}")
    if embedding.dim() != 2 or embedding.shape[0] < vocab:
        raise ValueError(
            f"embedding must be [V, D] with V >= {vocab} (the logits' vocabulary), "
            f"got {tuple(embedding.shape)}"
        )
    betas = _as_beta_tensor(beta, batch, logits.device)
    direct = _as_direct_mask(mode, batch, logits.device)
    cands = candidates_from_logits(logits, sampled_ids, top_k)
    weights = mixture_weights(cands.scores, betas, direct)
    return mix_candidates(cands.ids.to(embedding.device), weights.to(embedding.device), embedding)


def sampling_prior_masks(
    scores: torch.Tensor,
    logits: torch.Tensor,
    sampling: torch.Tensor,
    sampler_top_k: torch.Tensor,
    sampler_top_p: torch.Tensor,
) -> torch.Tensor:
    """Cut the candidates of ``sampling`` rows to what the sampler's top-k / top-p kept.

    ``scores`` [M, K+1] candidates (top-K sorted descending in [:K], the sampled token last, which
    the sampler kept by definition); ``logits`` [M, V] the distribution the sampler drew from,
    before its top-k / top-p; ``sampling`` [M] bool: rows whose prior is that distribution;
    ``sampler_top_k`` [M] long (0 = off) and ``sampler_top_p`` [M] float32 (1 = off). Rows not
    in ``sampling`` come back unchanged.

    >>> s = torch.tensor([[3.0, 2.0, 1.0, float("-inf")]])
    >>> sampling_prior_masks(s, torch.tensor([[3.0, 2.0, 1.0, 0.0]]), torch.tensor([True]),
    ...                      torch.tensor([2]), torch.tensor([1.0])).tolist()
    [[3.0, 2.0, -inf, -inf]]
    """
    k = scores.shape[1] - 1
    cols = torch.arange(k, device=scores.device)
    top = scores[:, :k]
    # top-k: keep columns below the row's k (ties at the k-th value kept, as vLLM does).
    sk = sampler_top_k
    kth = top.gather(1, (sk.clamp(1, k) - 1)[:, None])
    keep = torch.where((sk > 0)[:, None] & (sk <= k)[:, None], top >= kth, True)
    # top-p on the distribution after top-k: normalizer over the kept set (all of V without k).
    full_lse = torch.logsumexp(logits.float(), dim=-1, keepdim=True)
    kept_lse = torch.logsumexp(top.masked_fill(~keep, float("-inf")), dim=-1, keepdim=True)
    lse = torch.where(((sk > 0) & (sk <= k))[:, None], kept_lse, full_lse)
    probs = torch.exp(top - lse).masked_fill(~keep, 0.0)
    before = torch.cumsum(probs, dim=-1) - probs  # mass of the more likely tokens
    keep = keep & ((before < sampler_top_p[:, None]) | (cols == 0))
    masked = top.masked_fill(~keep, float("-inf"))
    out = torch.cat([masked, scores[:, k:]], dim=-1)
    return torch.where(sampling[:, None], out, scores)


# ------------------------------------------------------------------------- the soft-input family
NOISE_CODES = {"none": 0, "dirichlet": 1, "gumbel": 2}
NO_THINK_END = -1  # think_end of a row that mixes every output token (region "all")
_GAMMA_TRIES = 6  # Marsaglia-Tsang proposals per Gamma draw (each accepted with p >= 0.95)


class MethodRows(NamedTuple):
    """Per-row settings of the rows that mix this step: [M] tensors on one device."""

    beta: torch.Tensor  # float32, inf = exactly E[y]
    direct: torch.Tensor  # bool: w = p (direct mixture, soft thinking)
    soft: torch.Tensor  # bool: the sampled token's own slot carries no weight
    noise: torch.Tensor  # long: NOISE_CODES
    noise_temperature: torch.Tensor  # float32 > 0 where noise is on
    seed: torch.Tensor  # long: the noise's seed
    position: torch.Tensor  # long: output index j of the token sampled this step
    think_end: torch.Tensor  # long: the think-end token id, NO_THINK_END for region "all"
    cold_stop_entropy: torch.Tensor  # float32 nats; <= 0: no Cold Stop
    cold_stop_steps: torch.Tensor  # long


class RegionState(NamedTuple):
    """What a row carries from step to step: [M] tensors."""

    thinking: torch.Tensor  # bool: still mixing (always True for region "all")
    low_entropy_steps: torch.Tensor  # long: consecutive thinking steps below the Cold Stop τ


class MethodStep(NamedTuple):
    """The candidates and settings ``mixture_weights`` turns into this step's weights."""

    ids: torch.Tensor  # [M, C] long; the last column is the emitted token
    scores: torch.Tensor  # [M, C] float32
    beta: torch.Tensor  # [M] float32
    direct: torch.Tensor  # [M] bool
    sampled: torch.Tensor  # [M] long: the emitted token (the think-end token where forced)
    state: RegionState  # after this step
    forced: torch.Tensor  # [M] bool: Cold Stop replaced the sampled token


def method_rows(configs, positions, seeds, device=None) -> MethodRows:
    """``MethodRows`` for a list of ``MoIConfig`` whose ``think_end`` is a token id (host side).

    >>> from mixinputs.config import MoIConfig
    >>> rows = method_rows([MoIConfig(mode="soft", noise="gumbel")], [0], [7])
    >>> rows.soft.tolist(), rows.noise.tolist(), rows.noise_temperature.tolist()
    ([True], [2], [0.5])
    """

    def col(values, dtype):
        return torch.tensor(values, dtype=dtype, device=device)

    return MethodRows(
        beta=col([c.beta for c in configs], torch.float32),
        direct=col([c.direct for c in configs], torch.bool),
        soft=col([c.soft for c in configs], torch.bool),
        noise=col([NOISE_CODES[c.noise] for c in configs], torch.long),
        noise_temperature=col([c.noise_temperature or 1.0 for c in configs], torch.float32),
        seed=col(list(seeds), torch.long),
        position=col(list(positions), torch.long),
        think_end=col(
            [c.think_end if c.region == "thinking" else NO_THINK_END for c in configs],
            torch.long,
        ),
        cold_stop_entropy=col([c.cold_stop_entropy or 0.0 for c in configs], torch.float32),
        cold_stop_steps=col([c.cold_stop_steps for c in configs], torch.long),
    )


def fresh_state(batch: int, device=None) -> RegionState:
    """The state of rows that have not sampled yet: inside their region, no low-entropy steps."""
    return RegionState(
        torch.ones(batch, dtype=torch.bool, device=device),
        torch.zeros(batch, dtype=torch.long, device=device),
    )


def candidate_entropy(scores: torch.Tensor) -> torch.Tensor:
    """Entropy in nats [M] of ``softmax(scores)`` over the columns with mass (-inf: none).

    >>> round(candidate_entropy(torch.tensor([[0.0, 0.0, float("-inf")]])).item(), 4)
    0.6931
    """
    logp = torch.log_softmax(scores.float(), dim=-1)
    p = logp.exp()
    return -torch.where(p > 0, p * logp, 0.0).sum(dim=-1)


def apply_methods(cands: Candidates, rows: MethodRows, state: RegionState) -> MethodStep:
    """Soft thinking, Cold Stop, the region and noise on one step's candidates (module recipe).

    ``cands`` [M, K+1] (the sampled token last, each row already cut to its own K and, for
    sampling-prior rows, to the sampler's top-k / top-p); ``rows`` and ``state`` [M].
    ``mixture_weights(step.scores, step.beta, step.direct)`` are then the weights fed.

    >>> c = Candidates(torch.tensor([[3, 5, 5]]), torch.tensor([[1.0, 1.0, float("-inf")]]))
    >>> rows = method_rows([_cfg(region="thinking", think_end=5)], [0], [0])
    >>> step = apply_methods(c, rows, fresh_state(1))  # y = 5 is the think-end token: plain
    >>> mixture_weights(step.scores, step.beta, step.direct).tolist(), step.state.thinking.tolist()
    ([[0.0, 0.0, 1.0]], [False])
    """
    ids, scores = cands
    k = ids.shape[1] - 1
    ninf = torch.tensor(float("-inf"), device=scores.device)
    # 1. Soft thinking: the concept token is over the top-K only (the y slot has mass only when
    #    y lies outside them, and soft rows drop it).
    scores = torch.cat(
        [scores[:, :k], torch.where(rows.soft, ninf, scores[:, k]).unsqueeze(-1)], dim=-1
    )
    # 2. Cold Stop: count consecutive thinking steps whose top-K entropy is below tau; at L the
    #    token sampled now is replaced by the think-end token.
    thinking = state.thinking
    low = thinking & (candidate_entropy(scores[:, :k]) < rows.cold_stop_entropy)
    low_steps = torch.where(low, state.low_entropy_steps + 1, 0)
    forced = low & (low_steps >= rows.cold_stop_steps)
    sampled = torch.where(forced, rows.think_end, ids[:, k])
    ids = torch.cat([ids[:, :k], sampled.unsqueeze(-1)], dim=-1)
    # 3. Region: a row mixes until it emits its think-end token; from that token on, plain inputs.
    active = thinking & (sampled != rows.think_end)
    # 4. Noise on the mode's weights, as the scores of a direct mixture (softmax gives them back).
    beta, direct = rows.beta, rows.direct
    noisy = active & (rows.noise > 0)
    weights = mixture_weights(scores, beta, direct)  # [M, K+1]
    #    y in its own top-K holds weight in two columns (its own and the y slot) that would share
    #    one noise draw (noise is keyed by token): move all of y's weight into the y slot first.
    y_col = ids[:, :k] == ids[:, k:]  # [M, K]
    y_mass = torch.where(y_col, weights[:, :k], 0.0).sum(dim=-1, keepdim=True)
    weights = torch.cat([weights[:, :k].masked_fill(y_col, 0.0), weights[:, k:] + y_mass], -1)
    noised = noisy_scores(weights, ids, rows)
    scores = torch.where(noisy[:, None], noised, scores)
    direct = direct | noisy
    # 5. Outside the region: w = onehot(y), exactly.
    beta = torch.where(active, beta, float("inf"))
    direct = direct & active
    new_state = RegionState(active, torch.where(active, low_steps, 0))
    return MethodStep(ids, scores, beta, direct, sampled, new_state, forced)


def noisy_scores(weights: torch.Tensor, ids: torch.Tensor, rows: MethodRows) -> torch.Tensor:
    """Scores [M, C] whose softmax is the noised ``weights`` [M, C] (zero weights stay zero).

    Dirichlet: ``log Gamma(w / τ)`` per candidate; Gumbel: ``(log w + g) / τ``. Noise of row b,
    candidate token t is drawn from ``(seed[b], position[b], t)`` only.

    >>> rows = method_rows([_cfg(noise="gumbel")], [3], [11])
    >>> w = torch.tensor([[0.5, 0.5, 0.0]])
    >>> s = noisy_scores(w, torch.tensor([[4, 9, 9]]), rows)
    >>> bool(torch.isinf(s[0, 2])), torch.equal(s, noisy_scores(w, torch.tensor([[4, 9, 9]]), rows))
    (True, True)
    """
    w = weights.float()
    tau = rows.noise_temperature.float().clamp(min=1e-6)[:, None]  # [M, 1]
    log_w = torch.log(w)  # -inf where w = 0
    seed, pos = rows.seed[:, None, None], rows.position[:, None, None]
    # Gumbel-softmax: g = -log(-log u).
    u = counter_uniform(seed, pos, ids[:, :, None], torch.zeros(1, 1, 1, dtype=torch.long))
    gumbel = (log_w - torch.log(-torch.log(u[..., 0]))) / tau
    # Dirichlet(alpha = w / tau): Gamma(alpha) = Gamma(alpha + 1) * U^(1/alpha), in log space so
    # small alphas neither underflow nor divide 0 by 0.
    alpha = w / tau
    log_gamma = _log_gamma_plus_one(alpha, seed, pos, ids)
    boost = counter_uniform(
        seed, pos, ids[:, :, None], torch.full((1, 1, 1), 3 * _GAMMA_TRIES, dtype=torch.long)
    )[..., 0]
    dirichlet = torch.where(alpha > 0, log_gamma + torch.log(boost) / alpha, float("-inf"))
    return torch.where((rows.noise == NOISE_CODES["gumbel"])[:, None], gumbel, dirichlet)


def _log_gamma_plus_one(alpha, seed, pos, ids) -> torch.Tensor:
    """log of a Gamma(alpha + 1) draw [M, C] (Marsaglia-Tsang, shape >= 1), fixed-size tries."""
    d = (alpha + 1.0 - 1.0 / 3.0)[..., None]  # [M, C, 1]
    c = 1.0 / torch.sqrt(9.0 * d)
    draws = torch.arange(3 * _GAMMA_TRIES, device=alpha.device).reshape(1, 1, _GAMMA_TRIES, 3)
    u = counter_uniform(seed[..., None], pos[..., None], ids[:, :, None, None], draws)
    z = torch.sqrt(-2.0 * torch.log(u[..., 0])) * torch.cos(2.0 * math.pi * u[..., 1])
    v = (1.0 + c * z) ** 3  # [M, C, T]
    log_v = torch.log(v.clamp(min=1e-30))
    accept = (v > 0) & (torch.log(u[..., 2]) < 0.5 * z * z + d - d * v + d * log_v)
    first = accept.float().argmax(dim=-1, keepdim=True)  # the first accepted try (0 if none)
    log_v = torch.where(accept.any(dim=-1, keepdim=True), log_v.gather(-1, first), 0.0)
    return (torch.log(d) + log_v)[..., 0]


_M32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2^32 for x in [0, 2^32) without int64 overflow (16-bit halves)."""
    return ((x & 0xFFFF) * c + (((x >> 16) * (c & 0xFFFF)) << 16)) & _M32


def _hash32(x: torch.Tensor) -> torch.Tensor:
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def counter_uniform(seed, position, token, draw) -> torch.Tensor:
    """Uniforms in (0, 1), float32, from a stateless hash of four broadcastable long tensors.

    The same (seed, position, token, draw) gives the same number on every device and in every
    batch; no generator state, no host sync.

    >>> a = counter_uniform(torch.tensor(1), torch.tensor(2), torch.arange(3), torch.tensor(0))
    >>> bool(((a > 0) & (a < 1)).all()), torch.equal(a, counter_uniform(
    ...     torch.tensor(1), torch.tensor(2), torch.arange(3), torch.tensor(0)))
    (True, True)
    """
    device = token.device
    seed = seed.to(device=device, dtype=torch.long)
    h = _hash32(draw.to(device=device, dtype=torch.long) & _M32)
    h = _hash32(h ^ (token.long() & _M32))
    h = _hash32(h ^ (position.to(device=device, dtype=torch.long) & _M32))
    h = _hash32(h ^ ((seed >> 32) & _M32))
    h = _hash32(h ^ (seed & _M32))
    # 23 bits: (2^23 - 1) + 0.5 is exact in float32, so u stays in [2^-24, 1 - 2^-24].
    return ((h >> 9).float() + 0.5) * (1.0 / (1 << 23))


def mix_step(
    prior: torch.Tensor,
    sampled: torch.Tensor,
    embedding: torch.Tensor,
    rows: MethodRows,
    state: RegionState,
    top_k: int,
    row_top_k: torch.Tensor | None = None,
) -> tuple[torch.Tensor, MethodStep, torch.Tensor]:
    """The whole reference step for every method: (h [M, D], the step, weights [M, K+1]).

    ``prior`` [M, V] the logits each row mixes from (raw, or the sampler's for soft / sampling
    rows, already cut to the sampler's top-k / top-p); ``sampled`` [M]; ``embedding`` [V, D].

    >>> E = torch.eye(3)
    >>> rows = method_rows([_cfg(mode="soft", top_k=2)], [0], [0])
    >>> h, step, w = mix_step(torch.tensor([[0.0, 0.0, -9.0]]), torch.tensor([2]), E, rows,
    ...                       fresh_state(1), top_k=2)
    >>> h.tolist()  # the concept token over the top 2; y = 2 itself carries no weight
    [[0.5, 0.5, 0.0]]
    """
    cands = candidates_from_logits(prior, sampled, top_k, row_top_k)
    step = apply_methods(cands, rows, state)
    weights = mixture_weights(step.scores, step.beta, step.direct)
    return mix_candidates(step.ids, weights, embedding), step, weights


def _cfg(**kwargs):
    from mixinputs.config import MoIConfig

    return MoIConfig(**kwargs)
