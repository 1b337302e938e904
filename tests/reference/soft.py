"""Soft Thinking (eric-ai-lab/Soft-Thinking @ b97407c) and Randomized Soft Thinking
(WJMacro/Randomized-Soft-Thinking @ 4a95b5a): the sampler step and ``update_topk_info``.

A transcription of the authors' step rule (``tests/reference``'s conventions).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

ST = "sglang_soft_thinking_pkg/python/sglang/srt"  # both forks keep their changes under it
RELEASES = ("soft_thinking", "randomized")


@dataclass(frozen=True)
class SoftThinkingParams:
    """One request's settings, as ``run_sglang_softthinking.py`` passes them.

    ``release``: ``"soft_thinking"`` (b97407c) or ``"randomized"`` (4a95b5a). Their sampler
    steps and ``update_topk_info`` differ in four places, each named where it applies: the
    entropy is divided by log V (randomized ``layers/sampler.py:175-176``), Dirichlet noise is
    cut to ``probs > 1e-7`` (223, 229-230), the top-K is always re-sorted (241-243), and Cold Stop
    neither resets its count when it fires nor counts after thinking, so never aborts
    (``managers/schedule_batch.py:743-769``).

    Defaults: Soft Thinking's released math runs (``scripts/st/qwq32b_st_math.sh``): max_topk 10,
    T 0.6, top-p 0.95, top-k 30, min-p 0.001, after thinking top-p 0.95, top-k 30, min-p 0;
    Cold Stop off (``--early_stopping_entropy_threshold`` 0.0 by default, ``run_sglang_softthinking
    .py:49``), L 256 (50); ``dirichlet_alpha`` 1.0 (54), ``gumbel_softmax_temperature`` 1.0
    (55; the Gumbel script passes 0.5). Randomized Soft Thinking's scripts: max_topk 15,
    ``--dirichlet_alpha 4.0`` (``scripts/st/st_with_dirichlet.sh:13, 31``),
    ``--gumbel_temperature 0.5`` (``st_with_gumbel.sh:16, 35``). A greedy request is T 1 and
    top-k 1 (``sampling/sampling_params.py:113-116``) in a batch that is not all greedy.
    """

    think_end_id: int
    release: str = "soft_thinking"
    max_topk: int = 10
    temperature: float = 0.6
    top_k: int = 30  # 1 << 30 (every token) stands for the release's -1
    top_p: float = 0.95
    min_p: float = 0.001
    after_thinking_top_k: int = 30
    after_thinking_top_p: float = 0.95
    after_thinking_min_p: float = 0.0
    early_stopping_entropy_threshold: float = 0.0
    early_stopping_length_threshold: int = 256
    noise: str = "none"  # "dirichlet" or "gumbel"
    dirichlet_alpha: float = 1.0
    gumbel_temperature: float = 0.5


@dataclass(frozen=True)
class SoftThinkingState:
    """One request's carried state (``Req`` fields, ``schedule_batch.py:454, 578-600``)."""

    soft_thinking_mode: bool = True  # post_init_soft_thinking_mode (sampling_params.py:209-211)
    low_entropy_steps: int = 0
    to_abort: bool = False
    finished: str | None = None  # "abort": check_finished saw to_abort (schedule_batch.py 682-686)
    cold_stops: int = 0  # not the release's: how often Cold Stop forced </think> (for tests)


class CounterDraws:
    """Where the releases draw from torch's generator (``torch.distributions.Gamma(...).sample()``,
    ``torch.empty_like(...).exponential_()``, ``F.gumbel_softmax``), this transcription takes the
    numbers mixinputs' engines draw instead -- ``mixinputs.mixing.counter_uniform`` keyed by
    (request seed, output position, token id, draw) -- so a transcription and an engine can be
    compared token for token, as the Multiplex transcription does with its K draws
    (``tests/faithfulness.py`` passes ``multiplex_candidates``' draws). The distributions are the
    releases': Gamma(concentration, 1) draws (Marsaglia-Tsang, ``counter_log_gamma``) and
    Gumbel(0, 1) = -log(-log U) noise, one per token."""

    def __init__(self, seed: int, position: int):
        self.seed = torch.tensor([seed])
        self.position = torch.tensor([position])

    def gamma(self, concentration: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """[V] Gamma(concentration) draws of tokens ``ids`` [V] (0 where concentration is 0)."""
        from mixinputs.mixing import counter_log_gamma

        log_g = counter_log_gamma(concentration[None].float(), self.seed, self.position, ids[None])
        return torch.exp(log_g[0])

    def gumbel(self, ids: torch.Tensor) -> torch.Tensor:
        """[K] Gumbel(0, 1) noise of tokens ``ids`` [K]."""
        from mixinputs.mixing import counter_uniform

        u = counter_uniform(self.seed, self.position, ids, torch.tensor(0))
        return -torch.log(-torch.log(u))


def _top_k_renorm(probs: torch.Tensor, k: int) -> torch.Tensor:
    # flashinfer's top_k_renorm_prob (sgl_kernel/sampling.py 21-49): keep the k largest (ties
    # at the k-th value kept), zero the rest, renormalize.
    if k < probs.shape[-1]:
        kth = torch.topk(probs, k).values[-1]
        probs = torch.where(probs >= kth, probs, torch.zeros_like(probs))
    return probs / probs.sum()


def _top_p_renorm(probs: torch.Tensor, p: float) -> torch.Tensor:
    # flashinfer's top_p_renorm_prob (69-97): the most likely tokens until their mass reaches p
    # (the one that crosses it kept), renormalized.
    if p >= 1.0:
        return probs
    sorted_probs, order = torch.sort(probs, descending=True)
    before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
    keep = torch.zeros_like(probs, dtype=torch.bool).scatter(0, order, before < p)
    kept = torch.where(keep, probs, torch.zeros_like(probs))
    return kept / kept.sum()


def soft_thinking_sampler_step(
    logits: torch.Tensor,
    soft_thinking_mode: bool,
    params: SoftThinkingParams,
    draws: CounterDraws,
    sampled_after_thinking: int,
) -> tuple[torch.Tensor, torch.Tensor, float, int]:
    """``Sampler.forward`` with ``enable_soft_thinking`` on one row: (topk_probs [K],
    topk_indices [K], entropy, next token id).

    Soft Thinking ``layers/sampler.py`` 119-204; Randomized Soft Thinking 139-273 (the same
    steps; differences named inline). ``logits`` [V] are the model's; ``sampled_after_thinking``
    is the token ``torch.multinomial(probs)`` drew for a row past its thinking (the caller
    draws it; it is ignored while thinking: the row emits ``topk_indices[0]``, line 204 / 273).
    """
    p = params
    # 120-122: temperature, softmax over the whole vocabulary.
    probs = torch.softmax(logits.float() / p.temperature, dim=-1)
    # 141: Cold Stop's entropy, before any top-k / top-p / min-p.
    entropy = -torch.sum(probs * torch.log(probs.clamp(min=1e-12)), dim=-1)
    if p.release == "randomized":  # randomized 175-176: over log V
        entropy = entropy / torch.log(torch.tensor(probs.shape[-1], dtype=probs.dtype))
    # 142-158: the thinking or after-thinking top-k, top-p, then min-p (relative to the max).
    soft = soft_thinking_mode
    top_k = p.top_k if soft else p.after_thinking_top_k
    top_p = p.top_p if soft else p.after_thinking_top_p
    min_p = p.min_p if soft else p.after_thinking_min_p
    probs = _top_p_renorm(_top_k_renorm(probs, top_k), top_p)
    if min_p > 0:
        probs = probs.masked_fill(probs < probs.max() * min_p, 0.0)
        probs = probs / probs.sum()
    ids = torch.arange(probs.shape[-1])
    # 160-166 (randomized 220-230): Dirichlet(alpha * p) over every kept token, soft rows only.
    if p.noise == "dirichlet" and soft:
        gamma = draws.gamma(probs * p.dirichlet_alpha, ids)
        probs_new = gamma / gamma.sum(dim=-1, keepdim=True)
        if p.release == "randomized":  # 223, 229-230: only tokens above 1e-7 keep their draw
            probs_new = probs_new * (probs > 1e-7)
            probs_new = probs_new / probs_new.sum(dim=-1, keepdim=True)
        probs = probs_new
    # 168-170 (232-234): the top max_topk, renormalized.
    topk_probs, topk_indices = torch.topk(probs, k=p.max_topk, dim=-1)
    topk_probs = topk_probs / topk_probs.sum(dim=-1, keepdim=True)
    # 172-186 (236-243): Gumbel-softmax over the top-K, then sorted by the new weights.
    if p.noise == "gumbel":
        gumbels = draws.gumbel(topk_indices)
        topk_probs = ((torch.log(topk_probs) + gumbels) / p.gumbel_temperature).softmax(-1)
    if p.noise == "gumbel" or p.release == "randomized":
        topk_probs, order = torch.sort(topk_probs, dim=-1, descending=True)
        topk_indices = torch.gather(topk_indices, dim=0, index=order)
    # 188-199: a row past its thinking emits its sample, fed one-hot.
    if not soft:
        topk_probs = torch.zeros_like(topk_probs)
        topk_indices = torch.zeros_like(topk_indices)
        topk_probs[0] = 1.0
        topk_indices[0] = sampled_after_thinking
    # 204: the emitted token is the top-1 of the final weights.
    return topk_probs, topk_indices, float(entropy), int(topk_indices[0])


def soft_thinking_update_topk_info(
    state: SoftThinkingState,
    token: int,
    entropy: float,
    topk_probs: torch.Tensor,
    topk_idx: torch.Tensor,
    params: SoftThinkingParams,
) -> tuple[SoftThinkingState, int, torch.Tensor, torch.Tensor]:
    """``Req.update_topk_info`` after ``output_ids.append(token)``: (state, the output token,
    topk_probs, topk_idx) -- Soft Thinking ``managers/schedule_batch.py`` 726-775, Randomized
    Soft Thinking 731-770. Cold Stop counts steps whose entropy is strictly below the threshold;
    at L in thinking the output becomes ``</think>``; ``</think>`` ends thinking (one-hot input);
    after thinking Soft Thinking keeps counting and sets ``to_abort`` at L."""
    p, s = params, state
    probs, idx = topk_probs.clone(), topk_idx.clone()
    low, mode, to_abort = s.low_entropy_steps, s.soft_thinking_mode, s.to_abort
    cold_stops = s.cold_stops
    threshold = p.early_stopping_entropy_threshold
    randomized = p.release == "randomized"
    if mode:
        if threshold > 0:  # 737-750 (randomized 743-755: no reset when it fires)
            low = low + 1 if entropy < threshold else 0
            if low >= p.early_stopping_length_threshold:
                token = p.think_end_id
                cold_stops += 1
                probs[1:], idx[1:], probs[0], idx[0] = 0.0, 0, 1.0, p.think_end_id
                if not randomized:
                    low = 0
        if token == p.think_end_id:  # 752-760 (757-764: no reset)
            mode = False
            probs[1:], idx[1:], probs[0], idx[0] = 0.0, 0, 1.0, p.think_end_id
            if not randomized:
                low = 0
    else:
        if threshold > 0 and not randomized:  # 761-769; randomized 765-769: no counting
            low = low + 1 if entropy < threshold else 0
            if low >= p.early_stopping_length_threshold:
                to_abort = True
        probs[1:], idx[1:], probs[0] = 0.0, 0, 1.0  # 771-774
    new = SoftThinkingState(mode, low, to_abort, s.finished, cold_stops)
    return new, token, probs, idx


def soft_thinking_weighted_forward(
    topk_probs: torch.Tensor, topk_idx: torch.Tensor, embedding: torch.Tensor
) -> torch.Tensor:
    """``VocabParallelEmbedding.weighted_forward`` (``layers/vocab_parallel_embedding.py``
    494-512): the next input, ``Σ (p_i / Σ p) E[idx_i]`` summed in the table's dtype."""
    weights = topk_probs / topk_probs.sum(dim=-1, keepdim=True)
    return torch.sum(
        weights.unsqueeze(-1) * embedding[topk_idx.long()], dim=0, dtype=embedding.dtype
    )


def soft_thinking_reference_step(
    logits: torch.Tensor,
    sampled: int,
    state: SoftThinkingState,
    params: SoftThinkingParams,
    embedding: torch.Tensor,
    draws: CounterDraws,
) -> tuple[torch.Tensor, SoftThinkingState, int]:
    """One decode step of one request: the sampler step, ``output_ids.append`` and
    ``check_finished`` (``scheduler_output_processor_mixin.py`` 241-243: a ``to_abort`` set by
    the previous step finishes the request now, with this step's token appended,
    ``schedule_batch.py`` 682-686), then ``update_topk_info`` (281) and the next input.
    Returns (input fed next, state, emitted token); ``state.finished == "abort"`` once the
    request was aborted."""
    topk_probs, topk_idx, entropy, token = soft_thinking_sampler_step(
        logits, state.soft_thinking_mode, params, draws, sampled
    )
    finished = "abort" if state.to_abort else state.finished
    state = replace(state, finished=finished)
    state, token, topk_probs, topk_idx = soft_thinking_update_topk_info(
        state, token, entropy, topk_probs, topk_idx, params
    )
    return soft_thinking_weighted_forward(topk_probs, topk_idx, embedding), state, token
