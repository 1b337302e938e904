"""Mixture of Inputs (MoI) decoding for vLLM and Hugging Face transformers.

``import mixinputs`` is cheap on purpose: ``mixinputs setup`` puts it in ``usercustomize.py`` so it
runs in every Python process. torch is imported only when a public function is first used.

>>> import torch, mixinputs
>>> logits, emb = torch.randn(2, 50), torch.randn(50, 8)
>>> h = mixinputs.mix_embeddings(logits, torch.tensor([3, 7]), emb, beta=1.0)
>>> tuple(h.shape)
(2, 8)

vLLM picks the plugin up by itself (the ``vllm.general_plugins`` entry point); MoI is then turned on
per request (``SamplingParams(extra_args={"mixinputs_beta": 1.0})``) or for every request by the
``MIXINPUTS_BETA`` environment variable, as in the original release.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

_LAZY = {
    "mix_embeddings": "mixinputs.mixing",
    "mixture_weights": "mixinputs.mixing",
    "candidates_from_logits": "mixinputs.mixing",
    "candidates_from_topk": "mixinputs.mixing",
    "mix_candidates": "mixinputs.mixing",
    "mix_rows": "mixinputs.mixing",
    "normalized_entropy": "mixinputs.mixing",
    "Candidates": "mixinputs.mixing",
    "MoIConfig": "mixinputs.config",
    "embedded_model_path": "mixinputs.embedded_model",
}

__all__ = [
    "Candidates",
    "MoIConfig",
    "__version__",
    "candidates_from_logits",
    "candidates_from_topk",
    "embedded_model_path",
    "mix_candidates",
    "mix_embeddings",
    "mix_rows",
    "mixture_weights",
    "normalized_entropy",
]

if TYPE_CHECKING:
    from mixinputs.config import MoIConfig
    from mixinputs.embedded_model import embedded_model_path
    from mixinputs.mixing import (
        Candidates,
        candidates_from_logits,
        candidates_from_topk,
        mix_candidates,
        mix_embeddings,
        mix_rows,
        mixture_weights,
        normalized_entropy,
    )


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mixinputs' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
