"""SwiReasoning (Shi et al. 2025, arXiv 2510.05069): switch between latent and explicit thinking
on the entropy trend.

The authors' release (github sdc17/SwiReasoning @ 7f3b278) is the spec: ``generation_utils.py``
293-384 (the step), 232-241 and ``run.py`` 574-583 (defaults: alpha 1.0, beta 0.7, window 512,
no switch cap, 32 answer tokens after the termination phrase; the ramps grow over the request's
max_new_tokens, 341, 347).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from mixinputs.methods.base import (
    MAX_QUEUE,
    Column,
    Key,
    Method,
    RowContext,
    StateColumn,
    count,
    parse_token,
    parse_tokens,
    token_id,
    token_queue,
    torch,
    unit,
)

QUEUE = MAX_QUEUE  # its longest convergence / termination sequence
DEFAULT_THINK_START = "<think>"
SWIR_LINEBREAK = "\\n"
"""SwiReasoning blends its first latent input with ``E[convert_tokens_to_ids("\\n")]``: the
token spelled backslash + n (1699 in Qwen vocabularies), not the newline token."""
SWIR_CONVERGENCE = "</think>"
SWIR_CONVERGENCE_OTHER = "\n\n</think>\n\n"
"""Its convergence words: ``"</think>"`` for a Qwen model, this for any other (``run.py:458``,
``"</think>" if "Qwen" in model_name else "\n\n</think>\n\n"``)."""
SWIR_TERMINATION = "</think>\n\nThe final answer is"
SWIR_RAMP_TOKENS = 38912
"""Its ramp length when a request has no ``max_tokens`` (``run.py:579``)."""


@dataclass(frozen=True)
class SwirFields:
    # The blend coefficients' starts, the window W, the switch cap M (None: off), the ramps'
    # length, the answer budget after the termination phrase, and the tokens it feeds or
    # injects (text, or ids once resolved).
    swir_alpha: float = 1.0
    swir_beta: float = 0.7
    swir_window: int = 512
    swir_max_switches: int | None = None
    swir_ramp_tokens: int | None = None  # None: the request's max_tokens (max_new_tokens)
    swir_answer_tokens: int = 32
    swir_linebreak: str | int = SWIR_LINEBREAK
    swir_convergence: str | tuple[int, ...] | None = None  # None: by the model's family
    swir_termination: str | tuple[int, ...] = SWIR_TERMINATION
    think_start: str | int = DEFAULT_THINK_START


def _key(field: str, values: str, default: str) -> Key:
    return Key(field, values, default)


class Swir(Method):
    name = "swir"
    title = "SwiReasoning"
    asks = '`"mixinputs_mode": "swir"` (+ `mixinputs_swir_*`, `mixinputs_think_start`)'
    feeds = (
        "switches between latent `p·E` (the whole vocabulary) and `E[y]` by the entropy trend, "
        "blends `E[<think>]` / `E[</think>]` in at a switch (ramping to 1 over the request's "
        "`max_tokens`), injects the model family's convergence words past a switch cap"
    )
    paper = "Shi et al. 2025, [arXiv 2510.05069](https://arxiv.org/abs/2510.05069)"
    specs = ("swir", "swir:swir_max_switches=2")
    priors = ("raw",)
    regions = ("all",)
    reads_math = True  # a math-symbol token is fed as itself (plain_math.py)
    family_code = 1
    own_rows = True
    dense = True
    min_width = 4  # it feeds four tokens: the engine's K + 1 must hold them
    sequences = ("swir_convergence", "swir_termination")
    keys = {
        "mixinputs_swir_alpha": _key("swir_alpha", "number in [0, 1]", "1.0 (`run.py:574`)"),
        "mixinputs_swir_beta": _key("swir_beta", "number in [0, 1]", "0.7 (`run.py:575`)"),
        "mixinputs_swir_window": _key("swir_window", "int ≥ 1", "512 (`run.py:576`)"),
        "mixinputs_swir_max_switches": _key(
            "swir_max_switches", "int ≥ 1, or none", "none: no cap (`run.py:577`)"
        ),
        "mixinputs_swir_ramp_tokens": _key(
            "swir_ramp_tokens", "int ≥ 1", "the request's `max_tokens` (`generation_utils.py:341`)"
        ),
        "mixinputs_swir_answer_tokens": _key(
            "swir_answer_tokens", "int ≥ 1", "32 (`run.py:583`)"
        ),
        "mixinputs_swir_linebreak": _key(
            "swir_linebreak", "token text or id", '`"\\n"` (backslash + n, as released)'
        ),
        "mixinputs_swir_convergence": _key(
            "swir_convergence", "text or a list of ≤ 16 ids",
            '`"</think>"` on Qwen, else `"\\n\\n</think>\\n\\n"` (`run.py:458`)',
        ),
        "mixinputs_swir_termination": _key(
            "swir_termination", "text or a list of ≤ 16 ids",
            '`"</think>\\n\\nThe final answer is"`',
        ),
        "mixinputs_think_start": _key("think_start", "token text or id", '`"<think>"`'),
    }  # fmt: skip
    columns = {
        "swir_alpha": Column("float32"),  # its latent-entry blend, at t = 0
        "swir_beta": Column("float32"),  # its explicit-entry blend, at t = 0
        "swir_window": Column("long"),  # W, explicit steps before it may go latent again
        "swir_max_switches": Column("long"),  # M, the switch cap (0: off)
        "swir_ramp_tokens": Column("long"),  # the blends reach 1 at this t
        "swir_answer_tokens": Column("long"),  # answer budget after the termination phrase
        "swir_think_end": Column("long"),  # </think> (locks the row explicit when sampled)
        "think_start": Column("long"),  # <think> (blended in when going latent)
        "swir_linebreak": Column("long"),  # blended into the first latent input
        "swir_convergence": Column("long", QUEUE),  # injected at the cap (NO_TOKEN padded)
        "swir_convergence_len": Column("long"),
        "swir_termination": Column("long", QUEUE),  # injected past twice the cap
        "swir_termination_len": Column("long"),
    }
    state = {
        "swir_explicit": StateColumn("bool", False),  # explicit mode (rows start latent)
        "swir_stay": StateColumn("long", 0),  # steps since its last switch
        "swir_ref": StateColumn("float32", 0.0),  # the reference entropy
        "swir_locked": StateColumn("bool", False),  # it sampled </think>: explicit from then
        "swir_switches": StateColumn("long", 0),  # latent -> explicit switches (under a cap)
        "swir_queue": StateColumn("long", 0),  # 0 none, 1 convergence, 2 termination
        "swir_queue_pos": StateColumn("long", 0),  # the next token of that sequence
        "swir_budget": StateColumn("long", -1),  # answer tokens left after termination
    }

    def check(self, config: Any, set_field, mode: Method) -> None:
        set_field("swir_alpha", unit(config.swir_alpha, "mixinputs_swir_alpha"))
        set_field("swir_beta", unit(config.swir_beta, "mixinputs_swir_beta"))
        set_field("swir_window", count(config.swir_window, "mixinputs_swir_window"))
        for name in ("swir_max_switches", "swir_ramp_tokens"):
            if getattr(config, name) is not None:
                set_field(name, count(getattr(config, name), f"mixinputs_{name}"))
        answer = count(config.swir_answer_tokens, "mixinputs_swir_answer_tokens")
        set_field("swir_answer_tokens", answer)
        set_field("swir_linebreak", parse_token(config.swir_linebreak, "mixinputs_swir_linebreak"))
        set_field("think_start", parse_token(config.think_start, "mixinputs_think_start"))
        if config.swir_convergence is not None:
            phrase = parse_tokens(config.swir_convergence, "mixinputs_swir_convergence")
            set_field("swir_convergence", phrase)
        termination = parse_tokens(config.swir_termination, "mixinputs_swir_termination")
        set_field("swir_termination", termination)

    def tokens(self, config: Any) -> dict[str, Any]:
        if config.mode != self.name:
            return {}
        fields = {
            "think_end": config.think_end,
            "think_start": config.think_start,
            "swir_linebreak": config.swir_linebreak,
        }
        if config.swir_max_switches is not None:  # the phrases are injected under a cap only
            fields.update(
                swir_convergence=config.swir_convergence,
                swir_termination=config.swir_termination,
            )
        return fields

    def default_text(self, name: str, tokenizer: Any) -> str:
        return convergence_text(tokenizer)

    def eos_reason(self, config: Any) -> str:
        return "mixinputs_swir_max_switches ends the request with the EOS token"

    def worst_case(self, k: int) -> dict[str, Any]:
        return {"swir_max_switches": 2}  # softmax, entropy and p·E over V, and injections

    def needs_step(self, config: Any) -> bool:
        return config.mode == self.name

    def carries_state(self, config: Any) -> bool:
        return config.mode == self.name

    def needs_eos(self, config: Any) -> bool:
        return config.mode == self.name and config.swir_max_switches is not None

    def work(self, config: Any, settings: Any, cut: bool) -> set[str]:
        # Under a cap it injects tokens of its own (and EOS).
        return {"forces"} if config.mode == self.name and config.swir_max_switches else set()

    def row(self, config: Any, ctx: RowContext) -> dict[str, Any]:
        swir = config.mode == self.name
        convergence, convergence_len = token_queue(config.swir_convergence, swir)
        termination, termination_len = token_queue(config.swir_termination, swir)
        ramp = config.swir_ramp_tokens or ctx.max_tokens or SWIR_RAMP_TOKENS
        return {
            "swir_alpha": config.swir_alpha,
            "swir_beta": config.swir_beta,
            "swir_window": config.swir_window,
            "swir_max_switches": config.swir_max_switches or 0,
            "swir_ramp_tokens": int(ramp),
            "swir_answer_tokens": config.swir_answer_tokens,
            "swir_think_end": token_id(config.think_end, swir),
            "think_start": token_id(config.think_start, swir),
            "swir_linebreak": token_id(config.swir_linebreak, swir),
            "swir_convergence": convergence,
            "swir_convergence_len": convergence_len,
            "swir_termination": termination,
            "swir_termination_len": termination_len,
        }

    def injection(self, rows, state) -> torch.Tensor:
        """[B] the token its rows must emit this step (-1: none): the next queued token, or EOS
        once the answer budget is spent (decided by the state alone, before sampling)."""
        take, queued, _, ended = _queued(rows, state)
        return torch.where(ended, rows.eos, torch.where(take, queued, -1))

    # 7. Its own columns, share of p·E, emitted token and state; given its rows, its [S, V]
    #    work runs on those only (probs [S, V]).
    def replace(self, step, rows, state, inputs, active):
        from mixinputs.core.select import put_rows, rows_at

        k = step.ids.shape[1] - 1
        y = step.ids[:, k]
        swir = rows.family == self.family_code
        at = inputs.rows_of(self.name)
        y_at = rows_at(y, at)
        sw = swir_step(
            y_at, rows_at(inputs.prior, at), rows_at(rows, at), rows_at(state, at),
            inputs.plain_mask, k + 1,
        )  # fmt: skip

        def put(into: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
            return torch.where(
                swir.view(-1, *(1,) * (into.dim() - 1)), put_rows(at, into, part), into
            )

        return step._replace(
            ids=put(step.ids, sw.ids),
            sampled=put(step.sampled, sw.sampled),
            state=type(step.state)(*(put(b, a) for a, b in zip(sw.state, step.state, strict=True))),
            forced=put(step.forced, sw.sampled != y_at),
            chosen=put(step.chosen, sw.sampled != y_at),
            weights=put(step.weights, sw.weights),
            dense=put(step.dense, sw.dense),
            probs=sw.probs,
        )


def _queued(rows, state):
    """What its queue holds this step, from the state alone: whether a queued token is taken,
    that token, the queued sequence's length, and whether the answer budget is spent (EOS)."""
    cap = rows.swir_max_switches > 0
    one = state.swir_queue == 1
    sequence = torch.where(one[:, None], rows.swir_convergence, rows.swir_termination)
    length = torch.where(one, rows.swir_convergence_len, rows.swir_termination_len)
    take = cap & (state.swir_queue > 0) & (state.swir_queue_pos < length)
    queued = sequence.gather(1, state.swir_queue_pos.clamp(0, QUEUE - 1)[:, None])[:, 0]
    ended = cap & (state.swir_budget == 0) & (rows.eos >= 0)
    return take, queued, length, ended


def convergence_text(tokenizer: Any) -> str:
    """Its convergence words for this model: ``"</think>"`` for a Qwen model, else
    ``"\\n\\n</think>\\n\\n"`` (``run.py:458``: ``"Qwen" in model_name``; read here from the
    tokenizer's ``name_or_path``).

    >>> class Named: name_or_path = "Qwen/Qwen3-8B"
    >>> convergence_text(Named()), convergence_text(None) == SWIR_CONVERGENCE_OTHER
    ('</think>', True)
    """
    name = str(getattr(tokenizer, "name_or_path", "") or "")
    return SWIR_CONVERGENCE if "Qwen" in name else SWIR_CONVERGENCE_OTHER


class SwirStep(NamedTuple):
    ids: torch.Tensor  # [M, C]: the emitted token, </think>, <think>, the line break, padding
    weights: torch.Tensor  # [M, C]
    dense: torch.Tensor  # [M]
    sampled: torch.Tensor  # [M] the emitted token
    state: Any  # CarriedState
    probs: torch.Tensor  # [M, V] softmax(raw), the p of p·E


def swir_step(
    y: torch.Tensor,
    raw: torch.Tensor,
    rows: Any,
    state: Any,
    plain_mask: torch.Tensor | None,
    width: int,
) -> SwirStep:
    """SwiReasoning's step (github sdc17/SwiReasoning, ``generation_utils.py`` 293-384 @
    7f3b278), on [M] rows; ``raw`` [M, V] the raw logits (temperature 1), ``y`` the sampled
    tokens.

    1. Sampling ``</think>`` locks the row explicit; a queued injection replaces the sampled
       token (one token a step); an exhausted answer budget emits EOS (the original stops
       there; an engine ends the request with it).
    2. ``H``, the entropy (nats) of softmax(raw) over the whole vocabulary. At t = 0 it sets the
       reference. Later: latent -> explicit when ``H < ref``; explicit -> latent when
       ``H > ref`` after at least W steps and not locked (both strict); a switch resets the
       reference to H and the step count to 0.
    3. The input: explicit (or locked, or a math token) feeds ``E[token]``, except on the
       switch into explicit: ``β·p·E + (1−β)·E[</think>]``; latent feeds ``p·E``, except at
       t = 0: ``0.9·p·E + 0.1·E[linebreak]``, and on the switch into latent:
       ``α·p·E + (1−α)·E[<think>]``; α and β ramp linearly from their start to 1 at t = ramp.
    4. Under a cap M, the M-th to 2M-th switches into explicit queue the convergence tokens;
       later ones queue the termination phrase and arm the answer budget.
    """
    s = state
    t = rows.position
    first = t == 0
    cap = rows.swir_max_switches > 0
    # 1. Lock, injection, end of the answer budget.
    locked = s.swir_locked | (y == rows.swir_think_end)
    take, queued, length, ended = _queued(rows, s)
    token = torch.where(take, queued, y)
    queue_pos = s.swir_queue_pos + take.long()
    queue = torch.where(take & (queue_pos < length), s.swir_queue, 0)
    token = torch.where(ended, rows.eos, token)
    # 2. The entropy trend.
    p = torch.softmax(raw.float(), dim=-1)
    # H = -Σ p log(max(p, 1e-12)), as the authors; in place: the same bits, two [M, V] buffers
    # fewer (xlogy is slower)
    h = p.clamp(min=1e-12).log_().mul_(p).sum(dim=-1).neg_()
    stay = torch.where(first, s.swir_stay, s.swir_stay + 1)
    to_explicit = ~first & ~s.swir_explicit & (h < s.swir_ref)
    to_latent = ~first & s.swir_explicit & (h > s.swir_ref) & (stay >= rows.swir_window) & ~locked
    explicit = (s.swir_explicit | to_explicit) & ~to_latent
    switched = to_explicit | to_latent
    stay = torch.where(switched, 0, stay)
    ref = torch.where(first | switched, h, s.swir_ref)
    switches = s.swir_switches + (cap & to_explicit).long()
    # 3. The input: weights on [token, </think>, <think>, linebreak] and the share of p·E.
    plain = torch.zeros_like(first)
    if plain_mask is not None:
        plain = rows.plain_math & plain_mask[token.clamp(min=0)]
    normal = explicit | locked | plain
    # t / max_new_tokens (lines 341, 347); the loop never passes t = max_new_tokens, an engine
    # given a shorter ramp than the request might: the blends stop at 1.
    ramp = (t.double() / rows.swir_ramp_tokens.double()).clamp(max=1.0)
    alpha = (rows.swir_alpha + (1 - rows.swir_alpha) * ramp).float()
    beta = (rows.swir_beta + (1 - rows.swir_beta) * ramp).float()
    blend_end = normal & to_explicit
    latent_first = ~normal & first
    latent_start = ~normal & ~first & to_latent
    one, zero = torch.ones_like(alpha), torch.zeros_like(alpha)
    dense = torch.where(
        blend_end,
        beta,
        torch.where(
            normal, zero, torch.where(latent_first, 0.9, torch.where(latent_start, alpha, one))
        ),
    )
    w_token = torch.where(normal & ~blend_end, one, zero)
    w_end = torch.where(blend_end, 1.0 - beta, zero)
    w_start = torch.where(latent_start, 1.0 - alpha, zero)
    w_break = torch.where(latent_first, torch.full_like(alpha, 0.1), zero)
    columns = [token, rows.swir_think_end, rows.think_start, rows.swir_linebreak]
    ids = torch.stack(columns, dim=-1).clamp(min=0)  # unset tokens weigh 0: any valid id
    weights = torch.stack([w_token, w_end, w_start, w_break], dim=-1)
    pad = width - ids.shape[1]  # the engine's candidate width
    ids = torch.cat([ids, token[:, None].expand(-1, pad)], dim=-1)
    weights = torch.cat([weights, weights.new_zeros(weights.shape[0], pad)], dim=-1)
    # 4. The cap: queue the convergence tokens or the termination phrase for the next steps.
    arm = cap & ~first & to_explicit
    converge = arm & (switches >= rows.swir_max_switches) & (switches <= 2 * rows.swir_max_switches)
    terminate = arm & (switches > 2 * rows.swir_max_switches)
    queue = torch.where(converge, 1, torch.where(terminate, 2, queue))
    queue_pos = torch.where(converge | terminate, 0, queue_pos)
    budget = torch.where(terminate, rows.swir_answer_tokens, s.swir_budget)
    budget = torch.where(cap & ~first & (budget >= 0), budget - 1, budget)
    new_state = s._replace(
        swir_explicit=explicit,
        swir_stay=stay,
        swir_ref=ref,
        swir_locked=locked,
        swir_switches=switches,
        swir_queue=queue,
        swir_queue_pos=queue_pos,
        swir_budget=budget,
    )
    return SwirStep(ids, weights, dense, token, new_state, p)


SWIR = Swir()
