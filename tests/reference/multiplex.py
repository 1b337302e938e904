"""Multiplex Thinking: github.com/GMLR-Penn/Multiplex-Thinking, the bundled SGLang fork
(``sglang-0.4.9.post6/sglang/srt/layers/sampler.py`` 166-201, ``vocab_parallel_embedding.py``
489-510, ``managers/schedule_batch.py`` 815-843 @ 6e524ac7aa7dd6ca71482f03b0a3e29d303498b7).

A transcription of the authors' step rule (``tests/reference``'s conventions).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MultiplexParams:
    """Released evaluation/rollout settings (scripts/train.sh 183-303, ppo_trainer.yaml 93-112,
    rollout.yaml 130): width K = 3, temperature 1.0, top_p 1.0, top_k -1 (off), sampling with
    replacement, no Dirichlet/Gumbel noise (dirichlet_alpha 1e20), weights p_i / sum p_j
    (``enable_unweighting=False``; the README's example passes True, i.e. a plain average)."""

    think_end_id: int
    width: int = 3
    temperature: float = 1.0
    top_k: int = -1
    top_p: float = 1.0
    weighted: bool = True

    def sampling_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """The distribution each of the K draws comes from (flashinfer joint top-k/top-p).

        Approximates flashinfer's kernel at ties and at the top-p boundary; with the released
        top_k -1 / top_p 1.0 it is exactly softmax(logits / T).
        """
        probs = torch.softmax(logits / self.temperature, dim=-1)
        keep = torch.ones_like(probs, dtype=torch.bool)
        if 0 < self.top_k < probs.shape[-1]:
            keep &= probs >= torch.topk(probs, self.top_k).values[-1]
        if self.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
            keep &= torch.zeros_like(keep).scatter(0, order, before < self.top_p)
        kept = torch.where(keep, probs, torch.zeros_like(probs))
        return kept / kept.sum()


@dataclass(frozen=True)
class MultiplexState:
    # post_init_soft_thinking_mode (sampling_params.py 217-218): every request starts in
    # thinking; DeepSeek-R1-Distill's template opens "<think>\n" in the prompt.
    in_thinking: bool = True


def _weighted_forward(weights: torch.Tensor, ids: torch.Tensor, embedding: torch.Tensor):
    # vocab_parallel_embedding.py 504-509: renormalise (clamped) and sum in the table's dtype.
    weights = weights / torch.clamp(weights.sum(dim=-1, keepdim=True), min=1e-8)
    return torch.sum(weights.unsqueeze(-1) * embedding[ids], dim=0, dtype=embedding.dtype)


def multiplex_reference_step(
    logits: torch.Tensor,
    samples: torch.Tensor,
    state: MultiplexState,
    params: MultiplexParams,
    embedding: torch.Tensor,
) -> tuple[torch.Tensor, MultiplexState, int]:
    """One inference step for one row.

    ``samples`` ``[K]``: K independent draws (with replacement) from
    :meth:`MultiplexParams.sampling_probs`; duplicates are kept and weigh twice. The visible
    token is ``samples[0]`` (sampler.py 201). Outside thinking the row decodes plainly: pass the
    one ordinary sample as ``samples[0]`` (the rest are ignored).
    """
    p = params
    ids = samples.long()
    if state.in_thinking:
        # sampler.py 182-185: weights are the temperature probabilities of the draws, taken
        # BEFORE the top-k/top-p renormalisation (equal after the division below), or ones.
        probs = torch.softmax(logits / p.temperature, dim=-1)
        weights = probs.gather(0, ids) if p.weighted else torch.ones(ids.shape[0])
        weights = weights / weights.sum(dim=-1, keepdim=True)
        token = int(ids[0])
        if token == p.think_end_id:
            # schedule_batch.py 825-831: the draw that is </think> ends thinking, and the
            # next input is the one-hot </think> -- only the visible draw is checked.
            one_hot = torch.zeros_like(weights)
            one_hot[0] = 1.0
            end_ids = torch.zeros_like(ids)
            end_ids[0] = p.think_end_id
            return _weighted_forward(one_hot, end_ids, embedding), MultiplexState(False), token
        return _weighted_forward(weights, ids, embedding), state, token

    # sampler.py 187-197 and schedule_batch.py 832-836: one-hot on the plain sample.
    token = int(ids[0])
    one_hot = torch.zeros(ids.shape[0])
    one_hot[0] = 1.0
    plain_ids = torch.zeros_like(ids)
    plain_ids[0] = token
    return _weighted_forward(one_hot, plain_ids, embedding), state, token
