"""Entropy and MoI's posterior-mean weights over the candidates.

``p = softmax(scores)`` over the candidates (temperature 1); ``H = entropy(p) / log(n)``, n the
candidates with non-zero probability; ``w = (H·p + (β+1−H)·onehot(y)) / (β+1)`` written as
``t = 1/(β+1); w = t·H·p + (1 − t·H)·onehot(y)``, exact at β = inf (``w = onehot``). Direct
mixture: ``w = p``.
"""

from __future__ import annotations

import torch


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


def candidate_entropy(scores: torch.Tensor) -> torch.Tensor:
    """Entropy in nats [M] of ``softmax(scores)`` over the columns with mass (-inf: none).

    >>> round(candidate_entropy(torch.tensor([[0.0, 0.0, float("-inf")]])).item(), 4)
    0.6931
    """
    logp = torch.log_softmax(scores.float(), dim=-1)
    p = logp.exp()
    return -torch.where(p > 0, p * logp, 0.0).sum(dim=-1)
