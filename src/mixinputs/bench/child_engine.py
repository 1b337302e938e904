"""A vLLM engine in a child process of its own, driven one JSON command a line.

The one harness for every engine that needs a process of its own: the bench's vanilla and plugin
engines (``engine_process``) and the tests' (vLLM without the plugin, MoI demanded by
``MIXINPUTS_BETA``, Model Runner V2 under Triton's interpreter: ``tests/vllm_support.py``,
``tests/engine/test_vllm_v2.py``). Each child has the environment it was given, so engines that must
differ in it can be up together; commands are sent without waiting for the answers, so several
children start and work side by side.

The parent writes one JSON object a line on the child's stdin; the child answers each, in order,
with one JSON line, ``{"result": ...}`` or ``{"error": "Type: message", "traceback": ...}``, on a
pipe of its own: it points its file descriptor 1 at its stderr before anything else, so whatever
vLLM and its processes print is log, never mixed into an answer.

- ``{"op": "start", "engine": {LLM arguments, "model" included}, "setup": ["module:function"],
  "facts": "module:function" or null}``: call each setup function (no arguments), start
  ``vllm.LLM(**engine)``; the answer is ``facts(llm)`` (None without it);
- ``{"op": "generate", "requests": [{"prompt" or "prompt_token_ids", "params": {...}}]}``: one
  batch (``SamplingParams(**params)`` each) -> :func:`generate`'s list, in request order;
- ``{"op": "call", "fn": "module:function", "kwargs": {...}}``: ``function(llm, **kwargs)``, run
  in the child (it must return JSON);
- ``{"op": "quit"}`` (or the end of stdin): stop the engine, exit.

Importing this module needs neither vLLM nor torch.
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import json
import os
import queue
import subprocess
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

CHILD = "from mixinputs.bench.child_engine import serve; serve()"
TIMEOUT_S = 1800.0  # the longest wait for one answer (a start included)
LOG_LINES = 300  # the child's log lines kept for an error message


class ChildEngineError(RuntimeError):
    """A command that raised in the child (the engine goes on serving), or a child that died or
    did not answer in time; the message says which, with the child's error or its last log lines."""


class ChildEngine:
    """Start ``vllm.LLM(**engine)`` in a child process with environment ``env`` (None: this
    process's); the start is sent at once and answered by :meth:`ready`.

    ``log``: a file that gets the child's whole log (its last :data:`LOG_LINES` lines are kept
    either way, for error messages); ``cwd``: where the child runs (``module:function`` names
    are imported from there too); ``setup`` and ``facts``: as in the module docstring.

    >>> with ChildEngine({"model": "..."}, name="plugin") as child:  # doctest: +SKIP
    ...     child.send("generate", requests=[{"prompt": "Hi", "params": {"max_tokens": 4}}])
    ...     len(child.answer()[0]["token_ids"])     # waits for the start, then the batch
    4
    """

    def __init__(
        self,
        engine: dict,
        env: dict[str, str] | None = None,
        *,
        name: str = "engine",
        log: str | Path | None = None,
        cwd: str | Path | None = None,
        setup: list[str] | tuple[str, ...] = (),
        facts: str | None = None,
    ):
        self.name = name
        self.tail: collections.deque[str] = collections.deque(maxlen=LOG_LINES)
        self._log = open(log, "w") if log is not None else None  # noqa: SIM115 (close())
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=cwd,
        )
        self._answers: queue.Queue = queue.Queue()
        threading.Thread(target=self._read_answers, daemon=True).start()
        self._logger = threading.Thread(target=self._read_log, daemon=True)
        self._logger.start()
        self._started = False
        self.facts: Any = None
        self.send("start", engine=engine, setup=list(setup), facts=facts)

    # -- the two pipes the child writes ----------------------------------------------------------
    def _read_answers(self) -> None:
        for line in self.proc.stdout:
            self._answers.put(json.loads(line))
        self._answers.put(None)  # the child ended

    def _read_log(self) -> None:
        for line in self.proc.stderr:
            self.tail.append(line.rstrip("\n"))
            if self._log is not None:
                self._log.write(line)
                self._log.flush()

    def _failure(self, what: str) -> ChildEngineError:
        if self.proc.poll() is not None:
            self._logger.join(timeout=5)  # the last lines of a child that ended
        lines = list(self.tail)
        errors = [x for x in lines if "Error" in x][-20:]
        shown = "\n".join([*errors, "...", *lines[-40:]] if errors else lines[-40:])
        return ChildEngineError(f"the {self.name} engine process {what}:\n{shown}")

    # -- commands --------------------------------------------------------------------------------
    def send(self, op: str, **fields: Any) -> None:
        """Send one command without waiting; its answer comes from :meth:`answer`, in order."""
        try:
            self.proc.stdin.write(json.dumps({"op": op, **fields}) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):  # the child ended, or close() ran
            raise self._failure(f"cannot take {op!r}: it ended") from None

    def _next(self, timeout: float) -> Any:
        try:
            answer = self._answers.get(timeout=timeout)
        except queue.Empty:
            raise self._failure(f"gave no answer in {timeout:.0f} s") from None
        if answer is None:
            self._answers.put(None)  # every later call sees the end too
            raise self._failure(f"ended (exit code {self.proc.wait()})")
        if "error" in answer:
            raise ChildEngineError(
                f"the {self.name} engine process: {answer['error']}\n{answer.get('traceback', '')}"
            )
        return answer["result"]

    def ready(self, timeout: float = TIMEOUT_S) -> Any:
        """Wait for the start; the ``facts`` function's answer (None without one)."""
        if not self._started:
            self._started = True
            self.facts = self._next(timeout)
        return self.facts

    def answer(self, timeout: float = TIMEOUT_S) -> Any:
        """The answer to the oldest command not yet answered (the start is waited for first)."""
        self.ready(timeout)
        return self._next(timeout)

    def generate(self, requests: list[dict], timeout: float = TIMEOUT_S) -> list[dict]:
        """One batch (see :func:`generate`)."""
        self.send("generate", requests=requests)
        return self.answer(timeout)

    def call(self, fn: str, timeout: float = TIMEOUT_S, **kwargs: Any) -> Any:
        """``fn(llm, **kwargs)`` in the child (``fn``: ``"module:function"``)."""
        self.send("call", fn=fn, kwargs=kwargs)
        return self.answer(timeout)

    def close(self, timeout: float = 120) -> None:
        """Stop the engine and the child (killed if it does not end within ``timeout``)."""
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.stdin.close()
                self.proc.wait(timeout=timeout)
            except (ChildEngineError, OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._logger.join(timeout=5)
        if self._log is not None:
            self._log.close()

    def __enter__(self) -> ChildEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the child's side ----------------------------------------------------------------------------
def function(name: str):
    """``"package.module:function"`` -> the function."""
    module, _, attr = name.partition(":")
    return getattr(importlib.import_module(module), attr)


def generate(llm, requests: list[dict]) -> list[dict]:
    """``requests`` as one batch on ``llm``: per request, in order, its output's ``text`` and
    ``token_ids``, ``num_prompt_tokens``, ``num_cached_tokens`` (prefix cache hits) and the
    ``request_id`` vLLM gave it."""
    from vllm import SamplingParams

    prompts = [
        {"prompt_token_ids": r["prompt_token_ids"]} if "prompt_token_ids" in r else r["prompt"]
        for r in requests
    ]
    params = [SamplingParams(**r.get("params", {})) for r in requests]
    return [
        {
            "text": o.outputs[0].text,
            "token_ids": list(o.outputs[0].token_ids),
            "num_prompt_tokens": len(o.prompt_token_ids or ()),
            "num_cached_tokens": o.num_cached_tokens or 0,
            "request_id": o.request_id,
        }
        for o in llm.generate(prompts, params, use_tqdm=False)
    ]


def _run(llm, command: dict) -> Any:
    op = command.get("op")
    if op == "start":
        raise RuntimeError("the engine is started once")
    if llm is None:
        raise RuntimeError("the engine did not start")
    if op == "generate":
        return generate(llm, command["requests"])
    if op == "call":
        return function(command["fn"])(llm, **command.get("kwargs", {}))
    raise ValueError(f"unknown command {op!r}")


def _answer(answers, line: str) -> bool:
    """Write one answer; False when the parent is gone (nobody reads them any more)."""
    try:
        answers.write(line + "\n")
        answers.flush()
        return True
    except BrokenPipeError:
        return False


def serve() -> None:
    """The child: answer commands from stdin until ``quit`` or the end of stdin."""
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # from here on, fd 1 (this process's and its children's) is the log
    llm = None
    started = False
    for line in sys.stdin:
        command = json.loads(line)
        if command.get("op") == "quit":
            _answer(answers, json.dumps({"result": None}))
            break
        try:
            if command.get("op") == "start" and not started:
                started = True
                for name in command.get("setup", ()):
                    function(name)()
                from vllm import LLM

                llm = LLM(**command["engine"])
                facts = command.get("facts")
                result = function(facts)(llm) if facts else None
            else:
                result = _run(llm, command)
            answer = json.dumps({"result": result})
        except Exception as e:  # the parent raises it; this process goes on serving
            trace = traceback.format_exc()
            print(trace, file=sys.stderr, flush=True)
            answer = json.dumps({"error": f"{type(e).__name__}: {e}", "traceback": trace})
        if not _answer(answers, answer):
            break
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        with contextlib.suppress(Exception):
            core.shutdown()
