"""Steps 3 and 4 of the sample hook, shared by both model runners (V1 and Model Runner V2).

From the prior logits and the sampled tokens of the MoI rows to their mixtures, written into
each request's slot row of ``MixedInputEmbedding``:

3. Candidates ``top-K ∪ {y}`` at the engine's one width K (``MIXINPUTS_MAX_TOP_K``), then, for
   sampling-prior rows, the sampler's own top-k / top-p masks, then each row cut to its own K.
   One width for every batch makes a row's result independent of the rest of the batch.
4. For batches with a soft-input method beyond MoI / direct mixture (soft thinking, a thinking
   region, Cold Stop, noise, SwiReasoning, SeLaR, Multiplex): ``mixing.apply_methods`` on the
   candidates, per row. Direct mixture rows weigh the top-K alone (y's slot: -inf).
5. Weights and the mixture ``Σ w_i E[i]`` (SwiReasoning rows: plus their share of ``p·E``),
   written into the slots.

On CUDA (Triton present, a plain unquantized embedding on one rank) this runs as the fused step
(``mixinputs.fused_step``: a blocked top-K pass over the logits and one mixing kernel that
writes the slots directly); elsewhere as the PyTorch reference (``mixinputs.mixing``).
No host sync either way, and no shape that depends on data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mixinputs.mixing import (
    Candidates,
    FamilyInputs,
    KeptDraws,
    MethodRows,
    MethodStep,
    RegionState,
    apply_methods,
    candidates_from_logits,
    dense_inputs,
    drop_sampled,
    mixture_weights,
    restrict_to_row_k,
    sampling_prior_masks,
)
from mixinputs.vllm_plugin.embedding import MixedInputEmbedding
from mixinputs.vllm_plugin.slot_settings import SlotRows


@dataclass(frozen=True)
class SamplerMasks:
    """The sampler settings of this step's MoI rows, for the sampling prior."""

    sampling: torch.Tensor  # [M] bool: rows whose prior is the sampler's distribution
    top_k: torch.Tensor  # [M] long (0 = off)
    top_p: torch.Tensor  # [M] float32 (1 = off)
    wide_lse: torch.Tensor | None = None  # [M]: the normalizer of a top-k wider than K (NaN: -)


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
        # SwiReasoning's p·E needs the plain [V, D] matrix on one rank (None: it cannot run).
        self.dense_weight = plain_weight_of(embed.base, device)
        # p·E runs on a fixed number of rows on CUDA (one kernel choice for every batch) and on
        # at least 8 on CPU (see mixing.dense_inputs).
        self.dense_min_rows = num_slots if device.type == "cuda" else 8

    @property
    def fused(self) -> bool:
        return self.fused_weight is not None

    def mix_into_slots(
        self,
        prior: torch.Tensor,
        sampled: torch.Tensor,
        row_top_k: torch.Tensor | None,
        masks: SamplerMasks | None,
        beta: torch.Tensor,
        direct: torch.Tensor,
        slots: torch.Tensor,
        methods: tuple[MethodRows, RegionState] | None = None,
        family: FamilyInputs | None = None,
        dense_rows: torch.Tensor | None = None,
        kept: KeptDraws | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, MethodStep | None]:
        """Mix ``M`` rows into ``embed.slots[slots]``; returns (ids, weights) [M, K+1] for the
        replay history, and the methods' step (None without ``methods``).

        ``prior`` [M, V] logits; ``sampled`` [M] long; ``row_top_k`` [M] long or None (every row
        at the full width); ``beta`` [M] float32; ``direct`` [M] bool; ``slots`` [M] long;
        ``methods``: the rows' soft-input settings and carried state, when any row needs more
        than MoI / direct mixture (their beta and direct then replace ``beta`` and ``direct``);
        ``family``: when some row runs SwiReasoning, SeLaR or Multiplex; ``dense_rows`` [S]: the
        SwiReasoning rows, whose input includes ``softmax(prior) @ E``; ``kept``: soft
        thinking's Dirichlet draws over every kept token (``mixing.kept_dirichlet``).
        """
        k = self.width_k
        if self.fused_weight is not None:
            from mixinputs.fused_step import fused_candidates, fused_mix

            cut = row_top_k if row_top_k is not None and masks is None else None
            cands = fused_candidates(prior, sampled, self._k(cut, sampled), k)
        else:
            cut = None
            cands = candidates_from_logits(prior, sampled, k)
        if masks is not None:  # the sampler's masks need the uncut columns
            scores = sampling_prior_masks(
                cands.scores, prior, masks.sampling, masks.top_k, masks.top_p, masks.wide_lse
            )
            cands = Candidates(cands.ids, scores)
        if row_top_k is not None and cut is None:
            cands = restrict_to_row_k(cands, row_top_k)
        step = None
        if methods is not None:
            step = apply_methods(cands, *methods, family, kept)
            cands, beta, direct = Candidates(step.ids, step.scores), step.beta, step.direct
        else:  # direct mixture weighs the top-K alone (apply_methods does the same)
            cands = Candidates(cands.ids, drop_sampled(cands.scores, direct))
        out = self.embed.slots
        if self.fused_weight is not None:
            weights, _ = fused_mix(
                cands.ids, cands.scores, beta, direct, self.fused_weight, out=out, out_rows=slots
            )
            if family is not None:  # the family rows' inputs are their own (PyTorch)
                own = (methods[0].family > 0)[:, None]
                weights = torch.where(own, step.weights, weights)
                mixed = self._mix(step.ids, step.weights, step, family, dense_rows)
                out.index_copy_(0, slots, torch.where(own, mixed, out.index_select(0, slots)))
            return cands.ids, weights, step
        weights = step.weights if step is not None else mixture_weights(cands.scores, beta, direct)
        mixed = self._mix(cands.ids, weights, step, family, dense_rows)  # [M, D]
        out.index_copy_(0, slots, mixed)
        return cands.ids, weights, step

    def _mix(self, ids, weights, step, family, dense_rows) -> torch.Tensor:
        """``Σ w_c E[ids_c]`` (+ the SwiReasoning rows' share of ``p·E``) in float32, in the
        slots' dtype; the rows come from vLLM's own embedding module (scaled, vocab-parallel)."""
        rows = self.embed.base(ids)  # [M, C, D]
        mixed = (weights.float().unsqueeze(-1) * rows.float()).sum(dim=1)  # as mix_rows
        if dense_rows is None or not dense_rows.numel():
            return mixed.to(self.embed.slots.dtype)
        # step.probs [S, V] holds just those rows (FamilyInputs.swir_rows is dense_rows).
        soft = dense_inputs(step.probs, self.dense_weight, self.dense_min_rows)
        if dense_rows.shape[0] == mixed.shape[0]:  # every row (ascending, distinct)
            mixed = mixed + step.dense[:, None] * soft
        else:
            share = step.dense.index_select(0, dense_rows)[:, None] * soft
            mixed = mixed.index_add(0, dense_rows, share)
        return mixed.to(self.embed.slots.dtype)

    def _k(self, row_top_k: torch.Tensor | None, sampled: torch.Tensor) -> torch.Tensor:
        return self.full_k[: sampled.shape[0]] if row_top_k is None else row_top_k


def fused_weight_of(base: Any, device: torch.device, max_top_k: int) -> torch.Tensor | None:
    """The plain [V, D] matrix behind ``base`` when the fused step can mix from it: Triton on
    this device (CUDA; Triton's interpreter in tests), an unquantized embedding on one rank, and
    a width the kernels take. Otherwise None: the PyTorch reference calls ``base`` itself."""
    try:
        from mixinputs.fused_step import MAX_TOP_K, fused_step_available
    except ImportError:
        return None
    if not fused_step_available(device) or max_top_k > MAX_TOP_K:
        return None
    return plain_weight_of(base, device)


def plain_weight_of(base: Any, device: torch.device) -> torch.Tensor | None:
    """The [V, D] matrix behind ``base`` when its rows are what it looks up (unquantized, one
    rank, no scaling), else None."""
    quant = getattr(base, "quant_method", None)
    if quant is not None and type(quant).__name__ != "UnquantizedEmbeddingMethod":
        return None
    if getattr(base, "tp_size", 1) != 1:  # vocab-parallel shards: the reference all-reduces
        return None
    weight = getattr(base, "weight", None)
    plain = (
        isinstance(weight, torch.Tensor)
        and weight.dim() == 2
        and weight.is_floating_point()
        and weight.stride(1) == 1
        and weight.device == device
    )
    if plain:  # the module must look rows up as they are (no scaling, no transform)
        with torch.no_grad():
            probe = torch.arange(min(8, weight.shape[0]), device=device)
            plain = torch.equal(base(probe), weight[probe])
    return weight if plain else None


def force_tokens(output: Any, rows: torch.Tensor, step: MethodStep, raw: torch.Tensor) -> None:
    """Cold Stop's think-end token, SwiReasoning's injected tokens: write each forced row's
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
    method_step: bool  # the step ran mixing.apply_methods
    emitted: torch.Tensor  # [M] the tokens vLLM emits (Cold Stop's think-end tokens included)
    mixed: torch.Tensor  # [M, D] the mixtures written into the slots
    plain_mask: torch.Tensor | None  # [V] bool: the math-symbol tokens (family steps)

    @classmethod
    def of(cls, req_ids, js, prior, sampled, rows, step, embed, slots, family) -> StepRecord:
        """Host copies of one step (a host sync: observers are for tests and debugging).
        ``prior``: the family's full distributions where the step had any (``FamilyInputs``)."""
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
