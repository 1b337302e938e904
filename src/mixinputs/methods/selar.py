"""SeLaR (arXiv 2604.08299): an entropy-gated latent input pushed away from the top token.

The authors' release (github Parker-rfu/SeLaReasoning @ 1198a74) is the spec:
``src/generation_utils.py`` 243-300 (the step), ``scripts/run.py`` 247-249 (the sampling recipe)
and 261-262 (k 3, τ 0.5; the contrastive weight is the function default 1.0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from mixinputs.methods.base import (
    Column,
    Key,
    Method,
    MoIConfigError,
    RowContext,
    choice,
    torch,
    unit,
)
from mixinputs.methods.plain_math import plain_rows

SELAR_TOP_K = 3
SELAR_GATES = ("row", "always")
"""``"row"``: each row gates on its own entropy (the paper's rule; default); ``"always"``: every
step feeds the latent input, what the released batched runs amount to (any gated row of the batch
makes every row latent, ``src/generation_utils.py:221-232, 275-303``)."""
SELAR_GREEDY = ("point_mass", "released")
"""A greedy SeLaR request: ``"point_mass"``, its sampling distribution is onehot(y), so it feeds
E[y] (default); ``"released"``, it gates and mixes over the released recipe's distribution
(``SELAR_RECIPE``), as ``generate_selar`` does with ``do_sample=False`` (lines 243-261)."""
SELAR_RECIPE = (0.6, 20, 0.95)
"""(temperature, top-k, top-p) of SeLaR's released runs (``scripts/run.py:247-249``)."""


@dataclass(frozen=True)
class SelarFields:
    # The normalized-entropy gate τ and the contrastive weight λ (K = top_k).
    selar_threshold: float = 0.5
    selar_contrast: float = 1.0
    selar_gate: str = "row"  # SELAR_GATES
    selar_greedy: str = "point_mass"  # SELAR_GREEDY


class Selar(Method):
    name = "selar"
    title = "SeLaR"
    asks = (
        '`"mixinputs_mode": "selar"` (+ `mixinputs_selar_threshold`, `_contrast`, `_gate`, '
        "`_greedy`)"
    )
    feeds = (
        "when the sampled distribution's top-3 normalized entropy ≥ τ: `base + λĤ(base − "
        "E[top1])`, `base` their renormalized mixture; else `E[y]` (per row; `always`: latent at "
        "every step, what the released batched runs amount to)"
    )
    paper = "[arXiv 2604.08299](https://arxiv.org/abs/2604.08299)"
    specs = ("selar", "selar:selar_threshold=0.7", "selar:selar_gate=always")
    top_k = SELAR_TOP_K
    priors = ("sampling",)
    regions = ("all",)
    reads_math = True  # a math-symbol token is fed as itself (plain_math.py)
    family_code = 2
    keys = {
        "mixinputs_selar_threshold": Key(
            "selar_threshold", "number in [0, 1]", "0.5 (`scripts/run.py:262`)"
        ),
        "mixinputs_selar_contrast": Key(
            "selar_contrast", "number ≥ 0", "1.0 (`generation_utils.py`'s default)"
        ),
        "mixinputs_selar_gate": Key("selar_gate", '`"row"`, `"always"`', '`"row"` (the paper)'),
        "mixinputs_selar_greedy": Key(
            "selar_greedy", '`"point_mass"`, `"released"`', '`"point_mass"`'
        ),
    }
    columns = {
        "selar_threshold": Column("float32"),  # the gate τ on the normalized entropy
        "selar_contrast": Column("float32"),  # the push λ away from the top token
        "selar_always": Column("bool"),  # feeds its latent input at every step
    }

    def check(self, config: Any, set_field, mode: Method) -> None:
        set_field("selar_threshold", unit(config.selar_threshold, "mixinputs_selar_threshold"))
        contrast = config.selar_contrast
        if (
            isinstance(contrast, bool)
            or not isinstance(contrast, (int, float))
            or not (math.isfinite(contrast) and contrast >= 0)
        ):
            raise MoIConfigError(
                f"mixinputs_selar_contrast must be a finite number >= 0, got {contrast!r}"
            )
        set_field("selar_contrast", float(contrast))
        choice(config.selar_gate, "mixinputs_selar_gate", SELAR_GATES)
        choice(config.selar_greedy, "mixinputs_selar_greedy", SELAR_GREEDY)

    def worst_case(self, k: int) -> dict[str, Any]:
        return {}

    def needs_step(self, config: Any) -> bool:
        return config.mode == self.name

    def greedy_recipe(self, config: Any) -> tuple[float, int, float] | None:
        if config.mode == self.name and config.selar_greedy == "released":
            return SELAR_RECIPE
        return None

    def row(self, config: Any, ctx: RowContext) -> dict[str, Any]:
        return {
            "selar_threshold": config.selar_threshold,
            "selar_contrast": config.selar_contrast,
            "selar_always": config.selar_gate == "always",
        }

    # 7. Its weights over the same candidates.
    def replace(self, step, rows, state, inputs, active):
        k = step.ids.shape[1] - 1
        plain = plain_rows(rows, step.ids[:, k], inputs.plain_mask)
        selar = (rows.family == self.family_code)[:, None]
        return step._replace(
            weights=torch.where(selar, selar_weights(step, rows, plain), step.weights)
        )


def selar_weights(step, rows, plain: torch.Tensor) -> torch.Tensor:
    """SeLaR: weights [M, K+1] over the candidates (``src/generation_utils.py`` 243-300).

    The row's top-k of the sampling distribution, renormalized: ``w``; its entropy over
    ``log k`` (clamped to [0, 1]): ``Ĥ``. If ``Ĥ >= τ`` (float32) and the sampled token is not
    a math symbol, the input is ``base + λĤ(base − E[top1])`` with ``base = Σ w_i E[i]``, i.e.
    weights ``(1 + λĤ)w − λĤ·onehot(top1)``; otherwise ``E[y]``. Rows with ``selar_always``
    feed the latent input at every step, math symbols included: what the released batched loop
    feeds every row once any row of its batch gates (lines 275-303).

    >>> from types import SimpleNamespace as Row
    >>> step = Row(ids=torch.tensor([[4, 7, 9]]), scores=torch.tensor([[0.0, 0.0, -1e9]]))
    >>> rows = Row(top_k=torch.tensor([2]), selar_threshold=torch.tensor([0.5]),
    ...            selar_contrast=torch.tensor([1.0]), selar_always=torch.tensor([False]))
    >>> selar_weights(step, rows, torch.tensor([False])).tolist()  # Ĥ = 1: pushed from the top
    [[0.0, 1.0, 0.0]]
    """
    k = step.ids.shape[1] - 1
    top = step.scores[:, :k]  # the row's own top-k (columns past it are -inf)
    w = torch.softmax(top, dim=-1)
    entropy = -(w * torch.log(w + 1e-10)).sum(dim=-1)
    log_k = torch.log(rows.top_k.float())  # k >= 2 (config): the entropy's ceiling
    h = (entropy / log_k.clamp(min=1e-30)).clamp(0.0, 1.0)
    gate = ((h >= rows.selar_threshold) & ~plain) | rows.selar_always
    push = (rows.selar_contrast * h)[:, None]
    top1 = torch.zeros_like(w)
    top1[:, 0] = 1.0
    latent = torch.cat([(1.0 + push) * w - push * top1, torch.zeros_like(w[:, :1])], dim=-1)
    onehot_y = torch.zeros_like(latent)
    onehot_y[:, k] = 1.0
    return torch.where(gate[:, None], latent, onehot_y)


SELAR = Selar()
