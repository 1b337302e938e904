"""Multiplex Thinking (arXiv 2601.08808): the input is the mean of K draws from the distribution.

The authors' release (github GMLR-Penn/Multiplex-Thinking @ 6e524ac) is the spec: its SGLang fork's
``sampler.py`` 166-201 (the step) and ``scripts/train.sh`` 183, 303 (width 3, weights
proportional to the draws' probabilities).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mixinputs.methods.base import Column, Key, Method, RowContext, count, flag, torch

MULTIPLEX_WIDTH = 3
_DRAWS = 1 << 20  # counter draw indices of its samples (noise uses 0 .. 3·_GAMMA_TRIES)


@dataclass(frozen=True)
class MultiplexFields:
    multiplex_width: int = MULTIPLEX_WIDTH  # K draws
    multiplex_weighted: bool = True  # weighted by their probabilities, or 1/K


class Multiplex(Method):
    name = "multiplex"
    title = "Multiplex Thinking"
    asks = (
        '`"mixinputs_mode": "multiplex"` (+ `mixinputs_multiplex_width`, '
        "`mixinputs_multiplex_weighted`)"
    )
    feeds = (
        "while thinking, `Σ w_i E[s_i]` over K draws from the sampled distribution (the first is "
        "y), `w_i ∝ p(s_i)` (its release is always weighted); seeded draws"
    )
    paper = "[arXiv 2601.08808](https://arxiv.org/abs/2601.08808)"
    specs = ("multiplex", "multiplex:k=3")
    priors = ("sampling",)
    regions = ("thinking", "all")
    family_code = 3
    own_rows = True
    masks_prior = True  # its draws come from what the sampler's own top-k / top-p keep
    width_key = "multiplex_width"  # what ``k`` sets in a --method spec
    keys = {
        "mixinputs_multiplex_width": Key(
            "multiplex_width", "int ≥ 1 (at most `MIXINPUTS_MAX_TOP_K` + 1 in vLLM)",
            "3 (`scripts/train.sh:183`)",
        ),
        "mixinputs_multiplex_weighted": Key(
            "multiplex_weighted", "`true` / `false` (1/K)", "`true` (`train.sh:303`)"
        ),
    }  # fmt: skip
    columns = {
        "multiplex_width": Column("long"),  # K draws
        "multiplex_weighted": Column("bool"),  # weights ∝ the draws' probabilities (else 1/K)
    }

    def check(self, config: Any, set_field, mode: Method) -> None:
        set_field("multiplex_width", count(config.multiplex_width, "mixinputs_multiplex_width"))
        flag(config.multiplex_weighted, "mixinputs_multiplex_weighted")

    def max_width(self, config: Any) -> int:
        """Candidate columns its input takes (an engine's K + 1 must hold them)."""
        return config.multiplex_width if config.mode == self.name else 0

    def worst_case(self, k: int) -> dict[str, Any]:
        return {"multiplex_width": k + 1}  # draws over V at the widest input

    def needs_step(self, config: Any) -> bool:
        return config.mode == self.name

    def draws_random(self, config: Any) -> bool:
        return config.mode == self.name

    def draws(self, config: Any) -> int:
        return config.multiplex_width - 1 if config.mode == self.name else 0

    def row(self, config: Any, ctx: RowContext) -> dict[str, Any]:
        return {
            "multiplex_width": config.multiplex_width,
            "multiplex_weighted": config.multiplex_weighted,
        }

    def work(self, config: Any, settings: Any, cut: bool) -> set[str]:
        # Its draws come from what the sampler's own top-k / top-p keep: masks over V.
        return {"masked_prior"} if config.mode == self.name and cut else set()

    # 7. K draws, only while in the region; given its rows, the [X, V] draws run on those only.
    def replace(self, step, rows, state, inputs, active):
        from mixinputs.core.select import put_rows as put
        from mixinputs.core.select import rows_at

        k = step.ids.shape[1] - 1
        y = step.ids[:, k]
        mux = ((rows.family == self.family_code) & active)[:, None]
        at = inputs.rows_of(self.name)
        x_ids, x_w = multiplex_candidates(
            rows_at(y, at), rows_at(inputs.prior, at), rows_at(rows, at), inputs.draws, k + 1
        )
        return step._replace(
            ids=torch.where(mux, put(at, step.ids, x_ids), step.ids),
            weights=torch.where(mux, put(at, step.weights, x_w), step.weights),
        )


def multiplex_candidates(
    y: torch.Tensor, prior: torch.Tensor, rows, draws: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multiplex Thinking: ids and weights [M, width] of its K draws (SGLang fork ``sampler.py``
    166-201).

    Draw 1 is the sampled token y; draws 2..K come from the same distribution (``prior``, the
    sampler's logits cut to its top-k / top-p), with replacement, by Gumbel-max on counter-based
    uniforms keyed by (seed, output position, token id, draw): the same in any batch and after
    a preemption. Weights ∝ the draws' probabilities (duplicates count each time), or 1/K.

    >>> from types import SimpleNamespace as Row
    >>> rows = Row(seed=torch.tensor([1]), position=torch.tensor([0]),
    ...            multiplex_width=torch.tensor([2]), multiplex_weighted=torch.tensor([True]))
    >>> ids, w = multiplex_candidates(torch.tensor([3]), torch.tensor([[-9.0, -9.0, -9.0, 0.0]]),
    ...                               rows, draws=2, width=3)
    >>> ids.tolist(), w.tolist()  # the second draw is 3 again; the third column is unused
    ([[3, 3, 3]], [[0.5, 0.5, 0.0]])
    """
    from mixinputs.core.rng import counter_uniform

    m, vocab = prior.shape
    device = prior.device
    cols = torch.arange(width, device=device)
    ids = y[:, None].expand(m, width).clone()
    tokens = torch.arange(vocab, device=device)
    logits = prior.float()
    for d in range(1, min(draws + 1, width)):
        draw = tokens.new_full((), _DRAWS + d)
        u = counter_uniform(rows.seed[:, None], rows.position[:, None], tokens[None], draw)
        gumbel = -torch.log(-torch.log(u))
        ids[:, d] = torch.argmax(logits + gumbel, dim=-1)
    used = cols[None] < rows.multiplex_width[:, None]
    ids = torch.where(used, ids, y[:, None])
    scores = torch.where(rows.multiplex_weighted[:, None], logits.gather(1, ids), 0.0)
    weights = torch.softmax(scores.masked_fill(~used, float("-inf")), dim=-1)
    return ids, weights


MULTIPLEX = Multiplex()
