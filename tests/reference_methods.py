"""Transcriptions of the authors' own per-step rules, for the faithfulness tests (issues 17, 24).

Each function advances ONE row by ONE decode step, in float32, on a ``[V, D]`` input-embedding
matrix. It takes the logits the model produced at that step and the token the authors' loop
sampled (the caller draws it, with its own generator, from the distribution the matching
``*_sampling_probs`` helper returns), and returns ``(input_embedding, new_state, emitted_token)``:
the vector fed to the model at the next step, the row's carried state, and the token appended
to the visible sequence. Comparing an implementation against these, token for token, is the
point: the state machine and the emitted tokens must match exactly; the embeddings match to
float32 rounding only, because the authors reduce over a batch with a different kernel than a
one-row reference (use a tolerance of about 1e-6 relative on embeddings, none on tokens).

Sources (read at these commits; line numbers refer to them):

- SwiReasoning: github.com/sdc17/SwiReasoning, ``generation_utils.py`` lines 23-39 (sampling
  filter) and 217-408 (``generate_swir``), commit 7f3b278306b3a9b5d8457dfa98de734143ab377c.
  The step rule is unchanged since the first upload (4de075c); later commits only touched the
  KV-cache row selection.
- SeLaR: github.com/Parker-rfu/SeLaReasoning, ``src/generation_utils.py`` lines 23-39 and
  151-341 (``generate_selar``), commit 1198a745b117f4361fbb7c10db438e34d1550c9f.
- Multiplex Thinking: github.com/GMLR-Penn/Multiplex-Thinking, the bundled SGLang fork,
  ``sglang-0.4.9.post6/sglang/srt/layers/sampler.py`` lines 166-201 (the path taken with the
  released settings), ``.../layers/vocab_parallel_embedding.py`` lines 489-510 and
  ``.../managers/schedule_batch.py`` lines 815-843, commit
  6e524ac7aa7dd6ca71482f03b0a3e29d303498b7.
- Soft Thinking: github.com/eric-ai-lab/Soft-Thinking, the bundled SGLang fork
  ``sglang_soft_thinking_pkg/python/sglang/srt/``: ``layers/sampler.py`` lines 119-204 (the
  sampler step: entropy, top-k / top-p / min-p, Dirichlet, top-K, Gumbel, the emitted top-1),
  ``managers/schedule_batch.py`` lines 678-686 (the abort) and 726-775 (``update_topk_info``:
  Cold Stop, the thinking region, the after-thinking abort), ``layers/vocab_parallel_embedding.py``
  lines 494-512 (the weighted input), ``sampling/sampling_params.py`` lines 113-123 (greedy is T 1,
  top-k 1), commit b97407c (the repository's HEAD, "Create aime2024.py").
- Randomized Soft Thinking (Wu et al., arXiv 2508.03440): github.com/WJMacro/Randomized-Soft-
  Thinking, the same paths: ``layers/sampler.py`` lines 139-273 (entropy over log V, Dirichlet
  over the tokens above 1e-7, Gumbel-softmax, the re-sort) and ``managers/schedule_batch.py``
  lines 731-770, commit 4a95b5a (HEAD, "fix README.md").
- ThinkRouter (arXiv 2602.11683) has no public code, so nothing here transcribes it.

Where randomness enters (Multiplex's K draws, Soft Thinking's Dirichlet and Gumbel noise) the
authors draw from torch's generator; a transcription takes the numbers the engines draw instead
(``mixinputs.mixing.counter_uniform``, keyed by seed, output position, token id and draw: see
``CounterDraws``), from the same distributions, so that runs can be compared token for token.

Where the authors' batched code couples rows (SeLaR), the transcription follows its batch-of-one
behaviour; the quirk is named in the function's docstring. Nothing here imports vLLM or
transformers; run this file directly for a smoke test on random tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

# ---------------------------------------------------------------------------------------------
# The sampling filter SwiReasoning and SeLaR share (both generation_utils.py, lines 23-39).
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# SwiReasoning (generate_swir, generation_utils.py 217-408 @ 7f3b278)
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# SeLaR (generate_selar, src/generation_utils.py 151-341 @ 1198a74)
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Multiplex Thinking, inference (bundled SGLang fork @ 6e524ac)
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Soft Thinking (eric-ai-lab/Soft-Thinking @ b97407c) and Randomized Soft Thinking
# (WJMacro/Randomized-Soft-Thinking @ 4a95b5a): the sampler step and update_topk_info
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# Smoke test on random tensors: `python tests/reference_methods.py`
# ---------------------------------------------------------------------------------------------


def _main() -> None:
    gen = torch.Generator().manual_seed(0)
    vocab, dim, steps = 64, 16, 40
    table = torch.randn(vocab, dim, generator=gen)

    def logits_at(step: int) -> torch.Tensor:
        # Alternate peaked and flat steps so both branches of every gate run.
        scale = 6.0 if step % 3 == 0 else 0.5
        return torch.randn(vocab, generator=gen) * scale

    # SwiReasoning, with a low window and a cap so switches and injections happen.
    swir = SwirParams(
        think_start_id=1,
        think_end_id=2,
        linebreak_id=3,
        eos_id=0,
        window=2,
        max_switch_count=1,
        convergence_ids=(2,),
        termination_ids=(2, 5, 6),
        termination_max_tokens=4,
        max_new_tokens=steps,
        math_ids=frozenset({7}),
    )
    st, emitted = SwirState(), []
    for t in range(steps):
        logits = logits_at(t)
        y = int(torch.multinomial(authors_sampling_probs(logits), 1, generator=gen))
        emb, st, tok = swir_reference_step(logits, y, st, swir, table)
        assert emb.shape == (dim,) and torch.isfinite(emb).all()
        if t == 0 and st.mode == 0 and not st.locked and tok not in swir.math_ids:
            raw = torch.softmax(logits, -1)
            expected = 0.9 * (raw.unsqueeze(0) @ table).squeeze(0) + 0.1 * table[3]
            assert torch.allclose(emb, expected)
        emitted.append(tok)
        if st.finished:
            break
    print(
        f"swir: {len(emitted)} steps, switches {st.switch_count}, mode {st.mode}, "
        f"locked {st.locked}, budget {st.budget}"
    )

    # SeLaR: a flat step gates (latent input), a peaked one does not (plain embedding).
    selar = SelarParams(math_ids=frozenset({7}))
    gated = 0
    for t in range(steps):
        logits = logits_at(t)
        y = int(torch.multinomial(selar.sampling_probs(logits), 1, generator=gen))
        emb, _, tok = selar_reference_step(logits, y, None, selar, table)
        assert tok == y and emb.shape == (dim,) and torch.isfinite(emb).all()
        gated += int(not torch.equal(emb, table[y]))
    print(f"selar: {gated}/{steps} steps fed a latent input")

    # Multiplex: K draws per step until the visible draw is </think>, then plain decoding.
    mp = MultiplexParams(think_end_id=2)
    mst = MultiplexState()
    for t in range(steps):
        logits = logits_at(t)
        if t == steps // 2:
            logits[2] = 50.0  # make </think> certain so the exit path runs
        draws = torch.multinomial(
            mp.sampling_probs(logits), mp.width, replacement=True, generator=gen
        )
        was_thinking = mst.in_thinking
        emb, mst, tok = multiplex_reference_step(logits, draws, mst, mp, table)
        assert tok == int(draws[0]) and emb.shape == (dim,)
        if not was_thinking or tok == 2:
            assert torch.equal(emb, table[tok])
    assert not mst.in_thinking
    print("multiplex: left thinking on the </think> draw; plain inputs afterwards")

    # Soft Thinking: Cold Stop (τ above any entropy, L 3) forces </think>, then the release
    # aborts 3 steps later; Randomized Soft Thinking (Gumbel) does neither count nor abort.
    for release, noise in (("soft_thinking", "none"), ("randomized", "gumbel")):
        params = SoftThinkingParams(
            think_end_id=2, release=release, noise=noise, max_topk=5, top_k=20,
            early_stopping_entropy_threshold=100.0, early_stopping_length_threshold=3,
        )  # fmt: skip
        st, tokens = SoftThinkingState(), []
        for t in range(steps):
            logits = logits_at(t)
            y = int(torch.multinomial(authors_sampling_probs(logits), 1, generator=gen))
            emb, st, tok = soft_thinking_reference_step(
                logits, y, st, params, table, CounterDraws(0, t)
            )
            assert emb.shape == (dim,) and torch.isfinite(emb).all()
            tokens.append(tok)
            if st.finished:
                break
        assert tokens[2] == 2 and st.cold_stops == 1
        assert (st.finished == "abort") == (release == "soft_thinking")
        print(f"soft thinking ({release}): </think> at step 2, {len(tokens)} steps, {st.finished}")


if __name__ == "__main__":
    _main()
