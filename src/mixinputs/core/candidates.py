"""Candidates: the top-K of a distribution plus the sampled token y as one extra slot, and the
sampler's own top-k / top-p masks over them.

``ids = [topk_ids..., y]``. When y is already in the top-K the extra slot gets a score of -inf
(zero probability), so y is never counted twice. Shapes stay fixed at K + 1. A row can be cut to
its own K inside the engine's one width (``restrict_to_row_k``), so its result never depends on
the rest of the batch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from mixinputs.methods.base import DEFAULT_TOP_K, parse_top_k


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


def drop_sampled(scores: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``scores`` [B, K+1] with the sampled token's slot (the last) at -inf where ``rows`` [B]
    (bool): direct mixture and soft thinking weigh the top-K alone, whatever y is.

    >>> drop_sampled(torch.tensor([[1.0, 0.0, 2.0]]), torch.tensor([True])).tolist()
    [[1.0, 0.0, -inf]]
    """
    k = scores.shape[1] - 1
    last = torch.where(rows, scores.new_full((), float("-inf")), scores[:, k])
    return torch.cat([scores[:, :k], last.unsqueeze(-1)], dim=-1)


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
