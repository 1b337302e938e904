"""Which dtype an engine should run the model in on this machine, when the user does not say.

On a CPU without native bf16 arithmetic (no ``avx512_bf16`` / ``amx_bf16`` on x86, no ``bf16``
on Arm), vLLM and PyTorch emulate bf16 through float32 conversions and decode 3 to 6 times slower
than in float32 (the embedded model at batch 64 on an AVX2-only AMD EPYC: 25 vs 141 tok/s).
There float32 is the right default; elsewhere the checkpoint's own dtype (bf16) is. GPUs always
keep the checkpoint's dtype (``"auto"``). An explicit ``--dtype`` always wins over this.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

AUTO = "auto"
_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})  # x86 (AVX-512 / AMX), Arm


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU feature flags of this machine (``/proc/cpuinfo``); empty where it cannot tell.

    >>> sorted(cpu_flags("flags\\t: fpu avx2 avx512_bf16\\n"))
    ['avx2', 'avx512_bf16', 'fpu']
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):  # x86 says flags, Arm says Features
            return frozenset(value.split())
    return frozenset()


def cpu_has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    """True when this CPU computes in bf16 natively (so bf16 decoding is not slower than fp32).

    Without ``/proc/cpuinfo`` (macOS, Windows) Apple silicon is taken as bf16-capable and
    anything else as not.

    >>> cpu_has_native_bf16(frozenset({"avx2", "fma"}))
    False
    >>> cpu_has_native_bf16(frozenset({"avx2", "amx_bf16"}))
    True
    """
    if flags is None:
        flags = cpu_flags()
        if not flags:
            return platform.system() == "Darwin" and platform.machine() == "arm64"
    return bool(flags & _BF16_FLAGS)


@functools.cache
def default_engine_dtype(device: str = "cpu") -> str:
    """The dtype to run models in on ``device`` when the user gave none.

    ``"float32"`` on a CPU without native bf16, else ``"auto"`` (the checkpoint's dtype).

    >>> default_engine_dtype("cuda")
    'auto'
    """
    if device != "cpu":
        return AUTO
    return AUTO if cpu_has_native_bf16() else "float32"


def resolve_dtype(requested: str | None, device: str = "cpu") -> str:
    """``requested`` when the user gave one (kept as is, ``"auto"`` included), else
    :func:`default_engine_dtype`.

    >>> resolve_dtype("bfloat16"), resolve_dtype(None, "cuda")
    ('bfloat16', 'auto')
    """
    if requested:
        return requested
    return default_engine_dtype(device)


def describe(dtype: str, requested: str | None = None) -> str:
    """One line for the user: which dtype and why.

    >>> describe("float32")
    'dtype float32 (this CPU has no native bf16: float32 decodes faster here; --dtype overrides)'
    """
    if requested:
        return f"dtype {dtype} (as asked)"
    if dtype == "float32":
        return (
            "dtype float32 (this CPU has no native bf16: float32 decodes faster here; "
            "--dtype overrides)"
        )
    return f"dtype {dtype} (the checkpoint's; --dtype overrides)"
