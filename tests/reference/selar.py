"""SeLaR: github.com/Parker-rfu/SeLaReasoning ``generate_selar`` (``src/generation_utils.py``
151-341 @ 1198a745b117f4361fbb7c10db438e34d1550c9f).

A transcription of the authors' step rule (``tests/reference``'s conventions).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tests.reference.sampling import authors_sampling_probs


@dataclass(frozen=True)
class SelarParams:
    """Defaults are scripts/run.py's (lines 247-262): k 3, tau 0.5, and the sampling recipe
    temperature 0.6 / top_k 20 / top_p 0.95 / min_p 0. The contrastive weight is never passed
    by run.py, so it is the function default 1.0 (line 180). The function's own defaults
    (k 5, tau 0.3, lines 177-178) are NOT what the released runs used."""

    topk: int = 3
    entropy_threshold: float = 0.5
    contrastive_weight: float = 1.0
    temperature: float = 0.6
    top_k: int = 20
    top_p: float = 0.95
    min_p: float = 0.0
    math_ids: frozenset[int] = frozenset()

    def sampling_probs(self, logits: torch.Tensor) -> torch.Tensor:
        return authors_sampling_probs(logits, self.temperature, self.top_k, self.top_p, self.min_p)


def selar_reference_step(
    logits: torch.Tensor,
    sampled: int,
    state: None,
    params: SelarParams,
    embedding: torch.Tensor,
) -> tuple[torch.Tensor, None, int]:
    """One step of ``generate_selar`` for one row; SeLaR carries no state between steps.

    Everything is read off the SAMPLING distribution (after temperature and the filters,
    lines 243-245), restricted to its top-k and renormalised. The rule applies to the whole
    generation: the code has no notion of ``</think>``.

    Batch quirk of the original (lines 275-300, 221-232): when ANY row of the batch gates, the
    contrastive mixture is built and fed for EVERY row, gated or not. This transcription is the
    batch-of-one behaviour, which is the rule the paper and README describe.
    """
    p = params
    probs = p.sampling_probs(logits).unsqueeze(0)  # [1, V], lines 243-245
    topk_probs, topk_indices = torch.topk(probs, k=p.topk, dim=-1)  # line 248

    # Lines 251-255: entropy of the renormalised head, over its ceiling log(k), in [0, 1].
    max_entropy = torch.log(torch.tensor(float(p.topk)))
    probs_sum = topk_probs.sum(dim=-1, keepdim=True)
    probs_normalized = topk_probs / (probs_sum + 1e-10)
    log_probs = torch.log(probs_normalized + 1e-10)
    entropy = -torch.sum(probs_normalized * log_probs, dim=-1)
    normalized_entropy = torch.clamp(entropy / max_entropy, 0.0, 1.0)

    # Lines 265-272: NOT strict (>=), and compared in float32 -- i.e. against float32(tau),
    # so tau = 0.7 admits 0.69999998808. A sampled math token keeps the step discrete.
    token = int(sampled)
    force_discrete = token in p.math_ids
    is_high_entropy = bool(normalized_entropy >= p.entropy_threshold) and not force_discrete

    if not is_high_entropy:
        return embedding[token], None, token  # line 300

    # Lines 277-298: the head mixture, pushed away from the top-1 embedding by weight·H.
    topk_embeddings = embedding[topk_indices]  # [1, k, D]
    base_soft_embed = torch.sum(probs_normalized.unsqueeze(-1) * topk_embeddings, dim=1)
    top1_embed = topk_embeddings[:, 0, :]
    diff_direction = base_soft_embed - top1_embed
    diff_norm = torch.norm(diff_direction, dim=-1, keepdim=True) + 1e-10
    diff_unit = diff_direction / diff_norm
    contrastive_strength = p.contrastive_weight * normalized_entropy.unsqueeze(-1)
    # Algebraically base + w·H·(base - top1); the unit·norm round trip is kept for float parity.
    soft = base_soft_embed + contrastive_strength * diff_unit * diff_norm
    return soft.squeeze(0), None, token


def selar_batch_reference_step(
    logits: torch.Tensor,
    params: SelarParams,
    embedding: torch.Tensor,
    sampled: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of ``generate_selar`` for a whole batch ``logits`` [B, V], as released: (inputs
    fed next [B, D], tokens [B]). ``sampled`` [B]: the tokens ``torch.multinomial`` drew (None:
    ``do_sample=False``, the argmax of the same filtered distribution, lines 257-261 -- greedy
    SeLaR still gates on the T / top-k / top-p distribution).

    Lines 275-300: when ANY row of the batch gates, every row is fed its contrastive latent
    input, gated or not, math token or not (one ``inputs_embeds`` tensor for the batch, lines
    221-232); otherwise every row gets ``E[token]``."""
    p = params
    probs = torch.stack([p.sampling_probs(row) for row in logits])  # [B, V], lines 243-245
    topk_probs, topk_indices = torch.topk(probs, k=p.topk, dim=-1)
    max_entropy = torch.log(torch.tensor(float(p.topk)))
    probs_normalized = topk_probs / (topk_probs.sum(dim=-1, keepdim=True) + 1e-10)
    entropy = -torch.sum(probs_normalized * torch.log(probs_normalized + 1e-10), dim=-1)
    normalized_entropy = torch.clamp(entropy / max_entropy, 0.0, 1.0)
    tokens = probs.argmax(dim=-1) if sampled is None else sampled.long()
    math = torch.tensor([int(t) in p.math_ids for t in tokens.tolist()])
    is_high_entropy = (normalized_entropy >= p.entropy_threshold) & ~math
    if not bool(is_high_entropy.any()):
        return embedding[tokens], tokens
    topk_embeddings = embedding[topk_indices]  # [B, k, D]
    base = torch.sum(probs_normalized.unsqueeze(-1) * topk_embeddings, dim=1)
    diff = base - topk_embeddings[:, 0, :]
    norm = torch.norm(diff, dim=-1, keepdim=True) + 1e-10
    strength = p.contrastive_weight * normalized_entropy.unsqueeze(-1)
    return base + strength * (diff / norm) * norm, tokens
