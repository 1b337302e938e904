"""The GPU kit, THERE (the lent machine: Python 3.12, torch 2.11.0+cu130, no vLLM, no network).

    python3 benchmarks/gpu/kit.py receive          # every call that carries a piece
    eval "$(python3 benchmarks/gpu/kit.py env)"    # before anything that uses vLLM there
    python3 benchmarks/gpu/kit.py status

``receive`` unpacks each piece carried in ``.gpu-kit/`` (made here by build_kit.py) into
``$MIXINPUTS_KIT`` (default ``/tmp/kit``, which outlives a call while the machine stays warm),
after checking its sha256 against the carried MANIFEST.json. It exits 0 once every piece of
that manifest is in, 3 while some are missing (it names them). Nothing is installed or built:
the pieces hold an installed ``site`` folder and the embedded model's config and tokenizer.
Only the standard library is used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
CARRIED = REPO / ".gpu-kit"
KIT = Path(os.environ.get("MIXINPUTS_KIT", "/tmp/kit"))


def env() -> dict[str, str]:
    """The environment every command that uses the kit runs in."""
    # src: mixinputs from the checkout; the checkout itself: the tests' engine processes import
    # tests.*; site: vLLM and what the image lacks.
    path = [str(REPO / "src"), str(REPO), str(KIT / "site"), os.environ.get("PYTHONPATH", "")]
    return {
        "PYTHONPATH": os.pathsep.join(p for p in dict.fromkeys(path) if p),
        # The tests' model: random_model.py makes it from the kit's config and tokenizer.
        "MIXINPUTS_TEST_MODEL": str(KIT / "random-smollm2"),
        "VLLM_CACHE_ROOT": str(KIT / "vllm-cache"),  # compile artifacts shared by the engines
        "VLLM_USE_FLASHINFER_SAMPLER": "0",  # FlashInfer is not in the kit: vLLM's own sampler
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "PYTHONUNBUFFERED": "1",
    }


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def receive() -> int:
    carried = CARRIED / "MANIFEST.json"
    if not carried.is_file():
        print("kit: no .gpu-kit/MANIFEST.json carried (carry it with every piece)")
        return 2
    spec = json.loads(carried.read_text())
    mine = KIT / "MANIFEST.json"
    if mine.is_file() and json.loads(mine.read_text())["created"] != spec["created"]:
        print(f"kit: {KIT} holds pieces of another build: starting again")
        shutil.rmtree(KIT)
    (KIT / "READY").unlink(missing_ok=True)
    (KIT / "received").mkdir(parents=True, exist_ok=True)
    shutil.copy(carried, mine)
    for piece in spec["pieces"]:
        name, path = piece["name"], CARRIED / piece["name"]
        if (KIT / "received" / name).exists() or not path.is_file():
            continue
        if sha256(path) != piece["sha256"]:
            print(f"kit: {name}: sha256 differs from MANIFEST.json: carry it again")
            continue
        with tarfile.open(path, "r:xz") as tar:
            tar.extractall(KIT, filter="data")
        (KIT / "received" / name).write_text(piece["sha256"] + "\n")
        print(f"kit: {name} unpacked ({piece['bytes'] / 2**20:.1f} MiB)")
    missing = [p["name"] for p in spec["pieces"] if not (KIT / "received" / p["name"]).exists()]
    if missing:
        print(f"kit: still to carry: {' '.join(missing)}")
        return 3
    (KIT / "READY").write_text(spec["created"] + "\n")
    print(f"kit READY in {KIT} ({spec['vllm']}, built {spec['created']})")
    return 0


def status() -> int:
    have = sorted(p.name for p in (KIT / "received").glob("*")) if KIT.is_dir() else []
    print(f"kit at {KIT}: pieces {have or 'none'}")
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
