"""The vLLM engine arguments both bench engines start with: dummy weights for a config-only
model folder, and a KV cache sized in bytes on CPU.

Why bytes (``mixinputs.engine_memory`` says it for every engine mixinputs starts): given
``gpu_memory_utilization``, vLLM's CPU worker reserves that share of the machine's memory and
refuses to start when less than that is *free* at the moment, so the two bench engines, the page
cache an install leaves and other processes could starve each other. With
``kv_cache_memory_bytes`` it allocates exactly that and skips its warm-up pass (eager mode). The
bench derives the size from the model and the run, every request of the largest batch at the full
``max_model_len``, so no request of a round waits for a cache block (which would change what the
round measures). On a GPU, vLLM profiles the model and a share of the device is the right knob
(two engines up at once: 0.45 each).
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

from mixinputs.engine_memory import CPU_KV_CACHE_BYTES

logger = logging.getLogger(__name__)

BLOCK_TOKENS = 256  # the largest KV block any CPU attention backend uses: round up to it
CPU_KV_SHARE_OF_RAM = 1 / 6  # at most this share of the machine's memory per engine (two run)
FALLBACK_KV_BYTES = CPU_KV_CACHE_BYTES  # a model whose config.json is not here (a hub name)
GPU_SHARE = {"interleaved": 0.45, "sequential": 0.9, "off": 0.9}  # engines up at once share
_DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2}


def model_files(model: str) -> dict:
    """Engine arguments a config-only folder needs: dummy weights, no tokenizer.

    >>> model_files("Qwen/QwQ-32B")   # a hub name: load as usual
    {}
    """
    folder = Path(model)
    if not folder.is_dir():
        return {}
    engine = {}
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        engine["load_format"] = "dummy"  # throughput does not depend on the weights
    if not any((folder / name).exists() for name in ("tokenizer.json", "tokenizer.model")):
        engine["skip_tokenizer_init"] = True  # prompts go in as token ids
    return engine


def kv_bytes_per_token(config: dict, dtype: str) -> int:
    """K and V of one token in every layer, from a Hugging Face ``config.json``.

    >>> smollm2 = {"num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
    ...            "hidden_size": 576, "head_dim": 64}
    >>> kv_bytes_per_token(smollm2, "float32")   # 2 x 30 layers x 3 heads x 64 x 4 bytes
    46080
    """
    config = config.get("text_config", config)  # a multimodal model's language part
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    if dtype not in _DTYPE_BYTES:  # "auto": the checkpoint's dtype, float32 if it says none
        dtype = str(config.get("torch_dtype") or config.get("dtype") or "float32")
    return 2 * config["num_hidden_layers"] * kv_heads * head_dim * _DTYPE_BYTES.get(dtype, 4)


def cpu_kv_cache_bytes(model: str, max_num_seqs: int, max_model_len: int, dtype: str) -> int:
    """Bytes of KV cache for ``max_num_seqs`` requests of ``max_model_len`` tokens, capped at
    :data:`CPU_KV_SHARE_OF_RAM` of the machine's memory (its total, not what is free now) but
    never below one full-length request (vLLM's minimum).

    >>> cpu_kv_cache_bytes("no/such/model", 8, 160, "float32") == FALLBACK_KV_BYTES
    True
    """
    try:
        config = json.loads((Path(model) / "config.json").read_text())
        per_token = kv_bytes_per_token(config, dtype)
    except (OSError, KeyError, TypeError, ValueError):
        return FALLBACK_KV_BYTES
    tokens_per_request = math.ceil(max_model_len / BLOCK_TOKENS) * BLOCK_TOKENS
    wanted = per_token * tokens_per_request * max_num_seqs
    cap = max(int(_total_memory() * CPU_KV_SHARE_OF_RAM), per_token * tokens_per_request)
    if wanted > cap:
        logger.warning(
            "KV cache capped at %.1f GiB per engine (%d of %d requests fit at full length)",
            cap / 2**30,
            cap // (per_token * tokens_per_request),
            max_num_seqs,
        )
    return min(wanted, cap)


def kv_cache_args(
    model: str,
    on_gpu: bool,
    vanilla: str,
    max_num_seqs: int,
    max_model_len: int,
    dtype: str,
    user: dict,
) -> dict:
    """How both engines size their KV cache: ``kv_cache_memory_bytes`` on CPU, a share of the
    device on a GPU; nothing where the user's ``--engine-args`` already size it.

    >>> kv_cache_args("m", True, "interleaved", 8, 160, "auto", {})
    {'gpu_memory_utilization': 0.45}
    >>> kv_cache_args("m", False, "interleaved", 8, 160, "float32", {"gpu_memory_utilization": .2})
    {}
    """
    if on_gpu:
        return {"gpu_memory_utilization": GPU_SHARE[vanilla]}
    if "kv_cache_memory_bytes" in user or "gpu_memory_utilization" in user:
        return {}
    return {"kv_cache_memory_bytes": cpu_kv_cache_bytes(model, max_num_seqs, max_model_len, dtype)}


def _total_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows): assume 16 GiB
        return 16 * 2**30
