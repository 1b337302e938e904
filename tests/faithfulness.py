"""Replay what an engine did for one request against the authors' own step rules.

An engine (``mixinputs.hf`` or a vLLM worker) records, per step of one request: the logits its
method read, the token drawn, the token emitted and the input fed next. The authors' rule
(``tests/reference``) then runs over the same logits and draws, carrying its own
state over the whole generation: the tokens must be the same at every step and the inputs equal
to float32 rounding.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from mixinputs.config import MoIConfig
from mixinputs.methods.multiplex import multiplex_candidates
from mixinputs.mixing import method_rows
from tests.reference import (
    CounterDraws,
    MultiplexParams,
    MultiplexState,
    SelarParams,
    SoftThinkingParams,
    SoftThinkingState,
    SwirParams,
    SwirState,
    multiplex_reference_step,
    selar_reference_step,
    soft_thinking_reference_step,
    swir_reference_step,
)


class Step(NamedTuple):
    position: int
    prior: torch.Tensor  # [V] the logits the method read (swir: raw; selar, multiplex: the
    #                      sampler's, after temperature; multiplex: cut to its top-k / top-p)
    sampled: int  # the token drawn
    emitted: int  # the token emitted
    fed: torch.Tensor  # [D] the input fed next
    vocab: torch.Tensor | None = None  # [V] soft: the raw logits over the request's temperature,
    #                                    before any cut (None: ``prior`` is that)


def check(
    steps: list[Step], config: MoIConfig, table: torch.Tensor, seed: int, top_k: int, top_p: float
) -> dict:
    """Run the authors' rule for ``config.mode`` over ``steps`` (in order, from output 0);
    returns counts of what happened (latent steps, switches, gates, ...)."""
    assert [s.position for s in steps] == list(range(len(steps))), "steps must start at 0"
    table = table.float()
    counts = {"steps": len(steps), "latent": 0, "switches": 0}
    if config.mode == "swir":
        params = SwirParams(
            think_start_id=config.think_start,
            think_end_id=config.think_end,
            linebreak_id=config.swir_linebreak,
            eos_id=config.eos,
            alpha0=config.swir_alpha,
            beta0=config.swir_beta,
            window=config.swir_window,
            max_switch_count=config.swir_max_switches,
            convergence_ids=tuple(config.swir_convergence),
            termination_ids=tuple(config.swir_termination),
            termination_max_tokens=config.swir_answer_tokens,
            max_new_tokens=config.swir_ramp_tokens,
            math_ids=frozenset(config.plain_ids if config.plain_math else ()),
        )
        state = SwirState()
        for s in steps:
            fed, new, token = swir_reference_step(s.prior.float(), s.sampled, state, params, table)
            _same(s, token, fed)
            counts["latent"] += new.mode == 0
            counts["switches"] += new.mode != state.mode and s.position > 0
            state = new
    elif config.mode == "selar":
        params = SelarParams(
            topk=config.top_k,
            entropy_threshold=config.selar_threshold,
            contrastive_weight=config.selar_contrast,
            temperature=1.0,  # the recorded logits are already divided by the temperature
            top_k=top_k,
            top_p=top_p,
            math_ids=frozenset(config.plain_ids if config.plain_math else ()),
        )
        for s in steps:
            fed, _, token = selar_reference_step(s.prior.float(), s.sampled, None, params, table)
            _same(s, token, fed)
            counts["latent"] += not torch.equal(fed, table[token])
    elif config.mode == "multiplex":
        params = MultiplexParams(
            think_end_id=config.think_end,
            width=config.multiplex_width,
            temperature=1.0,  # already divided, and already cut to the sampler's top-k / top-p
            weighted=config.multiplex_weighted,
        )
        state = MultiplexState()
        for s in steps:
            # The K draws are the engine's own (counter-based, keyed by seed and position):
            # draw 1 is the sampled token, draws 2..K come from the same distribution.
            rows = method_rows([config], [s.position], [seed])
            width = config.multiplex_width
            ids, _ = multiplex_candidates(
                torch.tensor([s.sampled]), s.prior.float()[None], rows, width - 1, width
            )
            fed, new, token = multiplex_reference_step(
                s.prior.float(), ids[0], state, params, table
            )
            _same(s, token, fed)
            counts["latent"] += state.in_thinking
            counts["switches"] += new.in_thinking != state.in_thinking
            state = new
    elif config.mode == "soft":
        counts.update(soft_thinking(steps, config, table, seed, top_k, top_p))
    else:
        raise ValueError(f"no authors' rule for mode {config.mode!r}")
    return counts


def soft_params(config: MoIConfig, top_k: int, top_p: float, greedy: bool) -> SoftThinkingParams:
    """The release a soft-thinking config follows (Soft Thinking without noise, Randomized Soft
    Thinking with it: their Cold Stop measure and after-thinking abort), with its settings; the
    logits the check passes are already divided by the temperature."""
    release = "randomized" if config.noise != "none" else "soft_thinking"
    if config.cold_stop_entropy is not None:  # the measure and the abort name the release
        releases = {("vocab", True): "soft_thinking", ("vocab_normalized", False): "randomized"}
        release = releases[(config.stop_measure, config.stop_abort)]
    every = 1 << 30  # the release's top_k -1
    top_k = 1 if greedy else top_k or every  # sampling_params.py:113-116: greedy is top-k 1
    tau = config.noise_temperature or 1.0
    return SoftThinkingParams(
        think_end_id=config.think_end,
        release=release,
        max_topk=config.top_k,
        temperature=1.0,
        top_k=top_k,
        top_p=top_p,
        min_p=0.0,
        after_thinking_top_k=top_k,
        after_thinking_top_p=top_p,
        after_thinking_min_p=0.0,
        early_stopping_entropy_threshold=config.cold_stop_entropy or 0.0,
        early_stopping_length_threshold=config.cold_stop_steps,
        noise=config.noise,
        dirichlet_alpha=1.0 / tau,  # mixinputs' τ is 1/α
        gumbel_temperature=tau,
    )


def soft_thinking(
    steps: list[Step],
    config: MoIConfig,
    table: torch.Tensor,
    seed: int,
    top_k: int,
    top_p: float,
    greedy: bool = False,
) -> dict:
    """Soft Thinking's sampler step and ``update_topk_info`` over the steps of one request: the
    same token at every step and the same input to float32 rounding, until the release aborts
    the request -- there the engine emits EOS instead (it cannot abort from a worker) and the
    check stops. Counts: thinking steps, Cold Stop's think-end tokens, aborts."""
    params = soft_params(config, top_k, top_p, greedy)
    state = SoftThinkingState()
    counts = {"thinking": 0, "latent": 0, "switches": 0, "cold_stops": 0, "aborts": 0}
    for s in steps:
        logits = (s.vocab if s.vocab is not None else s.prior).float()
        fed, new, token = soft_thinking_reference_step(
            logits, s.sampled, state, params, table, CounterDraws(seed, s.position)
        )
        if new.finished == "abort":
            assert s.emitted == config.eos, (s.position, s.emitted, config.eos)
            counts["aborts"] += 1
            break
        _same(s, token, fed)
        counts["thinking"] += state.soft_thinking_mode
        counts["latent"] += new.soft_thinking_mode  # fed a concept token
        counts["switches"] += new.soft_thinking_mode != state.soft_thinking_mode
        state = new
    counts["cold_stops"] = state.cold_stops
    return counts


def _same(step: Step, token: int, fed: torch.Tensor) -> None:
    assert step.emitted == token, (step.position, step.emitted, token)
    # float32 rounding: SwiReasoning's p·E sums the whole vocabulary (49,152 terms here) in
    # another order than the reference's matrix product, about 1e-4 apart at worst.
    torch.testing.assert_close(step.fed.float(), fed, rtol=1e-3, atol=2e-4)


def engine_cold_stop(rows, state, b: int) -> bool:
    """Whether an engine's Cold Stop fired for row ``b`` of a recorded step, read off the step's
    own settings and carried state (``MethodRows``, ``CarriedState`` before the step): in its
    region, the whole-vocabulary entropy below τ, and the streak at L."""
    low = float(rows.vocab_entropy[b]) < float(rows.cold_stop_entropy[b])
    streak = int(state.low_entropy_steps[b]) + 1 >= int(rows.cold_stop_steps[b])
    return bool(state.thinking[b]) and low and streak
