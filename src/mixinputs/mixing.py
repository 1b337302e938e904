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
   Direct mixture ignores y: ``w = p`` over the top-K alone (y's slot carries no weight, also
   when y lies outside the top-K), as the original release's direct mixture does
   (EvanZhuang/mixinputs @ 7aef34b, ``gpu_model_runner.py:1229-1236``).
5. Mixture. ``h = Σ_i w_i E[ids_i]``, accumulated in float32, returned in the embedding's dtype.

MoI's rule for y outside the top-K (temperature, top-p or a grammar can sample it): y joins the
candidates with its own probability, so ``w`` stays a convex combination (non-negative, sums to
one). The original release kept p on the top-K only and added ``(1−H)·E[y]`` on top
(``gpu_model_runner.py:1218-1228``): its weights then sum to ``1 − H·β/(β+1)``, not one. When y is
in the top-K both rules are the same formula.

The soft-input family (``apply_methods``, after step 1, per row; see each function):

- **Soft Thinking** (``soft``): the concept token ``Σ p̃_i E[i]`` over the top-K of the
  distribution the token is sampled from; the sampled token's own slot carries no weight. While
  thinking, the row emits the heaviest token of the weights it is fed (after noise), not the
  sampled one (``soft_top1``; Soft Thinking's ``sampler.py:204``).
- **Region** (``think_end``): a row mixes until it emits its think-end token; that token and
  every later one are fed as plain embeddings (``w = onehot(token)``).
- **Cold Stop** (``cold_stop_entropy`` τ, ``cold_stop_steps`` L): after L consecutive thinking
  steps whose entropy is below τ, the emitted token is replaced by the think-end token; with
  ``cold_stop_abort``, L more low-entropy steps after thinking end the request (its next token
  is EOS), as in Soft Thinking's release. The entropy is the whole vocabulary's at the request's
  temperature (``vocab_entropy``; the engine computes it, ``MethodRows.vocab_entropy``), over log V,
  or over the top-K candidates (``cold_stop_measure``).
- **Noise** (``noise``): Dirichlet(w / τ) weights (α = 1/τ), or Gumbel-softmax
  ``softmax((log w + g) / τ)``, drawn from a counter-based generator keyed by (seed, output
  position, token id): a seeded row gets the same noise in any batch, on any device, after any
  preemption. Soft thinking's Dirichlet is drawn over every token the sampler keeps, then the
  top-K of the draws is taken (``kept_dirichlet``), as both releases do.

No function here syncs with the host, loops over the batch in Python, or modifies its inputs;
all shapes depend only on (B, K, D), so the step can be captured in a CUDA graph.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from mixinputs.config import (
    COLD_STOP_MEASURES,
    DEFAULT_TOP_K,
    DIRICHLET_FLOOR,
    MAX_QUEUE,
    SELAR_RECIPE,
    SWIR_RAMP_TOKENS,
    parse_beta,
    parse_top_k,
)

__all__ = [
    "DEFAULT_TOP_K",
    "MEASURE_CODES",
    "NOISE_CODES",
    "Candidates",
    "KeptDraws",
    "MethodRows",
    "MethodStep",
    "RegionState",
    "apply_methods",
    "candidate_entropy",
    "candidates_from_logits",
    "candidates_from_topk",
    "counter_log_gamma",
    "counter_uniform",
    "drop_sampled",
    "kept_dirichlet",
    "method_rows",
    "mix_candidates",
    "mix_embeddings",
    "mix_rows",
    "mix_step",
    "mixture_weights",
    "noisy_scores",
    "normalized_entropy",
    "restrict_to_row_k",
    "row_settings",
    "sampling_prior_masks",
    "top_k_normalizer",
    "top_k_of",
    "vocab_entropy",
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


def drop_sampled(scores: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``scores`` [B, K+1] with the sampled token's slot (the last) at -inf where ``rows`` [B]
    (bool): direct mixture and soft thinking weigh the top-K alone, whatever y is.

    >>> drop_sampled(torch.tensor([[1.0, 0.0, 2.0]]), torch.tensor([True])).tolist()
    [[1.0, 0.0, -inf]]
    """
    k = scores.shape[1] - 1
    last = torch.where(rows, scores.new_full((), float("-inf")), scores[:, k])
    return torch.cat([scores[:, :k], last.unsqueeze(-1)], dim=-1)


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
    ``H·Σ((p + β·onehot)/(1+β))·E + (1−H)·E[y]``. Direct mixture ignores y wherever it lies.

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
    scores = cands.scores if direct is None else drop_sampled(cands.scores, direct)
    weights = mixture_weights(scores, betas, direct)
    return mix_candidates(cands.ids.to(embedding.device), weights.to(embedding.device), embedding)


def sampling_prior_masks(
    scores: torch.Tensor,
    logits: torch.Tensor,
    sampling: torch.Tensor,
    sampler_top_k: torch.Tensor,
    sampler_top_p: torch.Tensor,
    wide_lse: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cut the candidates of ``sampling`` rows to what the sampler's top-k / top-p kept.

    ``scores`` [M, K+1] candidates (top-K sorted descending in [:K], the sampled token last, which
    the sampler kept by definition); ``logits`` [M, V] the distribution the sampler drew from,
    before its top-k / top-p; ``sampling`` [M] bool: rows whose prior is that distribution;
    ``sampler_top_k`` [M] long (0 = off) and ``sampler_top_p`` [M] float32 (1 = off);
    ``wide_lse`` [M]: for rows whose top-k is wider than the candidates, the log-normalizer of
    their top-k (``top_k_normalizer``; top-p is applied to the distribution after top-k, and the
    candidates alone cannot give it); None or NaN: such a row normalizes over the whole
    vocabulary. Rows not in ``sampling`` come back unchanged.

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
    if wide_lse is not None:  # top-k wider than the candidates: its own normalizer, given
        known = ((sk > k) & ~torch.isnan(wide_lse))[:, None]
        full_lse = torch.where(known, wide_lse.float()[:, None], full_lse)
    lse = torch.where(((sk > 0) & (sk <= k))[:, None], kept_lse, full_lse)
    probs = torch.exp(top - lse).masked_fill(~keep, 0.0)
    before = torch.cumsum(probs, dim=-1) - probs  # mass of the more likely tokens
    keep = keep & ((before < sampler_top_p[:, None]) | (cols == 0))
    masked = top.masked_fill(~keep, float("-inf"))
    out = torch.cat([masked, scores[:, k:]], dim=-1)
    return torch.where(sampling[:, None], out, scores)


def top_k_normalizer(logits: torch.Tensor, top_k: torch.Tensor) -> torch.Tensor:
    """[W] log Σ exp over each row's ``top_k`` [W] largest of ``logits`` [W, V] (ties at the
    k-th value kept, as ``sampling_prior_masks``): the normalizer top-p reads after a top-k
    wider than the candidates. One sort of each row over the vocabulary.

    >>> top_k_normalizer(torch.tensor([[0.0, 0.0, -9.0]]), torch.tensor([2])).tolist()
    [0.6931471824645996]
    """
    values, _ = torch.sort(logits.float(), dim=-1, descending=True)
    k = top_k.clamp(1, logits.shape[-1])
    kth = values.gather(1, (k - 1)[:, None])
    return torch.logsumexp(values.masked_fill(values < kth, float("-inf")), dim=-1)


# ------------------------------------------------------------------------- the soft-input family
NOISE_CODES = {"none": 0, "dirichlet": 1, "gumbel": 2}
MEASURE_CODES = {name: code for code, name in enumerate(COLD_STOP_MEASURES)}
"""Cold Stop's measure per row: 0 the whole vocabulary (nats), 1 the same over log V, 2 the
top-K candidates (``config.COLD_STOP_MEASURES``)."""
FAMILY_CODES = {"none": 0, "swir": 1, "selar": 2, "multiplex": 3}
NO_THINK_END = -1  # think_end of a row that mixes every output token (region "all")
NO_TOKEN = -1  # an unset token id setting
QUEUE = MAX_QUEUE  # SwiReasoning's longest convergence / termination sequence
_GAMMA_TRIES = 6  # Marsaglia-Tsang proposals per Gamma draw (each accepted with p >= 0.95)
_DRAWS = 1 << 20  # counter draw indices of Multiplex's samples (noise uses 0 .. 3·_GAMMA_TRIES)
KEPT_CHUNK = 8192  # vocabulary tokens per pass of the Gamma draws over every kept token
_STEP_FIELDS = ("position", "vocab_entropy")  # MethodRows fields an engine sets per step


class MethodRows(NamedTuple):
    """Per-row settings of the rows that mix this step: [M] tensors on one device ([M, QUEUE]
    for the two token sequences)."""

    beta: torch.Tensor  # float32, inf = exactly E[y]
    direct: torch.Tensor  # bool: w = p (direct mixture, soft thinking)
    soft: torch.Tensor  # bool: the sampled token's own slot carries no weight
    noise: torch.Tensor  # long: NOISE_CODES
    noise_temperature: torch.Tensor  # float32 > 0 where noise is on
    seed: torch.Tensor  # long: the seed of the noise and of Multiplex's draws
    position: torch.Tensor  # long: output index j of the token sampled this step
    think_end: torch.Tensor  # long: the think-end token id, NO_THINK_END for region "all"
    cold_stop_entropy: torch.Tensor  # float32 nats; <= 0: no Cold Stop
    cold_stop_steps: torch.Tensor  # long
    family: torch.Tensor  # long: FAMILY_CODES
    swir_alpha: torch.Tensor  # float32: SwiReasoning's latent-entry blend, at t = 0
    swir_beta: torch.Tensor  # float32: its explicit-entry blend, at t = 0
    swir_window: torch.Tensor  # long: W, explicit steps before it may go latent again
    swir_max_switches: torch.Tensor  # long: M, the switch cap (0: off)
    swir_ramp_tokens: torch.Tensor  # long: the blends reach 1 at this t
    swir_answer_tokens: torch.Tensor  # long: answer budget after the termination phrase
    swir_think_end: torch.Tensor  # long: </think> (locks the row explicit when sampled)
    think_start: torch.Tensor  # long: <think> (blended in when going latent)
    swir_linebreak: torch.Tensor  # long: blended into the first latent input
    eos: torch.Tensor  # long: ends the answer budget (NO_TOKEN: none)
    swir_convergence: torch.Tensor  # [M, QUEUE] long: injected at the cap (NO_TOKEN padded)
    swir_convergence_len: torch.Tensor  # long
    swir_termination: torch.Tensor  # [M, QUEUE] long: injected past twice the cap
    swir_termination_len: torch.Tensor  # long
    selar_threshold: torch.Tensor  # float32: SeLaR's gate τ on the normalized entropy
    selar_contrast: torch.Tensor  # float32: its push λ away from the top token
    multiplex_width: torch.Tensor  # long: Multiplex's K draws
    multiplex_weighted: torch.Tensor  # bool: weights ∝ the draws' probabilities (else 1/K)
    plain_math: torch.Tensor  # bool: a math-symbol token is fed as itself
    top_k: torch.Tensor  # long: the row's own K (SeLaR's k)
    soft_top1: torch.Tensor  # bool: while thinking, emit the heaviest fed token (soft thinking)
    cold_stop_measure: torch.Tensor  # long: MEASURE_CODES
    cold_stop_abort: torch.Tensor  # bool: after thinking, L low-entropy steps end the request
    dirichlet_kept: torch.Tensor  # bool: Dirichlet over every kept token, then the top-K
    temperature: torch.Tensor  # float32: the request's temperature (1 for greedy requests)
    selar_always: torch.Tensor  # bool: SeLaR feeds its latent input at every step
    vocab_entropy: torch.Tensor  # float32, this step: the whole vocabulary's entropy (Cold Stop;
    #                              the engine computes it, NaN where the row does not need it)


class RegionState(NamedTuple):
    """What a row carries from step to step: [M] tensors."""

    thinking: torch.Tensor  # bool: still mixing (always True for region "all")
    low_entropy_steps: torch.Tensor  # long: consecutive thinking steps below the Cold Stop τ
    swir_explicit: torch.Tensor  # bool: SwiReasoning's explicit mode (rows start latent)
    swir_stay: torch.Tensor  # long: steps since its last switch
    swir_ref: torch.Tensor  # float32: the reference entropy (set at t = 0 and every switch)
    swir_locked: torch.Tensor  # bool: it sampled </think>: explicit from then on
    swir_switches: torch.Tensor  # long: latent -> explicit switches (counted under a cap)
    swir_queue: torch.Tensor  # long: 0 none, 1 convergence, 2 termination being injected
    swir_queue_pos: torch.Tensor  # long: the next token of that sequence
    swir_budget: torch.Tensor  # long: answer tokens left after the termination phrase (-1)
    ended: torch.Tensor  # bool: Cold Stop ended the request after thinking: emit EOS from now


STATE_DTYPES = {
    "thinking": torch.bool,
    "low_entropy_steps": torch.long,
    "swir_explicit": torch.bool,
    "swir_stay": torch.long,
    "swir_ref": torch.float32,
    "swir_locked": torch.bool,
    "swir_switches": torch.long,
    "swir_queue": torch.long,
    "swir_queue_pos": torch.long,
    "swir_budget": torch.long,
    "ended": torch.bool,
}
"""The tensor dtype of each ``RegionState`` field (what a row carries from step to step)."""
_FRESH_STATE = (True, 0, False, 0, 0.0, False, 0, 0, 0, -1, False)


class MethodStep(NamedTuple):
    """One step of the soft-input methods: what is fed, and what is emitted and carried."""

    ids: torch.Tensor  # [M, C] long; for MoI-style rows the last column is the emitted token
    scores: torch.Tensor  # [M, C] float32 (MoI-style rows: ``weights`` are made from these)
    beta: torch.Tensor  # [M] float32
    direct: torch.Tensor  # [M] bool
    sampled: torch.Tensor  # [M] long: the emitted token (a forced one where ``forced``)
    state: RegionState  # after this step
    forced: torch.Tensor  # [M] bool: the emitted token is not the sampled one
    weights: torch.Tensor  # [M, C] float32: h = Σ_c weights[c] · E[ids[c]] + dense · p·E
    dense: torch.Tensor  # [M] float32: the share of the full-vocabulary input p·E (swir)
    probs: torch.Tensor | None = None  # [M, V] softmax(prior): the p of p·E (swir steps only;
    #                                    [S, V], of FamilyInputs.swir_rows, when those are given)
    chosen: torch.Tensor | None = None  # [M] bool: the method chose the emitted token (soft's
    #                                     top-1, Cold Stop, EOS, SwiReasoning's injections),
    #                                     whatever was sampled


class RowSettings(NamedTuple):
    """One request's method settings as host scalars: what a slot row holds (``MethodRows``
    without the step's position, plus the row's own K and whether its prior is the sampler's);
    the two token sequences are tuples of ``QUEUE`` ids."""

    beta: float
    direct: bool
    soft: bool
    noise: int
    noise_temperature: float
    seed: int
    think_end: int
    cold_stop_entropy: float
    cold_stop_steps: int
    family: int
    swir_alpha: float
    swir_beta: float
    swir_window: int
    swir_max_switches: int
    swir_ramp_tokens: int
    swir_answer_tokens: int
    swir_think_end: int
    think_start: int
    swir_linebreak: int
    eos: int
    swir_convergence: tuple
    swir_convergence_len: int
    swir_termination: tuple
    swir_termination_len: int
    selar_threshold: float
    selar_contrast: float
    multiplex_width: int
    multiplex_weighted: bool
    plain_math: bool
    top_k: int
    sampling: bool
    soft_top1: bool
    cold_stop_measure: int
    cold_stop_abort: bool
    dirichlet_kept: bool
    temperature: float
    selar_always: bool
    greedy_recipe: bool  # greedy, yet reads SELAR_RECIPE's distribution (selar_greedy released)


_FLOAT_ROW = (
    "beta",
    "noise_temperature",
    "cold_stop_entropy",
    "swir_alpha",
    "swir_beta",
    "selar_threshold",
    "selar_contrast",
    "temperature",
)
_BOOL_ROW = (
    "direct",
    "soft",
    "sampling",
    "multiplex_weighted",
    "plain_math",
    "soft_top1",
    "cold_stop_abort",
    "dirichlet_kept",
    "selar_always",
    "greedy_recipe",
)
ROW_DTYPES = {
    name: torch.float32 if name in _FLOAT_ROW else torch.bool if name in _BOOL_ROW else torch.long
    for name in RowSettings._fields
}
"""The tensor dtype of each ``RowSettings`` field on the device."""
ROW_WIDTHS = {"swir_convergence": QUEUE, "swir_termination": QUEUE}
"""The fields that are sequences, and their length; every other field is one value."""


def _token_ids(value, used: bool) -> int:
    return int(value) if used and isinstance(value, int) else NO_TOKEN


def _queue(value, used: bool) -> tuple[tuple[int, ...], int]:
    ids = tuple(value) if used and isinstance(value, tuple) else ()
    return ids + (NO_TOKEN,) * (QUEUE - len(ids)), len(ids)


def row_settings(
    config,
    *,
    seed: int = 0,
    greedy: bool = False,
    temperature: float = 1.0,
    max_tokens: int | None = None,
) -> RowSettings:
    """The settings row of one request (a ``MoIConfig`` whose tokens are resolved to ids).

    ``greedy``: the request decodes greedily. Its sampling distribution is then a point mass on
    y, so a method that reads that distribution (soft thinking, a ``"sampling"`` prior, SeLaR,
    Multiplex) feeds exactly ``E[y]`` (beta = inf, no direct mixture, no soft slot, no family
    step) -- except SeLaR under ``selar_greedy="released"``, which then reads ``SELAR_RECIPE``'s
    distribution. ``temperature``: the request's (Cold Stop's entropy is taken at it; greedy
    requests at 1, as Soft Thinking's release sets them, ``sampling_params.py:113-116``).
    ``max_tokens``: the request's, SwiReasoning's ramp length unless the config sets one.
    Every engine builds its rows through this one function.

    >>> from mixinputs.config import MoIConfig
    >>> soft = MoIConfig(mode="soft", think_end=5)
    >>> row_settings(soft).soft, row_settings(soft, greedy=True).beta
    (True, inf)
    """
    sampling = config.prior == "sampling"
    recipe = greedy and config.mode == "selar" and config.selar_greedy == "released"
    point_mass = sampling and greedy and not recipe
    swir = config.mode == "swir"
    if recipe:
        temperature = SELAR_RECIPE[0]
    elif greedy or not temperature > 0:
        temperature = 1.0
    measure = config.stop_measure
    ramp = config.swir_ramp_tokens or max_tokens or SWIR_RAMP_TOKENS
    family = 0 if point_mass else FAMILY_CODES.get(config.mode, 0)
    convergence, convergence_len = _queue(config.swir_convergence, swir)
    termination, termination_len = _queue(config.swir_termination, swir)
    return RowSettings(
        beta=math.inf if point_mass else float(config.beta),
        direct=config.direct and not point_mass,
        soft=config.soft and not point_mass,
        noise=NOISE_CODES[config.noise],
        noise_temperature=config.noise_temperature or 1.0,
        seed=int(seed),
        think_end=int(config.think_end) if config.region == "thinking" else NO_THINK_END,
        cold_stop_entropy=config.cold_stop_entropy or 0.0,
        cold_stop_steps=config.cold_stop_steps,
        family=family,
        swir_alpha=config.swir_alpha,
        swir_beta=config.swir_beta,
        swir_window=config.swir_window,
        swir_max_switches=config.swir_max_switches or 0,
        swir_ramp_tokens=int(ramp),
        swir_answer_tokens=config.swir_answer_tokens,
        swir_think_end=_token_ids(config.think_end, swir),
        think_start=_token_ids(config.think_start, swir),
        swir_linebreak=_token_ids(config.swir_linebreak, swir),
        eos=NO_TOKEN if config.eos is None else int(config.eos),
        swir_convergence=convergence,
        swir_convergence_len=convergence_len,
        swir_termination=termination,
        swir_termination_len=termination_len,
        selar_threshold=config.selar_threshold,
        selar_contrast=config.selar_contrast,
        multiplex_width=config.multiplex_width,
        multiplex_weighted=config.multiplex_weighted,
        plain_math=config.plain_math and config.mode in ("swir", "selar"),
        top_k=0 if config.top_k is None else int(config.top_k),  # 0: the whole vocabulary
        sampling=sampling,
        soft_top1=config.soft and config.soft_emit == "top1" and not point_mass,
        cold_stop_measure=MEASURE_CODES[measure] if measure is not None else 0,
        cold_stop_abort=config.stop_abort,
        dirichlet_kept=config.dirichlet_kept and not point_mass,  # a point mass: no draws
        temperature=float(temperature),
        selar_always=config.selar_gate == "always",
        greedy_recipe=recipe,
    )


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
        name: torch.tensor([getattr(r, name) for r in settings], dtype=ROW_DTYPES[name])
        for name in MethodRows._fields
        if name not in _STEP_FIELDS
    }
    columns["position"] = torch.tensor(list(positions), dtype=torch.long)
    columns["vocab_entropy"] = torch.full((len(settings),), float("nan"))
    return MethodRows(**{n: columns[n].to(device) for n in MethodRows._fields})


def fresh_state(batch: int, device=None) -> RegionState:
    """The state of rows that have not sampled yet: inside their region, no low-entropy steps,
    SwiReasoning latent with nothing queued."""
    return RegionState(
        *(
            torch.full((batch,), value, dtype=dtype, device=device)
            for value, dtype in zip(_FRESH_STATE, STATE_DTYPES.values(), strict=True)
        )
    )


def candidate_entropy(scores: torch.Tensor) -> torch.Tensor:
    """Entropy in nats [M] of ``softmax(scores)`` over the columns with mass (-inf: none).

    >>> round(candidate_entropy(torch.tensor([[0.0, 0.0, float("-inf")]])).item(), 4)
    0.6931
    """
    logp = torch.log_softmax(scores.float(), dim=-1)
    p = logp.exp()
    return -torch.where(p > 0, p * logp, 0.0).sum(dim=-1)


class FamilyInputs(NamedTuple):
    """What the family methods read beyond the candidates (``apply_methods``' ``family``)."""

    prior: torch.Tensor  # [M, V]: each row's full distribution's logits (swir: raw;
    #                       selar, multiplex: the sampler's, cut to its top-k / top-p)
    plain_mask: torch.Tensor | None  # [V] bool: the math-symbol tokens (None: none)
    draws: int  # Multiplex draws beyond the sampled token to make (the batch's largest K - 1)
    modes: frozenset[str] | None = None  # the family modes some row runs (None: all of them);
    #                                      the others are not computed (host-known per step)
    swir_rows: torch.Tensor | None = None  # [S] long, ascending: exactly the SwiReasoning rows,
    #                                        computed alone (None: every row, masked)
    multiplex_rows: torch.Tensor | None = None  # [X] long, ascending: the Multiplex rows, alike


class KeptDraws(NamedTuple):
    """Soft thinking's Dirichlet as released, for some rows (``kept_dirichlet``): their top-K
    candidates are the top-K of Gamma draws over every token the sampler keeps."""

    ids: torch.Tensor  # [D, K] long
    scores: torch.Tensor  # [D, K] float32: log of the draws (-inf past the row's own K)
    rows: torch.Tensor | None = None  # [D] long, ascending: which rows (None: every row)


def apply_methods(
    cands: Candidates,
    rows: MethodRows,
    state: RegionState,
    family: FamilyInputs | None = None,
    kept: KeptDraws | None = None,
) -> MethodStep:
    """Every soft-input method on one step's candidates (module recipe).

    ``cands`` [M, K+1] (the sampled token last, each row already cut to its own K and, for
    sampling-prior rows, to the sampler's top-k / top-p); ``rows`` and ``state`` [M] (Cold
    Stop's whole-vocabulary rows read ``rows.vocab_entropy``); ``family``: needed when some row
    runs SwiReasoning, SeLaR or Multiplex; ``kept``: the Dirichlet rows' draws over every kept
    token (``kept_dirichlet``), needed when some row has ``dirichlet_kept``. Rows of other
    methods come out bit for bit the same with or without either. The input fed next is
    ``Σ_c step.weights[c] · E[step.ids[c]] + step.dense · softmax(prior) @ E``; the token emitted
    is ``step.sampled``.

    >>> c = Candidates(torch.tensor([[3, 5, 5]]), torch.tensor([[1.0, 1.0, float("-inf")]]))
    >>> from mixinputs.config import MoIConfig
    >>> rows = method_rows([MoIConfig(region="thinking", think_end=5)], [0], [0])
    >>> step = apply_methods(c, rows, fresh_state(1))  # y = 5 is the think-end token: plain
    >>> step.weights.tolist(), step.state.thinking.tolist()
    ([[0.0, 0.0, 1.0]], [False])
    """
    ids, scores = cands
    k = ids.shape[1] - 1
    y = ids[:, k]
    thinking = state.thinking
    # 1. Soft thinking and direct mixture weigh the top-K alone: y's slot (with mass only when y
    #    lies outside the top-K) carries none.
    scores = drop_sampled(scores, rows.direct)
    measured = scores[:, :k]  # Cold Stop's "candidates" measure: before any noise
    # 2. Soft thinking's Dirichlet as released: these rows' candidates are the top-K of their
    #    Gamma draws over every kept token (their scores are the draws already).
    drawn = torch.zeros_like(thinking)
    if kept is not None:
        drawn = rows.dirichlet_kept
        new_ids = torch.where(drawn[:, None], _put(kept.rows, ids[:, :k], kept.ids), ids[:, :k])
        drawn_scores = _put(kept.rows, scores[:, :k], kept.scores)
        new = torch.where(drawn[:, None], drawn_scores, scores[:, :k])
        ids = torch.cat([new_ids, ids[:, k:]], dim=-1)
        scores = torch.cat([new, scores[:, k:]], dim=-1)
    # 3. Noise on the mode's weights while in the region, as the scores of a direct mixture
    #    (softmax gives them back).
    beta, direct = rows.beta, rows.direct
    noisy = thinking & (rows.noise > 0)
    weights = mixture_weights(scores, beta, direct)  # [M, K+1]
    #    MoI's y in its own top-K holds weight in two columns (its own and the y slot) that would
    #    share one noise draw (noise is keyed by token): move all of y's weight into the y slot
    #    first. A soft row emitting its top-1 gives y no weight at all (the slot then holds the
    #    emitted token).
    y_col = (ids[:, :k] == ids[:, k:]) & ~rows.soft_top1[:, None]  # [M, K]
    y_mass = torch.where(y_col, weights[:, :k], 0.0).sum(dim=-1, keepdim=True)
    weights = torch.cat([weights[:, :k].masked_fill(y_col, 0.0), weights[:, k:] + y_mass], -1)
    noised = torch.where(drawn[:, None], scores, noisy_scores(weights, ids, rows))
    scores = torch.where(noisy[:, None], noised, scores)
    direct = direct | noisy
    # 4. The emitted token: a soft row in its region emits the heaviest candidate it is fed
    #    (release: the top-1 of the final weights, after noise), not the sampled one.
    top1 = thinking & rows.soft_top1
    heaviest = ids.gather(1, scores.argmax(dim=-1, keepdim=True))[:, 0]
    emitted = torch.where(top1, heaviest, y)
    # 5. Cold Stop: count consecutive low-entropy steps; at L while thinking the emitted token
    #    becomes the think-end token; at L after thinking (cold_stop_abort) the request ends:
    #    from the next step on it emits EOS.
    entropy = torch.where(
        rows.cold_stop_measure == MEASURE_CODES["candidates"],
        candidate_entropy(measured),
        rows.vocab_entropy,
    )
    low = entropy < rows.cold_stop_entropy  # τ <= 0 (no Cold Stop) and NaN: never
    counting = thinking | rows.cold_stop_abort
    low_steps = torch.where(counting & low, state.low_entropy_steps + 1, 0)
    reached = low & (low_steps >= rows.cold_stop_steps)
    cold = thinking & reached
    emitted = torch.where(cold, rows.think_end, emitted)
    ending = state.ended & (rows.eos >= 0)
    emitted = torch.where(ending, rows.eos, emitted)
    ended = state.ended | (~thinking & rows.cold_stop_abort & reached)
    ids = torch.cat([ids[:, :k], emitted.unsqueeze(-1)], dim=-1)
    # 6. Region: a row mixes until it emits its think-end token; from that token on, plain inputs.
    active = thinking & (emitted != rows.think_end)
    # 7. Outside the region: w = onehot(emitted), exactly.
    beta = torch.where(active, beta, float("inf"))
    direct = direct & active
    carry = active | (~thinking & rows.cold_stop_abort)  # the count goes on after thinking
    new_state = state._replace(
        thinking=active, low_entropy_steps=torch.where(carry, low_steps, 0), ended=ended
    )
    step = MethodStep(
        ids,
        scores,
        beta,
        direct,
        emitted,
        new_state,
        emitted != y,
        mixture_weights(scores, beta, direct),
        torch.zeros_like(rows.beta),
        chosen=top1 | cold | ending,
    )
    # 8. SwiReasoning, SeLaR, Multiplex: their own inputs replace the rows' (see each).
    if family is not None:
        step = _family(step, rows, state, family, active)
    return step


def _family(
    step: MethodStep, rows: MethodRows, state: RegionState, family: FamilyInputs, active
) -> MethodStep:
    """Each family row's step in place of the MoI-style one: each method present is computed on
    every row and taken where the row runs it, or, given its rows (``FamilyInputs.swir_rows``,
    ``multiplex_rows``), on those rows only; either way no row depends on another."""
    k = step.ids.shape[1] - 1
    y = step.ids[:, k]
    present = family.modes if family.modes is not None else FAMILY_CODES.keys()
    ids, weights = step.ids, step.weights
    if "selar" in present:  # its weights over the same candidates
        selar = (rows.family == FAMILY_CODES["selar"])[:, None]
        weights = torch.where(selar, selar_weights(step, rows, _plain(rows, y, family)), weights)
    if "multiplex" in present:  # K draws, only while in the region
        mux = ((rows.family == FAMILY_CODES["multiplex"]) & active)[:, None]
        at = family.multiplex_rows  # given: the [X, V] draws run on those rows only
        x_ids, x_w = multiplex_candidates(
            _rows_at(y, at), _rows_at(family.prior, at), _rows_at(rows, at), family.draws, k + 1
        )
        ids = torch.where(mux, _put(at, ids, x_ids), ids)
        weights = torch.where(mux, _put(at, weights, x_w), weights)
    if "swir" not in present:
        return step._replace(ids=ids, weights=weights)
    # SwiReasoning: its own columns, share of p·E, emitted token and state.
    swir = rows.family == FAMILY_CODES["swir"]
    at = family.swir_rows  # given: its [S, V] work runs on those rows only (probs [S, V])
    y_at = _rows_at(y, at)
    sw = swir_step(
        y_at, _rows_at(family.prior, at), _rows_at(rows, at), _rows_at(state, at),
        family.plain_mask, k + 1,
    )  # fmt: skip

    def put(into: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
        return torch.where(swir.view(-1, *(1,) * (into.dim() - 1)), _put(at, into, part), into)

    return step._replace(
        ids=put(ids, sw.ids),
        sampled=put(step.sampled, sw.sampled),
        state=RegionState(*(put(b, a) for a, b in zip(sw.state, step.state, strict=True))),
        forced=put(step.forced, sw.sampled != y_at),
        chosen=put(step.chosen, sw.sampled != y_at),
        weights=put(weights, sw.weights),
        dense=put(step.dense, sw.dense),
        probs=sw.probs,
    )


def _put(at: torch.Tensor | None, into: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
    """``part`` (rows ``at`` of ``into``, or all of them when None) in place of those rows."""
    return part if at is None else into.index_copy(0, at, part)


def _rows_at(t, at: torch.Tensor | None):
    """The rows ``at`` [S] of a tensor or of every field of a row NamedTuple (MethodRows,
    RegionState); all of ``t`` when ``at`` is None."""
    if at is None:
        return t
    if isinstance(t, torch.Tensor):
        return t.index_select(0, at)
    return type(t)(*(f.index_select(0, at) for f in t))


def _plain(rows: MethodRows, y: torch.Tensor, family: FamilyInputs) -> torch.Tensor:
    """[M] bool: the row feeds a math-symbol token as itself."""
    if family.plain_mask is None:
        return torch.zeros_like(rows.plain_math)
    return rows.plain_math & family.plain_mask[y.clamp(min=0)]


def selar_weights(step: MethodStep, rows: MethodRows, plain: torch.Tensor) -> torch.Tensor:
    """SeLaR: weights [M, K+1] over the candidates (github Parker-rfu/SeLaReasoning,
    ``src/generation_utils.py`` 243-300 @ 1198a74).

    The row's top-k of the sampling distribution, renormalized: ``w``; its entropy over
    ``log k`` (clamped to [0, 1]): ``Ĥ``. If ``Ĥ >= τ`` (float32) and the sampled token is not
    a math symbol, the input is ``base + λĤ(base − E[top1])`` with ``base = Σ w_i E[i]``, i.e.
    weights ``(1 + λĤ)w − λĤ·onehot(top1)``; otherwise ``E[y]``. Rows with ``selar_always``
    feed the latent input at every step, math symbols included: what the released batched loop
    feeds every row once any row of its batch gates (lines 275-303).
    """
    k = step.ids.shape[1] - 1
    top = step.scores[:, :k]  # the row's own top-k (columns past it are -inf)
    w = torch.softmax(top, dim=-1)
    entropy = -(w * torch.log(w + 1e-10)).sum(dim=-1)
    log_k = torch.log(rows.top_k.float())  # k >= 2 (config): the entropy's ceiling
    h = (entropy / log_k.clamp(min=1e-30)).clamp(0.0, 1.0)
    gate = ((h >= rows.selar_threshold) & ~plain) | rows.selar_always
    push = (rows.selar_contrast * h)[:, None]
    top1 = torch.zeros_like(w)
    top1[:, 0] = 1.0
    latent = torch.cat([(1.0 + push) * w - push * top1, torch.zeros_like(w[:, :1])], dim=-1)
    onehot_y = torch.zeros_like(latent)
    onehot_y[:, k] = 1.0
    return torch.where(gate[:, None], latent, onehot_y)


def multiplex_candidates(
    y: torch.Tensor, prior: torch.Tensor, rows: MethodRows, draws: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multiplex Thinking: ids and weights [M, width] of its K draws (github
    GMLR-Penn/Multiplex-Thinking, SGLang fork ``sampler.py`` 166-201 @ 6e524ac).

    Draw 1 is the sampled token y; draws 2..K come from the same distribution (``prior``, the
    sampler's logits cut to its top-k / top-p), with replacement, by Gumbel-max on counter-based
    uniforms keyed by (seed, output position, token id, draw): the same in any batch and after
    a preemption. Weights ∝ the draws' probabilities (duplicates count each time), or 1/K.
    """
    m, vocab = prior.shape
    device = prior.device
    cols = torch.arange(width, device=device)
    ids = y[:, None].expand(m, width).clone()
    tokens = torch.arange(vocab, device=device)
    logits = prior.float()
    for d in range(1, min(draws + 1, width)):
        draw = tokens.new_full((), _DRAWS + d)
        u = counter_uniform(rows.seed[:, None], rows.position[:, None], tokens[None], draw)
        gumbel = -torch.log(-torch.log(u))
        ids[:, d] = torch.argmax(logits + gumbel, dim=-1)
    used = cols[None] < rows.multiplex_width[:, None]
    ids = torch.where(used, ids, y[:, None])
    scores = torch.where(rows.multiplex_weighted[:, None], logits.gather(1, ids), 0.0)
    weights = torch.softmax(scores.masked_fill(~used, float("-inf")), dim=-1)
    return ids, weights


class SwirStep(NamedTuple):
    ids: torch.Tensor  # [M, C]: the emitted token, </think>, <think>, the line break, padding
    weights: torch.Tensor  # [M, C]
    dense: torch.Tensor  # [M]
    sampled: torch.Tensor  # [M] the emitted token
    state: RegionState
    probs: torch.Tensor  # [M, V] softmax(raw), the p of p·E


def swir_step(
    y: torch.Tensor,
    raw: torch.Tensor,
    rows: MethodRows,
    state: RegionState,
    plain_mask: torch.Tensor | None,
    width: int,
) -> SwirStep:
    """SwiReasoning's step (github sdc17/SwiReasoning, ``generation_utils.py`` 293-384 @
    7f3b278), on [M] rows; ``raw`` [M, V] the raw logits (temperature 1), ``y`` the sampled
    tokens.

    1. Sampling ``</think>`` locks the row explicit; a queued injection replaces the sampled
       token (one token a step); an exhausted answer budget emits EOS (the original stops
       there; an engine ends the request with it).
    2. ``H``, the entropy (nats) of softmax(raw) over the whole vocabulary. At t = 0 it sets the
       reference. Later: latent -> explicit when ``H < ref``; explicit -> latent when
       ``H > ref`` after at least W steps and not locked (both strict); a switch resets the
       reference to H and the step count to 0.
    3. The input: explicit (or locked, or a math token) feeds ``E[token]``, except on the
       switch into explicit: ``β·p·E + (1−β)·E[</think>]``; latent feeds ``p·E``, except at
       t = 0: ``0.9·p·E + 0.1·E[linebreak]``, and on the switch into latent:
       ``α·p·E + (1−α)·E[<think>]``; α and β ramp linearly from their start to 1 at t = ramp.
    4. Under a cap M, the M-th to 2M-th switches into explicit queue the convergence tokens;
       later ones queue the termination phrase and arm the answer budget.
    """
    s = state
    t = rows.position
    first = t == 0
    cap = rows.swir_max_switches > 0
    # 1. Lock, injection, end of the answer budget.
    locked = s.swir_locked | (y == rows.swir_think_end)
    sequence = torch.where(
        (s.swir_queue == 1)[:, None], rows.swir_convergence, rows.swir_termination
    )
    length = torch.where(s.swir_queue == 1, rows.swir_convergence_len, rows.swir_termination_len)
    take = cap & (s.swir_queue > 0) & (s.swir_queue_pos < length)
    queued = sequence.gather(1, s.swir_queue_pos.clamp(0, QUEUE - 1)[:, None])[:, 0]
    token = torch.where(take, queued, y)
    queue_pos = s.swir_queue_pos + take.long()
    queue = torch.where(take & (queue_pos < length), s.swir_queue, 0)
    ended = cap & (s.swir_budget == 0) & (rows.eos >= 0)
    token = torch.where(ended, rows.eos, token)
    # 2. The entropy trend.
    p = torch.softmax(raw.float(), dim=-1)
    # H = -Σ p log(max(p, 1e-12)), as the authors; in place: the same bits, two [M, V] buffers
    # fewer (xlogy is slower)
    h = p.clamp(min=1e-12).log_().mul_(p).sum(dim=-1).neg_()
    stay = torch.where(first, s.swir_stay, s.swir_stay + 1)
    to_explicit = ~first & ~s.swir_explicit & (h < s.swir_ref)
    to_latent = ~first & s.swir_explicit & (h > s.swir_ref) & (stay >= rows.swir_window) & ~locked
    explicit = (s.swir_explicit | to_explicit) & ~to_latent
    switched = to_explicit | to_latent
    stay = torch.where(switched, 0, stay)
    ref = torch.where(first | switched, h, s.swir_ref)
    switches = s.swir_switches + (cap & to_explicit).long()
    # 3. The input: weights on [token, </think>, <think>, linebreak] and the share of p·E.
    plain = torch.zeros_like(first)
    if plain_mask is not None:
        plain = rows.plain_math & plain_mask[token.clamp(min=0)]
    normal = explicit | locked | plain
    # t / max_new_tokens (lines 341, 347); the loop never passes t = max_new_tokens, an engine
    # given a shorter ramp than the request might: the blends stop at 1.
    ramp = (t.double() / rows.swir_ramp_tokens.double()).clamp(max=1.0)
    alpha = (rows.swir_alpha + (1 - rows.swir_alpha) * ramp).float()
    beta = (rows.swir_beta + (1 - rows.swir_beta) * ramp).float()
    blend_end = normal & to_explicit
    latent_first = ~normal & first
    latent_start = ~normal & ~first & to_latent
    one, zero = torch.ones_like(alpha), torch.zeros_like(alpha)
    dense = torch.where(
        blend_end,
        beta,
        torch.where(
            normal, zero, torch.where(latent_first, 0.9, torch.where(latent_start, alpha, one))
        ),
    )
    w_token = torch.where(normal & ~blend_end, one, zero)
    w_end = torch.where(blend_end, 1.0 - beta, zero)
    w_start = torch.where(latent_start, 1.0 - alpha, zero)
    w_break = torch.where(latent_first, torch.full_like(alpha, 0.1), zero)
    columns = [token, rows.swir_think_end, rows.think_start, rows.swir_linebreak]
    ids = torch.stack(columns, dim=-1).clamp(min=0)  # unset tokens weigh 0: any valid id
    weights = torch.stack([w_token, w_end, w_start, w_break], dim=-1)
    pad = width - ids.shape[1]  # the engine's candidate width
    ids = torch.cat([ids, token[:, None].expand(-1, pad)], dim=-1)
    weights = torch.cat([weights, weights.new_zeros(weights.shape[0], pad)], dim=-1)
    # 4. The cap: queue the convergence tokens or the termination phrase for the next steps.
    arm = cap & ~first & to_explicit
    converge = arm & (switches >= rows.swir_max_switches) & (switches <= 2 * rows.swir_max_switches)
    terminate = arm & (switches > 2 * rows.swir_max_switches)
    queue = torch.where(converge, 1, torch.where(terminate, 2, queue))
    queue_pos = torch.where(converge | terminate, 0, queue_pos)
    budget = torch.where(terminate, rows.swir_answer_tokens, s.swir_budget)
    budget = torch.where(cap & ~first & (budget >= 0), budget - 1, budget)
    new_state = s._replace(
        swir_explicit=explicit,
        swir_stay=stay,
        swir_ref=ref,
        swir_locked=locked,
        swir_switches=switches,
        swir_queue=queue,
        swir_queue_pos=queue_pos,
        swir_budget=budget,
    )
    return SwirStep(ids, weights, dense, token, new_state, p)


def dense_inputs(probs: torch.Tensor, embedding: torch.Tensor, min_rows: int = 8) -> torch.Tensor:
    """``probs @ embedding``: [M, D] float32, SwiReasoning's latent input (``probs`` [M, V] the
    softmax of the raw logits, ``MethodStep.probs``).

    The product runs on at least ``min_rows`` rows (zero rows pad it): a matrix library picks a
    matrix-vector kernel for one or two rows, whose sums differ from its matrix kernel's in the
    last bits, so padding keeps each row's result independent of how many rows the batch has.
    Engines pass a fixed row count. The probabilities are cast to the embedding's dtype (as the
    authors' bf16 loop does), and the products accumulate in float32.
    """
    m = probs.shape[0]
    rows = max(m, min_rows)
    if rows > m:
        probs = torch.cat([probs, probs.new_zeros(rows - m, probs.shape[1])])
    return torch.mm(probs.to(embedding.dtype), embedding)[:m].float()


def mix_step_inputs(step: MethodStep, embedding: torch.Tensor, dense: torch.Tensor | None):
    """The input [M, D] in the embedding's dtype: ``Σ w E[ids]`` plus ``step.dense · dense`` where
    ``dense`` (``dense_inputs``) is given, accumulated in float32."""
    if dense is None:
        return mix_candidates(step.ids, step.weights, embedding)
    mixed = (step.weights.float().unsqueeze(-1) * embedding[step.ids].float()).sum(dim=1)
    return (mixed + step.dense[:, None] * dense).to(embedding.dtype)


def mask_top_k_top_p(
    logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor
) -> torch.Tensor:
    """``logits`` [M, V] with the tokens a sampler's top-k (``top_k`` [M], 0 = off) and top-p
    (``top_p`` [M], 1 = off) cut set to -inf, over the whole vocabulary (the rule of
    ``sampling_prior_masks``: ties at the k-th value kept; a token is kept while the mass of
    the tokens before it is below p)."""
    values, _ = torch.sort(logits.float(), dim=-1, descending=True)
    vocab = logits.shape[-1]
    k = torch.where(top_k > 0, top_k.clamp(max=vocab), vocab)
    kth = values.gather(1, (k - 1)[:, None])
    kept = values >= kth
    lse = torch.logsumexp(values.masked_fill(~kept, float("-inf")), dim=-1, keepdim=True)
    probs = torch.exp(values - lse).masked_fill(~kept, 0.0)
    before = torch.cumsum(probs, dim=-1) - probs
    kept = kept & ((before < top_p[:, None]) | (torch.arange(vocab, device=logits.device) == 0))
    last = values.masked_fill(~kept, float("inf")).amin(dim=-1, keepdim=True)
    return logits.masked_fill(logits.float() < last, float("-inf"))


def noisy_scores(weights: torch.Tensor, ids: torch.Tensor, rows: MethodRows) -> torch.Tensor:
    """Scores [M, C] whose softmax is the noised ``weights`` [M, C] (zero weights stay zero).

    Dirichlet: ``log Gamma(w / τ)`` per candidate; Gumbel: ``(log w + g) / τ``. Noise of row b,
    candidate token t is drawn from ``(seed[b], position[b], t)`` only.

    >>> from mixinputs.config import MoIConfig
    >>> rows = method_rows([MoIConfig(noise="gumbel")], [3], [11])
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
    u = counter_uniform(seed, pos, ids[:, :, None], ids.new_zeros((1, 1, 1)))
    gumbel = (log_w - torch.log(-torch.log(u[..., 0]))) / tau
    # Dirichlet(alpha = w / tau), i.e. Dirichlet(α·w) with α = 1/τ: normalized Gamma draws.
    dirichlet = counter_log_gamma(w / tau, rows.seed, rows.position, ids)
    return torch.where((rows.noise == NOISE_CODES["gumbel"])[:, None], gumbel, dirichlet)


def counter_log_gamma(
    alpha: torch.Tensor, seed: torch.Tensor, position: torch.Tensor, ids: torch.Tensor
) -> torch.Tensor:
    """log of Gamma(``alpha``) draws [M, C] (-inf where alpha = 0), token ``ids[b, c]``'s draw
    keyed by (``seed[b]``, ``position[b]``, the token): normalized over any set of tokens they
    are a Dirichlet draw. ``Gamma(a) = Gamma(a + 1)·U^(1/a)``, in log space so small shapes
    neither underflow nor divide 0 by 0.

    >>> a = torch.tensor([[0.5, 0.0]])
    >>> g = counter_log_gamma(a, torch.tensor([1]), torch.tensor([0]), torch.tensor([[7, 8]]))
    >>> bool(torch.isfinite(g[0, 0])), g[0, 1].item()
    (True, -inf)
    """
    seed, pos = seed[:, None, None], position[:, None, None]
    log_gamma = _log_gamma_plus_one(alpha, seed, pos, ids)
    draw = ids.new_full((1, 1, 1), 3 * _GAMMA_TRIES)
    boost = counter_uniform(seed, pos, ids[:, :, None], draw)[..., 0]
    return torch.where(alpha > 0, log_gamma + torch.log(boost) / alpha, float("-inf"))


def kept_dirichlet(
    logits: torch.Tensor, rows: MethodRows, width: int, chunk: int = KEPT_CHUNK
) -> KeptDraws:
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


def vocab_entropy(
    logits: torch.Tensor, temperature: torch.Tensor, normalized: torch.Tensor
) -> torch.Tensor:
    """Cold Stop's entropy as released: [M] float32, the entropy (nats) of softmax(logits / T)
    over the whole vocabulary, before top-k / top-p / min-p, ``-Σ p log max(p, 1e-12)`` (Soft
    Thinking @ b97407c, ``sglang/srt/layers/sampler.py:141``); where ``normalized`` [M], divided
    by log V (Randomized Soft Thinking @ 4a95b5a, ``sampler.py:175-176``). ``logits`` [M, V]
    raw, ``temperature`` [M] > 0.

    >>> vocab_entropy(torch.zeros(1, 4), torch.ones(1), torch.tensor([True])).tolist()
    [1.0]
    """
    p = torch.softmax(logits.float() / temperature.float()[:, None], dim=-1)
    h = -(p * p.clamp(min=1e-12).log()).sum(dim=-1)
    return torch.where(normalized, h / math.log(logits.shape[-1]), h)


def _log_gamma_plus_one(alpha, seed, pos, ids) -> torch.Tensor:
    """log of a Gamma(alpha + 1) draw [M, C] (Marsaglia-Tsang, shape >= 1): a fixed number of
    tries, one at a time ([M, C, 3] uniforms each: the memory of one), the first accepted kept
    (0 if none is: p <= 0.05 per try). ``seed`` and ``pos`` [M, 1, 1], ``ids`` [M, C]."""
    d = alpha + 1.0 - 1.0 / 3.0  # [M, C]
    c = 1.0 / torch.sqrt(9.0 * d)
    log_v = torch.zeros_like(d)
    found = torch.zeros_like(d, dtype=torch.bool)
    three = torch.arange(3, device=alpha.device).reshape(1, 1, 3)
    for t in range(_GAMMA_TRIES):  # a fixed count, not data-dependent
        u = counter_uniform(seed, pos, ids[:, :, None], three + 3 * t)  # [M, C, 3]
        z = torch.sqrt(-2.0 * torch.log(u[..., 0])) * torch.cos(2.0 * math.pi * u[..., 1])
        v = (1.0 + c * z) ** 3
        lv = torch.log(v.clamp(min=1e-30))
        accept = (v > 0) & (torch.log(u[..., 2]) < 0.5 * z * z + d - d * v + d * lv)
        log_v = torch.where(accept & ~found, lv, log_v)
        found = found | accept
    return torch.log(d) + log_v


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
    plain_mask: torch.Tensor | None = None,
    vocab_logits: torch.Tensor | None = None,
) -> tuple[torch.Tensor, MethodStep, torch.Tensor]:
    """The whole reference step for every method: (h [M, D], the step, weights [M, K+1]).

    ``prior`` [M, V] the logits each row mixes from (raw, or the sampler's for soft / sampling
    rows, already cut to the sampler's top-k / top-p: soft thinking's Dirichlet rows draw over
    the tokens it keeps); ``sampled`` [M]; ``embedding`` [V, D]; ``plain_mask`` [V] bool: the
    math-symbol tokens (SwiReasoning, SeLaR); ``vocab_logits`` [M, V]: the raw logits, whose
    entropy at each row's temperature Cold Stop reads (``vocab_entropy``). Without them a row
    keeps ``rows.vocab_entropy`` (what an engine measured), and where that is NaN the entropy of
    ``prior`` itself (taken as already at the row's temperature) is used.

    >>> E = torch.eye(3)
    >>> from mixinputs.config import MoIConfig
    >>> rows = method_rows([MoIConfig(mode="soft", top_k=2, think_end=9)], [0], [0])
    >>> h, step, w = mix_step(torch.tensor([[0.0, 0.0, -9.0]]), torch.tensor([2]), E, rows,
    ...                       fresh_state(1), top_k=2)
    >>> h.tolist(), step.sampled.tolist()  # the concept token over the top 2; it emits the top 1
    ([[0.5, 0.5, 0.0]], [0])
    """
    cands = candidates_from_logits(prior, sampled, top_k, row_top_k)
    normalized = rows.cold_stop_measure == MEASURE_CODES["vocab_normalized"]
    if vocab_logits is not None:
        rows = rows._replace(
            vocab_entropy=vocab_entropy(vocab_logits, rows.temperature, normalized)
        )
    elif bool(rows.vocab_entropy.isnan().any()):  # host syncs: the reference, not an engine step
        own = vocab_entropy(prior, torch.ones_like(rows.temperature), normalized)
        rows = rows._replace(
            vocab_entropy=torch.where(rows.vocab_entropy.isnan(), own, rows.vocab_entropy)
        )
    kept = None
    if bool((rows.dirichlet_kept & (rows.noise == NOISE_CODES["dirichlet"])).any()):
        kept = kept_dirichlet(prior, rows, top_k)
    family = None
    codes = set(rows.family.tolist())
    modes = frozenset(mode for mode, code in FAMILY_CODES.items() if code and code in codes)
    if modes:
        family = FamilyInputs(prior, plain_mask, int(rows.multiplex_width.max()) - 1, modes)
    step = apply_methods(cands, rows, state, family, kept)
    dense = dense_inputs(step.probs, embedding) if step.probs is not None else None
    return mix_step_inputs(step, embedding, dense), step, step.weights
