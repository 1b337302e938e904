"""Patch: KV blocks built from mixtures are cached under their own key.

Why: vLLM's prefix-cache key is the token ids. The KV of a MoI request's generated tokens was
    computed from mixtures, so a later request with the same text would be served KV it did not
    produce (and the reverse). Salting the whole request (``cache_salt``) would also stop prompt
    blocks from being shared.
How: wrap ``generate_block_hash_extra_keys`` (engine core) to add a MoI key to every block that
    holds a generated token of a MoI request: ``("mixinputs", beta, mode, K, prior, ...)``, from
    the config the front end resolved (``request_config``).
    Prompt blocks keep their plain hash and stay shared with every request; block hashes chain,
    so every later block differs too. Requests mixing the same way can still share blocks.
    The function is re-bound in each module that imported it by name.
Upstream: a per-request "extra hash key from position N" in vLLM would remove this patch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import sys
from typing import Any

from mixinputs.vllm_plugin.patches import mark_original, original_of
from mixinputs.vllm_plugin.request_config import request_config

_USERS = (
    "vllm.v1.core.kv_cache_utils",
    "vllm.v1.core.block_pool",
    "vllm.v1.simple_kv_offload.manager",
)
_UNSET = object()


def moi_cache_key(request: Any) -> tuple | None:
    """The key that tells this request's mixed KV apart, or None for standard decoding."""
    cached = getattr(request, "_mixinputs_key", _UNSET)
    if cached is not _UNSET:
        return cached
    params = getattr(request, "sampling_params", None)
    key = None
    if params is not None:
        config = request_config(getattr(request, "request_id", "?"), params)
        if config is not None:
            # Every setting of the method (mode, K, prior, region, tokens, Cold Stop, noise,
            # each family method's own) changes what is fed; a digest keeps the key short
            # (SwiReasoning's and SeLaR's settings hold hundreds of math-token ids).
            digest = hashlib.sha256(repr(dataclasses.astuple(config)).encode()).hexdigest()
            key = ("mixinputs", digest)
            if config.draws_random:  # noisy KV repeats only for the same seed
                seed = getattr(params, "seed", None)
                key += (("seed", seed) if seed is not None else ("request", request.request_id),)
            if config.prior == "sampling":  # the mixture depends on the sampler's settings
                key += tuple(
                    getattr(params, n, None)
                    for n in (
                        "temperature",
                        "top_p",
                        "top_k",
                        "min_p",
                        "presence_penalty",
                        "frequency_penalty",
                        "repetition_penalty",
                    )
                )
            grammar = getattr(params, "structured_outputs", None) or getattr(
                params, "guided_decoding", None
            )
            if grammar is not None:  # the grammar masks the logits the prior is read from
                key += (repr(grammar),)
    with contextlib.suppress(AttributeError):  # cached when the request object allows it
        request._mixinputs_key = key
    return key


def apply() -> None:
    import importlib

    utils = importlib.import_module("vllm.v1.core.kv_cache_utils")
    original = utils.generate_block_hash_extra_keys
    if original_of(original) is not None:
        return

    def generate_block_hash_extra_keys(request, start_token_idx, end_token_idx, start_mm_idx):
        keys, next_mm = original(request, start_token_idx, end_token_idx, start_mm_idx)
        if end_token_idx > request.num_prompt_tokens:
            moi_key = moi_cache_key(request)
            if moi_key is not None:
                keys = (*(keys or ()), moi_key)
        return keys, next_mm

    mark_original(generate_block_hash_extra_keys, original)
    for name in _USERS:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if getattr(module, "generate_block_hash_extra_keys", None) is original:
            module.generate_block_hash_extra_keys = generate_block_hash_extra_keys
    assert sys.modules[_USERS[0]].generate_block_hash_extra_keys is generate_block_hash_extra_keys
