"""A local model (``vllm`` or ``hf``) whose engine starts only when there is something to generate.

Everything an evaluation can check without an engine is checked with the model's tokenizer and
config alone, before the engine starts (30 s on 2 CPU cores for the embedded model, minutes for a
32B model on a GPU): the chat template each prompt is rendered with, every method's tokens
(``soft@thinking`` needs a think-end token the tokenizer has) and, for vLLM, the request rule
the plugin's front end applies (``request_validation.check_request``: K at most
``MIXINPUTS_MAX_TOP_K``, ...). A run whose samples are all on disk never starts an engine.

Quiet by default: while the engine runs, file descriptors 1 and 2 point at a log file
(:func:`engine_output`), so vLLM's log, its engine and worker processes' output and progress bars
stay off the terminal; the log's path is given when the engine fails.

>>> backend = DeferredBackend("vllm", "path/to/model")  # doctest: +SKIP
>>> backend.chat_prompt("Hi")  # the tokenizer's chat template; no engine yet  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TextIO

from mixinputs.backends import Completion, Request, SamplingSettings
from mixinputs.config import MoIConfig

logger = logging.getLogger(__name__)


class EngineFailed(RuntimeError):
    """The engine failed to start or to generate; ``log`` holds what it printed (None when its
    output went to the terminal)."""

    def __init__(self, cause: BaseException, log: Path | None):
        super().__init__(str(cause))
        self.cause = cause
        self.log = log


@dataclass
class EngineOutput:
    """Where an engine's output goes: ``log`` (None: the terminal) and ``terminal``, a stream on
    the terminal's stderr that stays there (for progress bars)."""

    log: Path | None
    terminal: TextIO = field(default_factory=lambda: sys.stderr)
    keep: bool = False  # keep the log even when the block ends without an error


@contextlib.contextmanager
def engine_output(verbose: bool, prefix: str = "mixinputs-") -> Iterator[EngineOutput]:
    r"""Unless ``verbose``: file descriptors 1 and 2 point at a log file inside the block, so what
    this process and every process it starts (vLLM's engine core and workers inherit them) print
    lands there. The log is removed when the block ends normally and kept when it raises.

    >>> with engine_output(verbose=False) as out:
    ...     _ = os.write(1, b"vLLM says a lot\n")  # what an engine process writes to fd 1
    >>> out.log.exists()  # the block ended normally: its log is gone
    False
    """
    if verbose:
        yield EngineOutput(None)
        return
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".log")
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(saved[1]), "w", buffering=1)
    out = EngineOutput(Path(name), terminal)
    ok = False
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield out
        ok = True
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for handle in (*saved, fd):
            os.close(handle)
        terminal.close()
        if ok and not out.keep:
            out.log.unlink(missing_ok=True)


def model_identity(model: str) -> str:
    """What names a model's weights in run records, the same on every machine: a local folder
    by its name and a digest of its config and weight files' names and sizes, a hub id as is.

    >>> model_identity("Qwen/QwQ-32B")
    'Qwen/QwQ-32B'
    """
    folder = Path(model).expanduser()
    if not folder.is_dir():
        return model
    digest = hashlib.sha256()
    config = folder / "config.json"
    if config.is_file():
        digest.update(config.read_bytes())
    for weights in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        digest.update(f"{weights.name}:{weights.stat().st_size}".encode())
    return f"{folder.name}@{digest.hexdigest()[:12]}"


def text_digest(text: str) -> str:
    """A short, stable digest of a text (a rendered chat template) for run records.

    >>> text_digest("abc")
    'sha256:ba7816bf8f01'
    """
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:12]


class DeferredBackend:
    """``vllm`` or ``hf`` on ``model``: its tokenizer when first asked, its engine on the first
    generation.

    ``options`` go to the engine's backend (``VLLMBackend`` / ``HFBackend``); ``verbose=False``
    keeps the engine's output in a log file (:func:`engine_output`).
    """

    def __init__(
        self, name: str, model: str, *, dtype: str | None = None, verbose: bool = True, **options
    ):
        from mixinputs.engine_dtype import resolve_dtype
        from mixinputs.environment_checks import import_transformers

        if name not in ("vllm", "hf"):
            raise ValueError(f"a deferred backend is vllm or hf, not {name!r}")
        transformers = import_transformers()
        import torch

        self.name = name
        self.model = model
        self.model_id = model_identity(model)
        # The rule both backends apply when they start (the same result, known before).
        self.dtype = resolve_dtype(dtype, "cuda" if torch.cuda.is_available() else "cpu")
        self.requested_dtype = dtype
        self.verbose = verbose
        self._tokenizer_class = transformers.AutoTokenizer
        self._tokenizer: Any = None
        self.vocab_size = _vocab_size(model)
        self._options = options
        self._engine: Any = None
        self._output: contextlib.ExitStack | None = None
        self.output: EngineOutput | None = None

    # -- before the engine -------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer, loaded on first use (after the run's data is checked)."""
        if self._tokenizer is None:
            self._tokenizer = self._tokenizer_class.from_pretrained(self.model)
        return self._tokenizer

    def chat_prompt(self, user_message: str) -> str:
        """The chat template applied to one user message (as the engine's backend does it)."""
        if getattr(self.tokenizer, "chat_template", None) is None:
            return user_message
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": user_message}], tokenize=False, add_generation_prompt=True
        )

    def check_method(self, config: MoIConfig | None) -> None:
        """Raise ``MoIConfigError`` (a ``ValueError``) naming the key when this model or engine
        would refuse ``config``: its tokens are looked up in the tokenizer as the engine does,
        and for vLLM the plugin's own request rule is applied (K, widths)."""
        if config is None:
            return
        from mixinputs.tokens import resolve_tokens

        resolve_tokens(config, self.tokenizer, self.vocab_size)
        if self.name == "vllm":
            from mixinputs.vllm_plugin.patches.request_validation import check_request
            from mixinputs.vllm_plugin.settings import PluginSettings

            try:
                check_request(
                    SimpleNamespace(extra_args=config.to_request()),
                    PluginSettings.from_env(),
                    None,
                )
            except ValueError as e:  # vLLM's error class appends "(parameter=...)" to str()
                from mixinputs.config import MoIConfigError

                raise MoIConfigError(e.args[0] if e.args else str(e)) from None

    # -- the engine ------------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        return self._engine is not None

    def start(self) -> Any:
        """The engine's backend, started on first use (quietly unless ``verbose``)."""
        if self._engine is not None:
            return self._engine
        from mixinputs.backends import load_backend
        from mixinputs.engine_dtype import describe

        what = "vLLM" if self.name == "vllm" else "transformers"
        took = " (about 30 s on 2 CPU cores for the embedded model)" if self.name == "vllm" else ""
        log_note = "its log follows" if self.verbose else "--verbose shows its log"
        print(
            f"starting {what} on {Path(self.model).name}{took}, "
            f"{describe(self.dtype, self.requested_dtype)}; {log_note} ...",
            file=sys.stderr,
            flush=True,
        )
        stack = contextlib.ExitStack()
        self.output = stack.enter_context(engine_output(self.verbose, f"mixinputs-{self.name}-"))
        self._output = stack
        try:
            self._engine = load_backend(self.name, self.model, dtype=self.dtype, **self._options)
        except Exception as e:
            raise self._failed(e) from e
        return self._engine

    def generate(self, prompts: list[str], settings: SamplingSettings) -> list[Completion]:
        try:
            return self.start().generate(prompts, settings)
        except EngineFailed:
            raise
        except Exception as e:
            raise self._failed(e) from e

    def generate_stream(self, requests: list[Request]) -> Iterator[tuple[int, Completion]]:
        """The engine's ``generate_stream`` (the engine starts at the first item asked for)."""
        try:
            stream = self.start().generate_stream(requests)
            with contextlib.closing(stream):
                yield from stream
        except (EngineFailed, GeneratorExit, KeyboardInterrupt):
            raise
        except Exception as e:
            raise self._failed(e) from e

    def close(self) -> None:
        """Stop the engine (if it started) and give the terminal its output back."""
        try:
            close = getattr(self._engine, "close", None)
            if close is not None:
                close()
        finally:
            self._engine = None
            if self._output is not None:
                stack, self._output = self._output, None
                stack.close()

    def _failed(self, cause: BaseException) -> EngineFailed:
        """The failure, with the log kept for the user (the terminal gets its output back)."""
        log = self.output.log if self.output is not None else None
        if self.output is not None:
            self.output.keep = True
        stack, self._output = self._output, None
        if stack is not None:
            stack.close()
        return EngineFailed(cause, log)


def _vocab_size(model: str) -> int | None:
    """The vocabulary size vLLM checks token ids against (``config.json``), None if unknown."""
    config = Path(model).expanduser() / "config.json"
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return None
    size = data.get("vocab_size", (data.get("text_config") or {}).get("vocab_size"))
    return int(size) if isinstance(size, int) else None
