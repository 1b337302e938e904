"""Step 5 of the engine step (``step_state``), shared by both model runners: from the prior
logits and the sampled tokens of the MoI rows to their mixtures, written into each request's slot
row of ``MixedInputEmbedding``.

5a. Candidates ``top-K ∪ {y}`` at the engine's one width K (``MIXINPUTS_MAX_TOP_K``), then, for
   sampling-prior rows, the sampler's own top-k / top-p masks, then each row cut to its own K.
   One width for every batch makes a row's result independent of the rest of the batch.
5b. The methods' stages (``core.step.apply_methods``, its steps 1-7) when some row needs more
   than MoI / direct mixture; otherwise direct mixture rows weigh the top-K alone (y's slot: -inf).
5c. Weights and the mixture ``Σ w_i E[i]`` (p·E rows: plus their share of ``p·E``), written into
   the slots, each row once: on the fused path the kernel skips the rows a family method writes
   (``family_rows``), whose inputs are mixed in PyTorch.

On CUDA (Triton present, a plain unquantized embedding on one rank) 5a and 5c run as the
fused step (``mixinputs.fused_step``: a blocked top-K pass over the logits and one mixing kernel
that writes the slots directly); elsewhere as the PyTorch reference (``mixinputs.core``).
No host sync either way, and no shape that depends on data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mixinputs.core.candidates import (
    Candidates,
    candidates_from_logits,
    drop_sampled,
    restrict_to_row_k,
    sampling_prior_masks,
)
from mixinputs.core.mix import dense_inputs, fused_weight_of, plain_weight_of, weighted_sum
from mixinputs.core.step import MethodInputs, MethodStep, apply_methods
from mixinputs.core.weights import mixture_weights
from mixinputs.vllm_plugin.embedding import MixedInputEmbedding
from mixinputs.vllm_plugin.slot_settings import SlotRows


@dataclass(frozen=True)
class SamplerMasks:
    """The sampler settings of this step's MoI rows, for the sampling prior."""

    sampling: torch.Tensor  # [M] bool: rows whose prior is the sampler's distribution
    top_k: torch.Tensor  # [M] long (0 = off)
    top_p: torch.Tensor  # [M] float32 (1 = off)
    wide_lse: torch.Tensor | None = None  # [M]: the normalizer of a top-k wider than K (NaN: -)


@dataclass(frozen=True)
class StepInputs:
    """Everything one mixing step reads, each datum under one name ([M]: the rows that mix)."""

    prior: torch.Tensor  # [M, V] the logits each row mixes from
    sampled: torch.Tensor  # [M] long
    slots: torch.Tensor  # [M] long: where each row's mixture goes
    rows: SlotRows  # their settings and carried state
    own_k: bool = False  # some row asks less than the width: cut each to its own K
    masks: SamplerMasks | None = None  # the sampler's top-k / top-p for sampling-prior rows
    method_step: bool = False  # run the methods' stages (``apply_methods``)
    inputs: MethodInputs | None = None  # what the methods read beyond the candidates
    family_rows: torch.Tensor | None = None  # [F] the rows a family method's input replaces
    dense_rows: torch.Tensor | None = None  # [S] the rows whose input holds p·E
    dense_at: torch.Tensor | None = None  # [S] where those are among ``family_rows``


class MixStep:
    """The mixing step of one engine: its width K, and the fused path when it applies."""

    def __init__(self, embed: MixedInputEmbedding, width_k: int):
        self.embed = embed
        self.width_k = width_k
        device = embed.slots.device
        # The embedding matrix the fused CUDA step reads, or None to use the PyTorch reference.
        self.fused_weight = fused_weight_of(embed.base, device, width_k)
        num_slots = embed.slots.shape[0]
        self.full_k = torch.full((num_slots,), width_k, dtype=torch.long, device=device)
        # p·E needs the plain [V, D] matrix on one rank (None: a method that feeds it cannot run).
        self.dense_weight = plain_weight_of(embed.base, device)
        # p·E runs on a fixed number of rows on CUDA (one kernel choice for every batch) and on
        # at least 8 on CPU (see core.mix.dense_inputs).
        self.dense_min_rows = num_slots if device.type == "cuda" else 8

    @property
    def fused(self) -> bool:
        return self.fused_weight is not None

    def mix_into_slots(
        self, step_inputs: StepInputs
    ) -> tuple[torch.Tensor, torch.Tensor, MethodStep | None]:
        """Mix the rows into ``embed.slots[slots]``; returns (ids, weights) [M, K+1] for the
        replay history, and the methods' step (None without ``method_step``)."""
        s = step_inputs
        k = self.width_k
        row_top_k = s.rows.row_top_k if s.own_k else None
        # 5a. Candidates, the sampler's masks (they need the uncut columns), each row's own K.
        if self.fused_weight is not None:
            from mixinputs.fused_step import fused_candidates, fused_mix

            cut = row_top_k if row_top_k is not None and s.masks is None else None
            cands = fused_candidates(s.prior, s.sampled, self._k(cut, s.sampled), k)
        else:
            cut = None
            cands = candidates_from_logits(s.prior, s.sampled, k)
        if s.masks is not None:
            m = s.masks
            scores = sampling_prior_masks(
                cands.scores, s.prior, m.sampling, m.top_k, m.top_p, m.wide_lse
            )
            cands = Candidates(cands.ids, scores)
        if row_top_k is not None and cut is None:
            cands = restrict_to_row_k(cands, row_top_k)
        # 5b. The methods' stages; without them direct mixture weighs the top-K alone (the
        #    stages do the same).
        beta, direct = s.rows.methods.beta, s.rows.methods.direct
        step = None
        if s.method_step:
            step = apply_methods(cands, s.rows.methods, s.rows.state, s.inputs)
            cands, beta, direct = Candidates(step.ids, step.scores), step.beta, step.direct
        else:
            cands = Candidates(cands.ids, drop_sampled(cands.scores, direct))
        # 5c. Weights and mixtures, each row mixed once.
        out = self.embed.slots
        if self.fused_weight is not None:
            family = s.family_rows
            out_rows = s.slots if family is None else s.slots.index_fill(0, family, -1)
            weights, _ = fused_mix(
                cands.ids, cands.scores, beta, direct, self.fused_weight, out=out, out_rows=out_rows
            )
            if family is not None:  # the family rows' inputs are their own (PyTorch)
                own_w = step.weights.index_select(0, family)
                weights = weights.index_copy(0, family, own_w)
                mixed = self._mix(step.ids.index_select(0, family), own_w, step, s.dense_rows,
                                  s.dense_at)  # fmt: skip
                out.index_copy_(0, s.slots.index_select(0, family), mixed)
            return cands.ids, weights, step
        weights = step.weights if step is not None else mixture_weights(cands.scores, beta, direct)
        mixed = self._mix(cands.ids, weights, step, s.dense_rows, s.dense_rows)  # [M, D]
        out.index_copy_(0, s.slots, mixed)
        return cands.ids, weights, step

    def _mix(self, ids, weights, step, dense_rows, dense_at) -> torch.Tensor:
        """``Σ w_c E[ids_c]`` over the given rows (+ the p·E rows' share, ``dense_rows`` of the
        step, at ``dense_at`` of these rows) in float32, in the slots' dtype; the embedding rows
        come from vLLM's own embedding module (scaled, vocab-parallel)."""
        rows = self.embed.base(ids)  # [R, C, D]
        mixed = weighted_sum(weights, rows)
        if dense_rows is None or not dense_rows.numel():
            return mixed.to(self.embed.slots.dtype)
        # step.probs [S, V] holds just those rows (MethodInputs.own_rows).
        soft = dense_inputs(step.probs, self.dense_weight, self.dense_min_rows)
        share = step.dense.index_select(0, dense_rows)[:, None] * soft
        if dense_at.shape[0] == mixed.shape[0]:  # every row (ascending, distinct)
            mixed = mixed + share
        else:
            mixed = mixed.index_add(0, dense_at, share)
        return mixed.to(self.embed.slots.dtype)

    def _k(self, row_top_k: torch.Tensor | None, sampled: torch.Tensor) -> torch.Tensor:
        return self.full_k[: sampled.shape[0]] if row_top_k is None else row_top_k


def force_tokens(output: Any, rows: torch.Tensor, step: MethodStep, raw: torch.Tensor) -> None:
    """The tokens methods emit in place of the sampled ones (Cold Stop's think-end token and
    EOS, soft thinking's top-1, SwiReasoning's injections): write each forced row's
    token over its sampled one in the sampler's output (device only), so vLLM emits it and feeds
    it next. When the request asked for log-probs, the emitted token's entry becomes the forced
    token's raw log-prob and rank.

    ``output``: vLLM's ``SamplerOutput``; ``rows`` [M] its rows that mixed; ``raw`` [M, V] their
    raw logits.
    """
    tokens = output.sampled_token_ids  # [num_reqs, 1]
    tokens.index_copy_(0, rows, step.sampled.view(-1, 1).to(tokens.dtype))
    lp = getattr(output, "logprobs_tensors", None)
    if lp is None:
        return
    forced = step.forced
    think_end = step.sampled.unsqueeze(-1)  # [M, 1] (the sampled token where not forced)
    raw_f = raw.float()
    chosen = raw_f.gather(1, think_end)
    logprob = chosen - torch.logsumexp(raw_f, dim=-1, keepdim=True)
    rank = (raw_f > chosen).sum(dim=-1) + 1
    ids = lp.logprob_token_ids  # [num_reqs, n + 1], the sampled token first
    first = torch.where(forced[:, None], think_end, ids[rows, :1].long()).to(ids.dtype)
    ids.index_copy_(0, rows, torch.cat([first, ids[rows, 1:]], dim=1))
    vals = lp.logprobs
    new_vals = torch.where(forced[:, None], logprob.to(vals.dtype), vals[rows, :1])
    vals.index_copy_(0, rows, torch.cat([new_vals, vals[rows, 1:]], dim=1))
    ranks = lp.selected_token_ranks
    ranks.index_copy_(0, rows, torch.where(forced, rank.to(ranks.dtype), ranks[rows]))


@dataclass(frozen=True)
class StepRecord:
    """One mixing step as an observer sees it (host copies): what ``mixing`` needs to recompute
    every row's mixture, and the mixture fed."""

    req_ids: list[str]
    js: list[int]
    prior: torch.Tensor  # [M, V] float32
    sampled: torch.Tensor  # [M] the sampler's tokens
    rows: SlotRows  # the rows' settings and carried state before the step
    method_step: bool  # the step ran the methods' stages (apply_methods)
    emitted: torch.Tensor  # [M] the tokens vLLM emits (Cold Stop's think-end tokens included)
    mixed: torch.Tensor  # [M, D] the mixtures written into the slots
    plain_mask: torch.Tensor | None  # [V] bool: the math-symbol tokens (family steps)

    @classmethod
    def of(cls, req_ids, js, prior, sampled, rows, step, embed, slots, inputs) -> StepRecord:
        """Host copies of one step (a host sync: observers are for tests and debugging).
        ``prior``: the family's full distributions where the step had any (``MethodInputs``)."""
        family = inputs if inputs is not None and inputs.prior is not None else None
        if family is not None:
            prior = family.prior
        plain = None if family is None or family.plain_mask is None else _host(family.plain_mask)
        return cls(
            req_ids=req_ids,
            js=js.tolist(),
            prior=_host(prior.float()),
            sampled=_host(sampled),
            rows=SlotRows(*(_on_host(x) for x in rows)),
            method_step=step is not None,
            emitted=_host(step.sampled if step is not None else sampled),
            mixed=_host(embed.slots.index_select(0, slots)),
            plain_mask=plain,
        )


def _on_host(x):
    if isinstance(x, torch.Tensor):
        return _host(x)
    return type(x)(*(_host(t) for t in x))


def _host(tensor: torch.Tensor) -> torch.Tensor:
    """On the host, and laid out flat even where a size-1 dimension kept an odd stride (vLLM's
    RPC serializer views tensors as raw bytes)."""
    return tensor.detach().cpu().clone(memory_format=torch.contiguous_format)
