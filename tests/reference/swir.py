"""SwiReasoning: github.com/sdc17/SwiReasoning ``generate_swir`` (``generation_utils.py``
217-408 @ 7f3b278306b3a9b5d8457dfa98de734143ab377c); the step rule is unchanged since the first
upload (4de075c), later commits only touched the KV-cache row selection.

A transcription of the authors' step rule (``tests/reference``'s conventions).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SwirParams:
    """Defaults are the released ones: function defaults (232-241) and run.py's argparse
    (575-583): alpha 1.0, beta 0.7, window 512, no switch cap, 32 answer tokens after the
    termination phrase, max_new_tokens 38912 (it scales the alpha/beta ramps)."""

    think_start_id: int
    think_end_id: int
    # E[convert_tokens_to_ids("\\n")] (line 253): the token spelled backslash + "n" (1699 in the
    # Qwen vocabularies), NOT the newline token (198). The authors' string is "\\n".
    linebreak_id: int
    eos_id: int | None = None
    alpha0: float = 1.0
    beta0: float = 0.7
    window: int = 512
    max_switch_count: int | None = None
    convergence_ids: tuple[int, ...] = ()  # tokenize("</think>"), or "\n\n</think>\n\n" off-Qwen
    termination_ids: tuple[int, ...] = ()  # tokenize("</think>\n\nThe final answer is")
    termination_max_tokens: int = 32
    max_new_tokens: int = 38912
    math_ids: frozenset[int] = frozenset()  # get_math_symbols_ids(tokenizer); run.py passes it


@dataclass(frozen=True)
class SwirState:
    """One row's carried state; ``step`` counts sampled tokens, 0 for the prefill's output."""

    step: int = 0
    mode: int = 0  # 0 = soft (latent), 1 = normal (explicit); every row starts latent
    stay: int = 0  # steps since the last switch (mode_stay_steps)
    ref: float | None = None  # reference entropy; a float32 value held exactly in a float
    locked: bool = False  # the row SAMPLED </think>: explicit forever after
    switch_count: int = 0  # latent -> explicit switches only
    injecting: bool = False
    queue: tuple[int, ...] = ()
    budget: int = -1  # answer budget after the termination phrase; -1 = not armed
    finished: bool = False


def swir_reference_step(
    logits: torch.Tensor,
    sampled: int,
    state: SwirState,
    params: SwirParams,
    embedding: torch.Tensor,
) -> tuple[torch.Tensor, SwirState, int]:
    """One step of ``generate_swir`` for one row.

    ``logits`` are the raw model logits of this step ``[V]``; ``sampled`` the token drawn from
    :func:`authors_sampling_probs` (temperature, top_k, top_p applied). The entropy and the soft
    input both use the RAW distribution (softmax at temperature 1, full vocabulary, lines
    293-294, 317, 339); only the visible token is sampled from the filtered one.
    """
    p, s = params, state
    probs_original = torch.softmax(logits, dim=-1)  # line 294

    # Lines 299-303: the lock reads the token as sampled, before any injection overrides it.
    token = int(sampled)
    locked = s.locked or token == p.think_end_id

    # Lines 305-315: a queued injection (armed on an earlier step) replaces the sampled token.
    queue, injecting = list(s.queue), s.injecting
    if p.max_switch_count is not None and injecting:
        if queue:
            token = queue.pop(0)
        if not queue:
            injecting = False

    # Lines 317-330: the entropy-trend machine. Strict comparisons; the window gates only
    # explicit -> latent, counting steps since the switch (the switch step itself has stay 0).
    cur_entropy = -(probs_original * probs_original.clamp(min=1e-12).log()).sum(dim=-1)
    h = float(cur_entropy)
    mode, stay, ref, switch_count = s.mode, s.stay, s.ref, s.switch_count
    to_normal = to_soft = False
    if s.step == 0:
        ref = h
    else:
        stay += 1
        allow_switch = stay >= p.window
        to_normal = mode == 0 and h < ref
        to_soft = mode == 1 and h > ref and allow_switch and not locked
        if to_normal:
            mode = 1
        if to_soft:
            mode = 0
        if to_normal or to_soft:
            stay = 0
            ref = h
        if p.max_switch_count is not None:
            switch_count += int(to_normal)

    # Lines 332-336: math tokens (checked on the possibly-injected token) stay explicit.
    is_normal = mode == 1 or locked or token in p.math_ids

    # Lines 338-351: the input fed next step.
    normal_emb = embedding[token]
    soft_emb = (probs_original.unsqueeze(0) @ embedding).squeeze(0)  # p·E, full vocabulary
    alpha = p.alpha0 + (1 - p.alpha0) * float(s.step) / float(p.max_new_tokens)
    if s.step == 0:
        soft_emb = 0.9 * soft_emb + 0.1 * embedding[p.linebreak_id]
    elif to_soft:
        soft_emb = alpha * soft_emb + (1 - alpha) * embedding[p.think_start_id]
    beta = p.beta0 + (1 - p.beta0) * float(s.step) / float(p.max_new_tokens)
    if s.step > 0 and to_normal:
        # Entering explicit: the mixture eased toward </think>, NOT the sampled token.
        normal_emb = beta * soft_emb + (1 - beta) * embedding[p.think_end_id]
    input_embedding = normal_emb if is_normal else soft_emb

    # Lines 353-370: the switch cap arms injections for the NEXT steps.
    budget = s.budget
    if p.max_switch_count is not None and s.step > 0:
        m = p.max_switch_count
        if to_normal and m <= switch_count <= 2 * m:
            queue, injecting = list(p.convergence_ids), True
        if to_normal and switch_count > 2 * m:
            queue, injecting = list(p.termination_ids), True
            budget = p.termination_max_tokens
        if budget >= 0:
            budget -= 1

    # Lines 372-384: the token is appended; the row ends on EOS or an exhausted budget.
    finished = (p.eos_id is not None and token == p.eos_id) or (
        p.max_switch_count is not None and budget == 0
    )
    new_state = SwirState(
        step=s.step + 1,
        mode=mode,
        stay=stay,
        ref=ref,
        locked=locked,
        switch_count=switch_count,
        injecting=injecting,
        queue=tuple(queue),
        budget=budget,
        finished=finished,
    )
    return input_embedding, new_state, token
