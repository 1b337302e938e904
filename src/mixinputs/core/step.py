"""One step of the soft-input methods, as a numbered recipe (``apply_methods``), and the whole
reference step (``mix_step``).

After the candidates ``top-K ∪ {y}`` (``core.candidates``), per row b:

1. Direct mixture and soft thinking weigh the top-K alone: y's slot carries no weight.
2. Candidates: a method may replace them (noise: Dirichlet draws over every kept token).
3. Weights: a method may reshape them (noise: Dirichlet / Gumbel on the mode's weights).
4. The emitted token: a method may choose it (soft thinking's top-1).
5. Region: a method may end mixing and emit a token of its own (Cold Stop, the think-end token,
   EOS), and moves its carried state on.
6. Outside the region, ``w = onehot(emitted)``; the weights ``mixture_weights`` of what is left.
7. Replace: a family method's input replaces the row's (SwiReasoning, SeLaR, Multiplex).

Each stage runs the hooks of the registry's methods that have one (``Method.on_candidates``,
``on_weights``, ``on_emit``, ``on_region``, ``replace``), in registry order; rows of other
methods come out bit for bit the same. The input fed next is ``Σ_c w_c E[ids_c] + dense·p·E``
(``core.mix``); the token emitted is ``MethodStep.sampled``.

No function here loops over the batch in Python or modifies its inputs; shapes depend only on
(M, K, V, D), so an engine step can be captured in a CUDA graph. ``mix_step``, the reference for
tests, syncs with the host to find which methods its rows run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch

from mixinputs.core.candidates import Candidates, candidates_from_logits, drop_sampled
from mixinputs.core.mix import dense_inputs, mix_step_inputs
from mixinputs.core.rows import CarriedState, MethodRows, fresh_state, method_rows  # noqa: F401
from mixinputs.core.weights import mixture_weights
from mixinputs.methods import FAMILY, KeptDraws, draw_kept, everything, kept_rows, measure_entropy


class MethodStep(NamedTuple):
    """One step of the soft-input methods: what is fed, and what is emitted and carried."""

    ids: torch.Tensor  # [M, C] long; for MoI-style rows the last column is the emitted token
    scores: torch.Tensor  # [M, C] float32 (MoI-style rows: ``weights`` are made from these)
    beta: torch.Tensor  # [M] float32
    direct: torch.Tensor  # [M] bool
    sampled: torch.Tensor  # [M] long: the emitted token (a forced one where ``forced``)
    state: CarriedState  # after this step
    forced: torch.Tensor  # [M] bool: the emitted token is not the sampled one
    weights: torch.Tensor  # [M, C] float32: h = Σ_c weights[c] · E[ids[c]] + dense · p·E
    dense: torch.Tensor  # [M] float32: the share of the full-vocabulary input p·E
    probs: torch.Tensor | None = None  # [M, V] softmax(prior): the p of p·E (dense steps only;
    #                                    [S, V], of its own rows, when those are given)
    chosen: torch.Tensor | None = None  # [M] bool: the method chose the emitted token (soft's


class MethodInputs(NamedTuple):
    """What the methods read beyond the candidates, rows and state (all optional)."""

    prior: torch.Tensor | None = None  # [M, V] each row's full distribution's logits (raw, or
    #                                    the sampler's cut to its top-k / top-p: the row's
    #                                    prior); None: no family method runs
    plain_mask: torch.Tensor | None = None  # [V] bool: the math-symbol tokens (None: none)
    draws: int = 0  # draws beyond the sampled token to make (the batch's largest K - 1)
    modes: frozenset[str] | None = None  # the family modes some row runs (None: all of them);
    #                                      the others are not computed (host-known per step)
    own_rows: Mapping[str, torch.Tensor] | None = None  # a method's rows, [S] ascending, where
    #                                     its whole-vocabulary work runs on those only
    kept: KeptDraws | None = None  # Dirichlet draws over every kept token (noise)

    def rows_of(self, name: str) -> torch.Tensor | None:
        """The rows a method runs alone, or None (every row, masked)."""
        return None if self.own_rows is None else self.own_rows.get(name)


class Draft:
    """The step while its stages run: what each hook reads and writes."""

    def __init__(self, cands: Candidates, rows: MethodRows, state: CarriedState):
        ids, scores = cands
        self.k = ids.shape[1] - 1
        self.y = ids[:, self.k]
        self.ids, self.scores = ids, scores
        self.beta, self.direct = rows.beta, rows.direct
        self.emitted = self.y
        self.active = state.thinking  # mixing this step (stage 5 decides)
        self.chosen = torch.zeros_like(state.thinking)  # a method chose the emitted token
        self.drawn = torch.zeros_like(state.thinking)  # candidates replaced by draws (stage 2)
        self.measured = scores  # the candidates' scores before any noise (stage 1 sets it)
        self.state = state._asdict()  # after this step


_STAGES = {
    hook: tuple(m for m in everything() if getattr(type(m), hook, None) is not None)
    for hook in ("on_candidates", "on_weights", "on_emit", "on_region")
}


def apply_methods(
    cands: Candidates,
    rows: MethodRows,
    state: CarriedState,
    inputs: MethodInputs | None = None,
) -> MethodStep:
    """Every soft-input method on one step's candidates (the module's recipe).

    ``cands`` [M, K+1] (the sampled token last, each row already cut to its own K and, for
    sampling-prior rows, to the sampler's top-k / top-p); ``rows`` and ``state`` [M] (Cold
    Stop's whole-vocabulary rows read ``rows.vocab_entropy``); ``inputs``: the family methods'
    full distribution (needed when some row runs SwiReasoning, SeLaR or Multiplex) and the
    Dirichlet rows' draws over every kept token (``kept_dirichlet``, needed when some row has
    ``dirichlet_kept``). Rows of other methods come out bit for bit the same with or without
    them.

    >>> c = Candidates(torch.tensor([[3, 5, 5]]), torch.tensor([[1.0, 1.0, float("-inf")]]))
    >>> from mixinputs.config import MoIConfig
    >>> from mixinputs.core.rows import fresh_state, method_rows
    >>> rows = method_rows([MoIConfig(region="thinking", think_end=5)], [0], [0])
    >>> step = apply_methods(c, rows, fresh_state(1))  # y = 5 is the think-end token: plain
    >>> step.weights.tolist(), step.state.thinking.tolist()
    ([[0.0, 0.0, 1.0]], [False])
    """
    d = Draft(cands, rows, state)
    k = d.k
    # 1. Rows that feed the distribution itself (``Method.direct``) weigh the top-K alone: y's
    #    slot (with mass only when y lies outside the top-K) carries none.
    d.scores = drop_sampled(d.scores, rows.direct)
    d.measured = d.scores[:, :k]  # the candidates' scores before any stage changes them
    # 2.-5. The methods' stages, in registry order.
    for hook in ("on_candidates", "on_weights", "on_emit", "on_region"):
        for m in _STAGES[hook]:
            getattr(m, hook)(d, rows, state, inputs)
    # 6. Outside the region: w = onehot(emitted), exactly.
    ids = torch.cat([d.ids[:, :k], d.emitted.unsqueeze(-1)], dim=-1)
    beta = torch.where(d.active, d.beta, float("inf"))
    direct = d.direct & d.active
    step = MethodStep(
        ids,
        d.scores,
        beta,
        direct,
        d.emitted,
        CarriedState(**d.state),
        d.emitted != d.y,
        mixture_weights(d.scores, beta, direct),
        torch.zeros_like(rows.beta),
        chosen=d.chosen,
    )
    # 7. A family method's own input replaces its rows' (``Method.replace``, in registry order).
    if inputs is not None and inputs.prior is not None:
        present = inputs.modes
        for m in FAMILY:
            if present is None or m.name in present:
                step = m.replace(step, rows, state, inputs, d.active)
    return step


def mix_step(
    prior: torch.Tensor,
    sampled: torch.Tensor,
    embedding: torch.Tensor,
    rows: MethodRows,
    state: CarriedState,
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
    if vocab_logits is not None:
        rows = rows._replace(vocab_entropy=measure_entropy(rows, vocab_logits))
    elif bool(rows.vocab_entropy.isnan().any()):  # host syncs: the reference, not an engine step
        own = measure_entropy(rows._replace(temperature=torch.ones_like(rows.temperature)), prior)
        rows = rows._replace(
            vocab_entropy=torch.where(rows.vocab_entropy.isnan(), own, rows.vocab_entropy)
        )
    kept = None
    if bool(kept_rows(rows).any()):
        kept = draw_kept(prior, rows, top_k)
    codes = set(rows.family.tolist())
    modes = frozenset(m.name for m in FAMILY if m.family_code in codes)
    inputs = MethodInputs(kept=kept)
    if modes:
        # Draws past a row's own width are never used (each draw has its own counter key).
        inputs = MethodInputs(prior, plain_mask, top_k, modes, None, kept)
    step = apply_methods(cands, rows, state, inputs)
    dense = dense_inputs(step.probs, embedding) if step.probs is not None else None
    return mix_step_inputs(step, embedding, dense), step, step.weights
