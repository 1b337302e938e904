"""MoI for Hugging Face transformers: the ordinary ``model.generate()`` with mixture inputs.

How it works, per decode step of ``generate``:

1. A logits processor placed first in generate's list records the raw (temperature-1) logits
   [B, V]; one placed last records the distribution the token is drawn from (``prior="sampling"``).
   Both return the scores unchanged.
2. generate samples y and calls the model on it. A forward hook on the input embedding module sees
   those ids [B, 1] and replaces its output with ``Σ w_i · embed(i)`` over the candidates
   (``mixinputs.mixing``), so the step's input is the mixture instead of ``E[y]``.

On CUDA, with a plain ``nn.Embedding`` and Triton present, step 2 runs as the fused Triton step
(``mixinputs.fused_step``: one top-K pass over the logits and one mixing kernel); elsewhere, and
for embeddings that scale or transform their rows, the PyTorch reference does.

Prompt tokens (and left padding) are embedded as usual: the hook only acts right after a token was
sampled. Rows of a batch are mixed independently. Beam search and assisted decoding are refused:
their candidates are re-ordered or verified in ways the recorded distribution does not follow.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch
from torch import nn

from mixinputs.config import MoIConfig
from mixinputs.mixing import candidates_from_logits, mix_rows, mixture_weights

logger = logging.getLogger(__name__)

__all__ = ["MoIHandle", "enable_moi", "generate"]

_MISSING = object()


class MoIHandle:
    """MoI turned on for one model; ``disable()`` (or leaving the ``with`` block) restores it.

    >>> with enable_moi(model, beta=1.0):          # doctest: +SKIP
    ...     out = model.generate(**inputs, max_new_tokens=32)
    """

    def __init__(self, model: nn.Module, config: MoIConfig):
        self.model = model
        self.config = config
        self.embedding = _input_embedding(model)
        self._raw: torch.Tensor | None = None  # [B, V] raw logits of the step just sampled
        self._sampling: torch.Tensor | None = None  # [B, V] processed scores of that step
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
                processors.insert(0, _Record(self, "_raw"))
                processors.append(_Record(self, "_sampling"))
                return processors

            self.model._get_logits_processor = get_logits_processor
            self._active, self._raw, self._sampling = True, None, None
            try:
                return original_generate(*args, **kwargs)
            finally:
                self._active, self._raw, self._sampling = False, None, None
                del self.model._get_logits_processor

        return generate

    # -- the step -----------------------------------------------------------------------------
    def _on_embed(self, module: nn.Module, args: tuple, output: torch.Tensor):
        prior = self._raw if self.config.prior == "raw" else self._sampling
        if not self._active or prior is None:
            return None  # prompt tokens, or a call outside generate: plain embeddings
        self._raw = self._sampling = None
        ids = args[0] if args else None
        if ids is None or ids.dim() != 2 or ids.shape != (prior.shape[0], 1):
            raise RuntimeError(
                "mixinputs: expected one new token per row after a sampling step, got input ids "
                f"of shape {None if ids is None else tuple(ids.shape)}; MoI supports plain "
                "sampling/greedy decoding with the KV cache"
            )
        return self.mixture(prior, ids[:, 0], module).unsqueeze(1).to(output.dtype)

    def mixture(self, prior: torch.Tensor, sampled: torch.Tensor, module: nn.Module | None = None):
        """The embedding fed after sampling ``sampled`` [B] from ``prior`` [B, V]: [B, D]."""
        module = module or self.embedding
        beta = torch.full((prior.shape[0],), self.config.beta, device=prior.device)
        direct = torch.full((prior.shape[0],), self.config.direct, device=prior.device)
        fused = _fused_weight(module, prior, self.config.top_k)
        if fused is not None:
            from mixinputs.fused_step import fused_mix_step

            k = self.config.top_k
            row_k = torch.full((prior.shape[0],), k, dtype=torch.long, device=prior.device)
            return fused_mix_step(prior, sampled.long(), row_k, k, beta, direct, fused)[2]
        cands = candidates_from_logits(prior, sampled, self.config.top_k)
        weights = mixture_weights(cands.scores, beta, direct)
        # module.forward, not module(): the rows come from the same (possibly scaled) embedding
        # without re-entering this hook.
        rows = module.forward(cands.ids.to(_device_of(module)))  # [B, K+1, D]
        return mix_rows(weights.to(rows.device), rows)


class _Record:
    """A logits processor that remembers the scores it sees, and returns them unchanged."""

    def __init__(self, handle: MoIHandle, slot: str):
        self.handle, self.slot = handle, slot

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        setattr(self.handle, self.slot, scores)
        return scores


def enable_moi(
    model: nn.Module,
    beta: float = 1.0,
    mode: str = "moi",
    top_k: int | None = 20,
    prior: str = "raw",
) -> MoIHandle:
    """Turn MoI on for ``model.generate`` until the handle is disabled.

    >>> handle = enable_moi(model, beta=1.0)   # doctest: +SKIP
    >>> model.generate(**inputs)               # doctest: +SKIP
    >>> handle.disable()                       # doctest: +SKIP
    """
    config = MoIConfig(beta=beta, mode=mode, top_k=top_k, prior=prior)
    existing = getattr(model, "_mixinputs_handle", None)
    if existing is not None and existing.enabled:
        raise RuntimeError("MoI is already enabled on this model: disable the first handle first")
    handle = MoIHandle(model, config)
    model._mixinputs_handle = handle
    return handle


def generate(
    model: nn.Module,
    *args: Any,
    beta: float = 1.0,
    mode: str = "moi",
    top_k: int | None = 20,
    prior: str = "raw",
    **kwargs: Any,
):
    """``model.generate(*args, **kwargs)`` with MoI, in one call.

    >>> out = mixinputs.hf.generate(model, **inputs, beta=1.0, max_new_tokens=32)  # doctest: +SKIP
    """
    with enable_moi(model, beta=beta, mode=mode, top_k=top_k, prior=prior):
        return model.generate(*args, **kwargs)


def _fused_weight(module: nn.Module, prior: torch.Tensor, top_k: int | None) -> torch.Tensor | None:
    """The embedding matrix when the fused CUDA step applies: a plain ``nn.Embedding`` (not a
    subclass that scales its rows) on the logits' CUDA device, and a K the kernels take."""
    if type(module) is not nn.Embedding or prior.device.type != "cuda" or top_k is None:
        return None
    try:
        from mixinputs.fused_step import MAX_TOP_K, fused_step_available
    except ImportError:
        return None
    weight = module.weight
    usable = (
        fused_step_available(prior.device)
        and top_k <= min(MAX_TOP_K, prior.shape[-1])
        and weight.device == prior.device
        and weight.stride(1) == 1
    )
    return weight if usable else None


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


def _refuse_unsupported(model: nn.Module, kwargs: dict[str, Any]) -> None:
    gen_config = kwargs.get("generation_config") or getattr(model, "generation_config", None)

    def setting(name: str, default: Any = None) -> Any:
        if name in kwargs:
            return kwargs[name]
        return getattr(gen_config, name, default)

    if (setting("num_beams", 1) or 1) > 1:
        raise ValueError(
            "MoI does not support beam search (num_beams > 1): beams re-order the cache, and the "
            "mixed inputs would no longer follow them. Use sampling or greedy decoding."
        )
    if kwargs.get("assistant_model") is not None or setting("prompt_lookup_num_tokens"):
        raise ValueError(
            "MoI does not support assisted / speculative decoding; drop assistant_model"
        )
    if setting("use_cache", True) is False:
        raise ValueError(
            "MoI needs the KV cache (use_cache=True): without it every step re-embeds "
            "the whole sequence from token ids"
        )


def _device_of(module: nn.Module) -> torch.device:
    return module.weight.device
