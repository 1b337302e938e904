"""The sampling filter SwiReasoning and SeLaR share (both ``generation_utils.py`` lines 23-39).

A transcription of the authors' step rule (``tests/reference``'s conventions).
"""

from __future__ import annotations

import torch


def authors_sampling_filter(
    logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0
) -> torch.Tensor:
    """``apply_sampling_filter`` on one row ``[V]``; masked logits become -inf.

    Kept as a batch of one so each op is the one the authors call. Note their min_p is an
    ABSOLUTE floor (``probs < min_p``), not vLLM's peak-relative one; their top_k keeps every
    token tied with the k-th value; top_p keeps the token that crosses the threshold.
    """
    x = logits.unsqueeze(0)
    if top_k > 0:
        kth = torch.topk(x, top_k, dim=-1).values[:, -1].unsqueeze(-1)
        x = torch.where(x < kth, float("-inf"), x)
    if top_p < 1.0:
        sorted_logits, sorted_indices = torch.sort(x, descending=True, dim=-1)
        cumulative = torch.cumsum(torch.softmax(sorted_logits, dim=-1), dim=-1)
        sorted_mask = cumulative > top_p
        sorted_mask[..., 1:] = sorted_mask[..., :-1].clone()
        sorted_mask[..., 0] = False
        remove = sorted_mask.scatter(1, sorted_indices, sorted_mask)
        x = x.masked_fill(remove, float("-inf"))
    if min_p > 0:
        probs = torch.softmax(x, dim=-1)
        x = torch.where(probs < min_p, float("-inf"), x)
    return x.squeeze(0)


def authors_sampling_probs(
    logits: torch.Tensor,
    temperature: float = 0.6,
    top_k: int = 20,
    top_p: float = 0.95,
    min_p: float = 0.0,
) -> torch.Tensor:
    """The distribution both loops sample the visible token from (defaults: their run.py)."""
    return torch.softmax(authors_sampling_filter(logits / temperature, top_k, top_p, min_p), -1)
