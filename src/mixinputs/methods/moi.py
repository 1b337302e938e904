"""Mixture of Inputs and direct mixture (Zhuang et al. 2025, arXiv 2505.14827).

MoI feeds the posterior mean of a Dirichlet prior (α = H·p) updated by the sampled token y:
``w = (H·p + (β+1−H)·onehot(y)) / (β+1)`` over the candidates ``top-K ∪ {y}``
(:func:`mixinputs.core.weights.mixture_weights`); direct mixture feeds ``w = p`` over the top-K
alone, ignoring y wherever it lies, as the original release does (EvanZhuang/mixinputs @
7aef34b, ``gpu_model_runner.py:1229-1236``). Both are the mixing core's own rule: neither needs a
step of its own, so neither declares anything beyond its mode.
"""

from __future__ import annotations

from mixinputs.methods.base import DEFAULT_TOP_K, Method


class MoI(Method):
    name = "moi"
    title = "Mixture of Inputs"
    asks = '`"mixinputs_beta": 1.0`'
    feeds = (
        "the posterior mean `Σ w_i E[i]`, `w_i = (H·p_i + (β+1−H)·[i=y]) / (β+1)` over the top-K "
        "of `p`"
    )
    paper = "Zhuang et al. 2025, [arXiv 2505.14827](https://arxiv.org/abs/2505.14827)"
    specs = ("moi", "moi:beta=2")
    top_k = DEFAULT_TOP_K  # the original release's K (20)
    noise = True  # mixinputs' own combination (no release): Dirichlet τ 1.0, Gumbel τ 0.5


class Direct(Method):
    name = "direct"
    title = "direct mixture"
    asks = '`"mixinputs_mode": "direct"`'
    feeds = "`Σ p_i E[i]` over the top-K of `p` (the sampled token plays no part, as released)"
    paper = "Zhuang et al. 2025, [arXiv 2505.14827](https://arxiv.org/abs/2505.14827)"
    specs = ("direct",)
    direct = True


MOI = MoI()
DIRECT = Direct()
