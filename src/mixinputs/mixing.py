"""The Mixture-of-Inputs math: pure PyTorch, batched, one code path for every device.

This is the public face of the mixing core (``mixinputs.core``: one concept a file) and of the
methods' own steps (``mixinputs.methods``: one module a method). It imports nothing from vLLM or
transformers; engine adapters only move data into it.

The recipe for one decode step, per row b (a request):

1. Candidates. The top-K raw logits, plus the sampled token y as one extra slot:
   ``ids = [topk_ids..., y]`` (``core.candidates``). When y is already in the top-K the extra
   slot gets a score of -inf (zero probability), so y is never counted twice.
2. Prior. ``p = softmax(scores)`` over the candidates (temperature 1).
3. Confidence. ``H = entropy(p) / log(n)``, n the candidates with non-zero probability.
4. Posterior mean. ``w = (H·p + (β+1−H)·onehot(y)) / (β+1)`` (``core.weights``); direct mixture
   ``w = p`` over the top-K alone (EvanZhuang/mixinputs @ 7aef34b,
   ``gpu_model_runner.py:1229-1236``).
5. Mixture. ``h = Σ_i w_i E[ids_i]``, accumulated in float32, returned in the embedding's dtype
   (``core.mix``).

MoI's rule for y outside the top-K (temperature, top-p or a grammar can sample it): y joins the
candidates with its own probability, so ``w`` stays a convex combination. The original release
kept p on the top-K only and added ``(1−H)·E[y]`` on top (``gpu_model_runner.py:1218-1228``): its
weights then sum to ``1 − H·β/(β+1)``, not one. When y is in the top-K both rules are the same.

The soft-input family runs as the numbered recipe of ``core.step.apply_methods``, each stage
filled in by the methods' modules.
"""

from __future__ import annotations

from mixinputs.core.candidates import (
    Candidates,
    candidates_from_logits,
    candidates_from_topk,
    drop_sampled,
    mask_top_k_top_p,
    restrict_to_row_k,
    sampling_prior_masks,
    top_k_normalizer,
    top_k_of,
)
from mixinputs.core.mix import (
    dense_inputs,
    mix_candidates,
    mix_embeddings,
    mix_rows,
    mix_step_inputs,
)
from mixinputs.core.rng import counter_log_gamma, counter_uniform
from mixinputs.core.rows import (
    ROW_DTYPES,
    ROW_WIDTHS,
    STATE_DTYPES,
    CarriedState,
    MethodRows,
    RowSettings,
    fresh_state,
    method_rows,
    row_settings,
)
from mixinputs.core.select import rows_at
from mixinputs.core.step import MethodInputs, MethodStep, apply_methods, mix_step
from mixinputs.core.weights import candidate_entropy, mixture_weights, normalized_entropy
from mixinputs.methods import KeptDraws
from mixinputs.methods import draw_kept as kept_dirichlet
from mixinputs.methods.base import DEFAULT_TOP_K

__all__ = [
    "DEFAULT_TOP_K",
    "ROW_DTYPES",
    "ROW_WIDTHS",
    "STATE_DTYPES",
    "Candidates",
    "CarriedState",
    "KeptDraws",
    "MethodInputs",
    "MethodRows",
    "MethodStep",
    "RowSettings",
    "apply_methods",
    "candidate_entropy",
    "candidates_from_logits",
    "candidates_from_topk",
    "counter_log_gamma",
    "counter_uniform",
    "dense_inputs",
    "drop_sampled",
    "fresh_state",
    "kept_dirichlet",
    "mask_top_k_top_p",
    "method_rows",
    "mix_candidates",
    "mix_embeddings",
    "mix_rows",
    "mix_step",
    "mix_step_inputs",
    "mixture_weights",
    "normalized_entropy",
    "restrict_to_row_k",
    "row_settings",
    "rows_at",
    "sampling_prior_masks",
    "top_k_normalizer",
    "top_k_of",
]
