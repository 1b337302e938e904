"""Transcriptions of the authors' own per-step rules, one module per method, for the faithfulness
tests (issues 17, 24): ``swir``, ``selar``, ``multiplex``, ``soft`` (Soft Thinking and Randomized
Soft Thinking) and ``sampling`` (the filter SwiReasoning and SeLaR share).

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
(``mixinputs.core.rng.counter_uniform``, keyed by seed, output position, token id and draw: see
``CounterDraws``), from the same distributions, so that runs can be compared token for token.

Where the authors' batched code couples rows (SeLaR), the transcription follows its batch-of-one
behaviour; the quirk is named in the function's docstring. Nothing here imports vLLM or
transformers; ``python -m tests.reference`` runs a smoke test on random tensors.
"""

from __future__ import annotations

from tests.reference.multiplex import MultiplexParams, MultiplexState, multiplex_reference_step  # noqa: F401
from tests.reference.sampling import authors_sampling_filter, authors_sampling_probs  # noqa: F401
from tests.reference.selar import SelarParams, selar_batch_reference_step, selar_reference_step  # noqa: F401
from tests.reference.soft import (  # noqa: F401
    RELEASES,
    ST,
    CounterDraws,
    SoftThinkingParams,
    SoftThinkingState,
    soft_thinking_reference_step,
    soft_thinking_sampler_step,
    soft_thinking_update_topk_info,
    soft_thinking_weighted_forward,
)
from tests.reference.swir import SwirParams, SwirState, swir_reference_step  # noqa: F401
