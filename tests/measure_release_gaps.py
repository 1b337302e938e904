"""Measure, on real next-token distributions of the embedded model, the differences between each
soft-input method as its authors released it and as mixinputs runs it (issue 24): the numbers
``docs/soft-input-methods.md`` quotes.

Run: ``python tests/measure_release_gaps.py`` (about a minute on two CPU cores). It samples
continuations of a few prompts with transformers (SmolLM2-135M, float32, T 0.6, top-k 30, top-p
0.95: Soft Thinking's released settings), keeps every step's raw logits, and prints one JSON
object. Nothing here is a test; the reference rules it measures against are in
``tests/reference/``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mixinputs.config import MoIConfig
from mixinputs.methods.noise import noisy_scores
from mixinputs.mixing import (
    candidate_entropy,
    kept_dirichlet,
    mask_top_k_top_p,
    method_rows,
)

PROMPTS = [
    "The capital of France is",
    "Question: what is 17 + 25? Answer:",
    "Write a short poem about the sea:",
    "1, 2, 3, 4,",
    "Explain why the sky is blue.",
    "def fibonacci(n):",
    "A farmer has 12 cows and buys 7 more. How many cows",
    "Once upon a time, in a village by the river,",
]
T, TOP_K, TOP_P, MIN_P, K = 0.6, 30, 0.95, 0.001, 10  # Soft Thinking's qwq32b_st_math.sh
TOKENS = 96


def distributions() -> tuple[torch.Tensor, list[int]]:
    """[N, V] raw logits of every sampled step of the prompts' continuations, and where each
    continuation starts."""
    import transformers

    from mixinputs.embedded_model import embedded_model_path

    path = str(embedded_model_path())
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    rows, starts = [], []
    torch.manual_seed(0)
    for prompt in PROMPTS:
        starts.append(len(rows))
        ids = tok(prompt, return_tensors="pt")
        out = model.generate(
            **ids, max_new_tokens=TOKENS, do_sample=True, temperature=T, top_k=TOP_K,
            top_p=TOP_P, output_logits=True, return_dict_in_generate=True,
            pad_token_id=tok.eos_token_id,
        )  # fmt: skip
        rows.extend(logit[0] for logit in out.logits)
    return torch.stack(rows).float(), starts


def cold_stop_triggers(low: torch.Tensor, starts: list[int], steps: int) -> int:
    """How often L consecutive low steps complete within each continuation (the count restarts
    after each trigger, as in the release)."""
    fired, run = 0, 0
    for i, is_low in enumerate(low.tolist()):
        if i in starts:
            run = 0
        run = run + 1 if is_low else 0
        if run >= steps:
            fired, run = fired + 1, 0
    return fired


def release_kept(probs: torch.Tensor, min_p: float) -> torch.Tensor:
    """Soft Thinking's order: top-k, top-p, then min-p (``sampler.py:148-158``): the kept mask."""
    n = probs.shape[0]
    kept = mask_top_k_top_p(probs.log(), torch.full((n,), TOP_K), torch.full((n,), TOP_P))
    p = torch.softmax(kept, -1)
    return (p > 0) & (p >= p.amax(-1, keepdim=True) * min_p)


def vllm_kept(probs: torch.Tensor, min_p: float) -> torch.Tensor:
    """vLLM's order: min-p first (an argmax-invariant logits processor), then top-k / top-p."""
    n = probs.shape[0]
    logits = probs.log().masked_fill(probs < probs.amax(-1, keepdim=True) * min_p, -math.inf)
    kept = mask_top_k_top_p(logits, torch.full((n,), TOP_K), torch.full((n,), TOP_P))
    return torch.isfinite(kept)


def top_weights(probs: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """[N, V] the concept token's weights: the kept distribution's top-K, renormalized."""
    p = torch.where(kept, probs, 0.0)
    values, ids = p.topk(K, dim=-1)
    return torch.zeros_like(p).scatter(1, ids, values / values.sum(-1, keepdim=True))


def measure(raw: torch.Tensor, starts: list[int]) -> dict:
    n, vocab = raw.shape
    probs = torch.softmax(raw / T, -1)
    kept = release_kept(probs, MIN_P)
    p_kept = torch.where(kept, probs, 0.0)
    p_kept = p_kept / p_kept.sum(-1, keepdim=True)
    top1 = p_kept.max(-1).values
    full = -(probs * probs.clamp(min=1e-12).log()).sum(-1)
    cand = candidate_entropy(torch.where(kept, raw / T, -math.inf).topk(K, -1).values)
    out = {"steps": n, "vocab": vocab}
    # The emitted token: the sampled one differs from the top-1 with probability 1 - p(top-1).
    out["sampled_not_top1_share"] = float((1 - top1).mean())
    # Cold Stop's entropy: the whole vocabulary's (release) against the cut top-K's.
    out["entropy_below_0.01_full_share"] = float((full < 0.01).float().mean())
    out["entropy_below_0.01_candidates_share"] = float((cand < 0.01).float().mean())
    one = kept.sum(-1) == 1  # top-p keeps one token: the candidates' entropy is exactly 0
    out["one_token_kept_share"] = float(one.float().mean())
    out["one_token_kept_full_entropy_at_least_0.01_share"] = float(
        (full[one] >= 0.01).float().mean()
    )
    for name, measured in (("full", full), ("candidates", cand)):
        fired = cold_stop_triggers(measured < 0.01, starts, 5)
        out[f"cold_stop_triggers_per_1000_steps_tau_0.01_L5_{name}"] = 1000 * fired / n
    # min-p's place: release after top-k / top-p, vLLM before.
    other = vllm_kept(probs, MIN_P)
    w_release, w_vllm = top_weights(probs, kept), top_weights(probs, other)
    out["min_p_order_kept_set_differs_share"] = float((kept != other).any(-1).float().mean())
    out["min_p_order_max_weight_diff"] = float((w_release - w_vllm).abs().max())
    out["min_p_order_mean_weight_l1"] = float((w_release - w_vllm).abs().sum(-1).mean())
    # After thinking: the released scripts sample with min-p 0 (mixinputs keeps the request's).
    no_min_p = release_kept(probs, 0.0)
    cut = (no_min_p & ~kept).any(-1)
    out["after_thinking_min_p_cuts_share"] = float(cut.float().mean())
    out["after_thinking_min_p_cut_mass_max"] = float(
        torch.where(no_min_p & ~kept, torch.where(no_min_p, probs, 0.0), 0.0).sum(-1).max()
        / torch.where(no_min_p, probs, 0.0).sum(-1).max()
    )
    # SeLaR (k 3, τ 0.5 on T 0.6 / top-k 20 / top-p 0.95): the per-row gate rate, and how often a
    # batch of 64 has some row gating (the released loop then feeds every row latent).
    selar = mask_top_k_top_p(raw / T, torch.full((n,), 20), torch.full((n,), 0.95))
    head = torch.softmax(selar, -1).topk(3, -1).values
    head = head / (head.sum(-1, keepdim=True) + 1e-10)
    h = (-(head * (head + 1e-10).log()).sum(-1) / math.log(3)).clamp(0, 1)
    rate = float((h >= 0.5).float().mean())
    out["selar_gate_rate"] = rate
    out["selar_batch64_some_row_gates"] = 1 - (1 - rate) ** 64
    # Dirichlet over every kept token (α 4, K 15) against the prior's top-15: how much of the fed
    # weight goes to tokens beyond it.
    config = MoIConfig(mode="soft", noise="dirichlet", think_end=0)
    rows = method_rows([config] * n, list(range(n)), [7] * n)
    kept_logits = torch.where(kept, raw / T, -math.inf)
    draws = kept_dirichlet(kept_logits, rows, 15)
    weights = torch.softmax(draws.scores, -1)
    prior_top = kept_logits.topk(15, -1).indices
    beyond = ~(draws.ids[..., None] == prior_top[:, None, :]).any(-1)
    out["dirichlet_kept_weight_beyond_prior_top15_mean"] = float((weights * beyond).sum(-1).mean())
    out["dirichlet_kept_top1_not_prior_top1_share"] = float(
        (draws.ids[:, 0] != kept_logits.argmax(-1)).float().mean()
    )
    # Gumbel (τ 0.5, K 15): how often the sampled token is the heaviest fed component (what the
    # release emits), were the sampled token emitted (``soft_emit="sample"``).
    gumbel = MoIConfig(mode="soft", noise="gumbel", think_end=0)
    g_rows = method_rows([gumbel] * n, list(range(n)), [7] * n)
    vals, ids = kept_logits.topk(15, -1)
    w = torch.softmax(vals, -1)
    heaviest = noisy_scores(w, ids, g_rows).argmax(-1)
    out["gumbel_sampled_is_heaviest_share"] = float(w.gather(1, heaviest[:, None]).mean())
    return out


if __name__ == "__main__":
    print(json.dumps(measure(*distributions()), indent=1))
