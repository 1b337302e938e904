"""What a method declares, and the checks every method's settings share.

A method is one module of :mod:`mixinputs.methods` holding everything that is its own: its
request keys (``keys``: documented, with the authors' defaults), its settings (``Fields``, a
frozen dataclass ``MoIConfig`` inherits), their validation (``check``), the tokens a front end
resolves for it (``tokens``), the per-row settings columns an engine uploads (``columns`` /
``row``), the state a row carries from step to step (``state``), the work an engine derives from
it (``work``), and its step in pure PyTorch (``step``, or one of the stage hooks the mixing core
calls in its numbered recipe, :mod:`mixinputs.core.step`). The registry
(:mod:`mixinputs.methods`) builds every table the rest of the package reads from them.

Nothing here imports vLLM or transformers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple


class _LazyTorch:
    """``torch``, imported when a method's step first runs: the registry, and so ``MoIConfig``,
    loads without it (the CLI, eval and bench front ends never import torch themselves)."""

    def __getattr__(self, name: str) -> Any:
        import torch as real

        value = getattr(real, name)
        setattr(self, name, value)  # found directly from now on
        return value


torch: Any = _LazyTorch()
PREFIX = "mixinputs_"
MAX_QUEUE = 16
"""The longest token sequence a method can inject (SwiReasoning's convergence / termination)."""
NO_TOKEN = -1  # an unset token id setting
DEFAULT_TOP_K = 20
PRIORS = ("raw", "sampling")
REGIONS = ("all", "thinking")


class MoIConfigError(ValueError):
    """A bad MoI setting; the message names the key or variable and what to write instead."""


class Key(NamedTuple):
    """One request key (``mixinputs_<field>``) as the docs table shows it."""

    field: str  # the MoIConfig field it sets
    values: str  # what a request may write
    default: str  # the default, with the authors' file:line where it is theirs
    own: bool = True  # the method's own key: a request of another mode that sets it is refused


class Column(NamedTuple):
    """One per-row settings column an engine keeps on the device."""

    dtype: str  # "float32", "long" or "bool" (``core.rows`` makes them torch dtypes)
    width: int = 1  # a token sequence: one column per element (NO_TOKEN padded)


class StateColumn(NamedTuple):
    """One value a row carries from step to step, and what a fresh row holds."""

    dtype: str  # "float32", "long" or "bool"
    fresh: bool | int | float


class RowContext(NamedTuple):
    """What the engine knows of a request beyond its config when it builds its settings row."""

    greedy: bool  # it decodes greedily
    point_mass: bool  # greedy with a "sampling" prior: it feeds E[y], no method runs
    temperature: float  # the temperature its distribution is read at (1 for greedy)
    max_tokens: int | None  # its max_tokens


class Method:
    """One method (a ``mixinputs_mode`` value) or an option several modes share (a thinking
    region, noise). Subclasses set the class attributes and override the hooks they need."""

    name: ClassVar[str]  # the mode, or the option's name
    is_mode: ClassVar[bool] = True  # a value of mixinputs_mode
    # Its row of the README's methods table (``methods.methods_table``).
    title: ClassVar[str] = ""
    asks: ClassVar[str] = ""  # the request keys that ask for it
    specs: ClassVar[tuple[str, ...]] = ()  # --method examples
    feeds: ClassVar[str] = ""  # what it feeds
    paper: ClassVar[str] = ""
    # Defaults and rules for the mode-wide settings (a mode's own; options leave them).
    top_k: ClassVar[int] = DEFAULT_TOP_K
    top_k_doc: ClassVar[str] = ""  # its K in the docs, where ``top_k`` alone does not say it
    priors: ClassVar[tuple[str, ...]] = PRIORS  # the first is the default
    regions: ClassVar[tuple[str, ...]] = REGIONS  # the first is the default
    noise: ClassVar[bool] = False  # takes Dirichlet / Gumbel noise
    direct: ClassVar[bool] = False  # feeds the distribution itself (w = p), y's slot unweighted
    family_code: ClassVar[int] = 0  # > 0: its input replaces the mixture core's (``replace``)
    own_rows: ClassVar[bool] = False  # its whole-vocabulary work runs on its rows only
    dense: ClassVar[bool] = False  # its input holds p·E (the whole vocabulary's mean)
    reads_math: ClassVar[bool] = False  # feeds a math-symbol token as itself (plain_math.py)
    masks_prior: ClassVar[bool] = False  # its draws read the sampler's top-k / top-p cut
    min_width: ClassVar[int] = 1  # candidate columns its input needs (the engine's K + 1)
    width_key: ClassVar[str | None] = None  # the field that sets its input's width (``k``)
    keys: ClassVar[dict[str, Key]] = {}  # request key -> Key
    preset_fields: ClassVar[tuple[str, ...]] = ()  # reset when a request changes mode or noise
    derived: ClassVar[tuple[str, ...]] = ()  # its methods a MoIConfig answers as attributes
    sequences: ClassVar[tuple[str, ...]] = ()  # its token-sequence fields (text, or ids)
    think_end_last_token: ClassVar[bool] = False  # think-end text resolves to its last token
    columns: ClassVar[dict[str, Column]] = {}
    state: ClassVar[dict[str, StateColumn]] = {}

    def table_rows(self) -> list[tuple[str, str, str, str, str]]:
        """Its rows of the README's methods table: (title, request keys, --method, feeds,
        paper)."""
        specs = ", ".join(f"`{spec}`" for spec in self.specs)
        return [(self.title, self.asks, specs, self.feeds, self.paper)]

    # -- settings ---------------------------------------------------------------------------
    def bind(self, modes: tuple[Method, ...]) -> None:
        """Called once by the registry with every mode (an option reads what modes take it)."""

    def modes(self, all_modes: tuple[Method, ...]) -> tuple[str, ...]:
        """The modes its request keys apply to (a mode: itself)."""
        return (self.name,)

    def key_modes(self, key: str, all_modes: tuple[Method, ...]) -> tuple[str, ...]:
        """The modes one of its request keys applies to (default: ``modes``)."""
        return self.modes(all_modes)

    def default_top_k(self, config: Any) -> int:
        return self.top_k

    def check(self, config: Any, set_field, mode: Method) -> None:
        """Validate (and normalise with ``set_field(name, value)``) this method's own fields of
        ``config``, whose mode is ``mode``; raise ``MoIConfigError`` naming the key."""

    def to_request(self, config: Any) -> dict[str, Any]:
        """Its shared keys (not its own: ``MoIConfig.to_request`` writes those) for ``config``."""
        return {}

    def from_request(self, fields: Any, base: Any, mode: str) -> dict[str, Any]:
        """Its shared keys' fields from a request's ``fields`` over the ``base`` config."""
        return {}

    def tokens(self, config: Any) -> dict[str, Any]:
        """The fields a front end turns from text into token ids."""
        return {}

    def needs_step(self, config: Any) -> bool:
        """It needs ``apply_methods`` (more than MoI's or direct mixture's weights)."""
        return False

    def carries_state(self, config: Any) -> bool:
        return False

    def default_text(self, name: str, tokenizer: Any) -> str:
        """The text of a token field left None (the method's default for this model)."""
        raise MoIConfigError(f"{name} has no default: pass it")

    def eos_reason(self, config: Any) -> str:
        """Why it ends a request with EOS (the key that asks it), for errors."""
        return f"mode {config.mode!r} ends the request with the EOS token"

    def draws_random(self, config: Any) -> bool:
        return False

    def needs_eos(self, config: Any) -> bool:
        return False

    def chooses(self, config: Any) -> bool:
        """What a row emits is the method's choice, known before y is (transformers forces it
        through the logits)."""
        return False

    def max_width(self, config: Any) -> int:
        """Candidate columns its input takes for this config (an engine's K + 1 must hold them)."""
        return 0

    def injection(self, rows: Any, state: Any) -> Any:
        """[B] a token its rows must emit this step, decided by the state alone before sampling
        (-1: none), or None when it never injects (transformers forces it through the logits)."""
        return None

    def worst_case(self, k: int) -> dict[str, Any] | None:
        """The settings of its heaviest step at an engine's widest K (beside ``mode`` and
        ``top_k``), which vLLM's memory profile runs (``vllm_plugin.worst_case``); None: its
        step is no heavier than MoI's."""
        return None

    def greedy_recipe(self, config: Any) -> tuple[float, int, float] | None:
        """(temperature, top-k, top-p) a greedy request reads its distribution at, or None."""
        return None

    def draws(self, config: Any) -> int:
        """Draws over the vocabulary beyond the sampled token (Multiplex)."""
        return 0

    def label(self, config: Any) -> str:
        """Its part of ``MoIConfig.name``."""
        return ""

    # -- engine -----------------------------------------------------------------------------
    def row(self, config: Any, ctx: RowContext) -> dict[str, Any]:
        """Its settings columns' values for one request (host scalars)."""
        return {}

    def work(self, config: Any, settings: Any, cut: bool) -> set[str]:
        """Which of the engine's optional work (``mixinputs.core.rows.WORK``) a request needs;
        ``cut``: its sampler has its own top-k / top-p."""
        return set()


class ModeDefault:
    """A setting whose default is the mode's own (``Method.top_k``, ``priors[0]``,
    ``regions[0]``): resolved by ``MoIConfig``."""

    def __init__(self, what: str):
        self.what = what

    def __repr__(self) -> str:
        return f"<the mode's {self.what}>"


MODE_TOP_K: Any = ModeDefault("K")
MODE_PRIOR: Any = ModeDefault("prior")
MODE_REGION: Any = ModeDefault("region")
DEFAULT_BETA = 1.0
DEFAULT_THINK_END = "</think>"


@dataclass(frozen=True)
class CommonFields:
    """The settings every mode has (``MoIConfig``'s first fields; its rules are in
    ``mixinputs.config``)."""

    beta: float = DEFAULT_BETA
    mode: str = "moi"
    top_k: int | None = MODE_TOP_K  # the mode's K
    prior: str = MODE_PRIOR  # the mode's first ``priors``
    region: str = MODE_REGION  # the mode's first ``regions``
    think_end: str | int = DEFAULT_THINK_END  # token text, or its id once resolved
    # Resolved by the front end (not a request key): the EOS id a method that ends a request
    # emits (Cold Stop's after-thinking end, SwiReasoning's answer budget).
    eos: int | None = None


# --------------------------------------------------------------------------- shared checks
def positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MoIConfigError(f"{name} must be a number > 0, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise MoIConfigError(f"{name} must be a finite number > 0, got {value!r}")
    return number


def unit(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise MoIConfigError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def count(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise MoIConfigError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise MoIConfigError(f"{name} must be true or false, got {value!r}")
    return value


def choice(value: Any, name: str, values: tuple) -> Any:
    if value not in values:
        raise MoIConfigError(f"{name} must be one of {values}, got {value!r}")
    return value


def parse_beta(value: Any, name: str = "beta") -> float:
    """``value`` as a valid MoI beta (a number >= 0, ``inf`` or ``"inf"``), else a clear error.

    >>> parse_beta(2), parse_beta("inf")
    (2.0, inf)
    """
    if isinstance(value, str) and value.strip().lower() in ("inf", "infinity", "+inf"):
        return math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MoIConfigError(f"{name} must be a number >= 0 or 'inf', got {value!r}")
    beta = float(value)
    if math.isnan(beta) or beta < 0:
        mode_name = "mode" if name == "beta" else "mixinputs_mode"
        hint = f"; for direct mixture use {mode_name}='direct'"
        raise MoIConfigError(f"{name} must be >= 0 (or inf), got {beta}{hint}")
    return beta


def parse_top_k(value: Any, name: str = "mixinputs_top_k") -> int | None:
    """``value`` as a valid K (an int >= 1), or None for the whole vocabulary.

    >>> parse_top_k(20.0), parse_top_k(None)
    (20, None)
    """
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MoIConfigError(
            f"{name} must be an int >= 1 (or None: whole vocabulary), got {value!r}"
        )
    return value


def parse_token(value: Any, name: str) -> str | int:
    """One token as its text (resolved by the engine's tokenizer) or its id.

    >>> parse_token("<think>", "k"), parse_token(151667.0, "k")
    ('<think>', 151667)
    """
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, str)) or value in (-1, ""):
        raise MoIConfigError(f"{name} must be a token's text or id, got {value!r}")
    if isinstance(value, int) and value < 0:
        raise MoIConfigError(f"{name} as a token id must be >= 0, got {value}")
    return value


def parse_tokens(value: Any, name: str) -> str | tuple[int, ...]:
    """A token sequence as text (tokenized by the engine) or a list of 1 to ``MAX_QUEUE`` ids.

    >>> parse_tokens([5, 6], "k"), parse_tokens("</think>", "k")
    ((5, 6), '</think>')
    """
    if isinstance(value, str) and value:
        return value
    ids = tuple(value) if isinstance(value, (list, tuple)) else None
    bad = ids is None or not 1 <= len(ids) <= MAX_QUEUE
    if not bad:
        bad = any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in ids)
    if bad:
        raise MoIConfigError(
            f"{name} must be text or a list of 1 to {MAX_QUEUE} token ids, got {value!r}"
        )
    return ids


def token_id(value: Any, used: bool) -> int:
    """A resolved token setting as a column value (``NO_TOKEN`` when unused or unresolved)."""
    return int(value) if used and isinstance(value, int) else NO_TOKEN


def token_queue(value: Any, used: bool) -> tuple[tuple[int, ...], int]:
    """A resolved token sequence as ``MAX_QUEUE`` columns (``NO_TOKEN`` padded) and its length."""
    ids = tuple(value) if used and isinstance(value, tuple) else ()
    return ids + (NO_TOKEN,) * (MAX_QUEUE - len(ids)), len(ids)
