"""``mixinputs setup`` / ``mixinputs cleanup``: the original release's ``usercustomize.py`` line.

vLLM already loads the plugin through its ``vllm.general_plugins`` entry point, so this line is
only kept for the original contract (and for tools that look for it). It must never touch the
user's other lines, and running either command twice changes nothing.
"""

from __future__ import annotations

import site
import sysconfig
from pathlib import Path

LINE = "import mixinputs  # added by `mixinputs setup`; `mixinputs cleanup` removes it"
_OURS = ("import mixinputs",)  # the original release wrote the bare line


def default_target() -> Path:
    """``usercustomize.py`` in the user site when Python reads it; in a virtual environment (which
    skips the user site) ``sitecustomize.py`` in the environment's site-packages instead."""
    if site.ENABLE_USER_SITE:
        return Path(site.getusersitepackages()) / "usercustomize.py"
    return Path(sysconfig.get_paths()["purelib"]) / "sitecustomize.py"


def _is_ours(line: str) -> bool:
    return line.split("#", 1)[0].strip() in _OURS


def setup(target: Path | None = None) -> tuple[Path, bool]:
    """Put the import line at the head of ``target``; returns (path, changed).

    >>> import tempfile; d = Path(tempfile.mkdtemp())
    >>> setup(d / "usercustomize.py")[1], setup(d / "usercustomize.py")[1]
    (True, False)
    """
    path = Path(target) if target else default_target()
    lines = path.read_text().splitlines() if path.exists() else []
    if any(_is_ours(line) for line in lines):
        return path, False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([LINE, *lines]) + "\n")
    return path, True


def cleanup(target: Path | None = None) -> tuple[Path, bool]:
    """Remove the import line(s) from ``target``, keeping every other line; returns (path, changed).

    A file left empty by this (one that setup created) is removed.
    """
    path = Path(target) if target else default_target()
    if not path.exists():
        return path, False
    lines = path.read_text().splitlines()
    kept = [line for line in lines if not _is_ours(line)]
    if kept == lines:
        return path, False
    if any(line.strip() for line in kept):
        path.write_text("\n".join(kept) + "\n")
    else:
        path.unlink()
    return path, True
