"""One vLLM engine in a child process, driven by the bench one command at a time.

Each engine lives in its own process with its own environment, so the vanilla engine (no plugin:
``VLLM_PLUGINS`` names none) and the plugin engine can be up together. The protocol is one JSON
object a line: the parent writes commands on the child's stdin, the child answers on stdout
behind :data:`REPLY` (vLLM logs to stdout too, so every other line is log):

- ``{"engine": {...}}`` first: start the engine with these arguments -> ``{"ready": true,
  "runner", "dtype", "plugins"}``;
- ``{"run": {"batch", "max_tokens", "extra"}}``: generate ``max_tokens`` tokens for ``batch``
  prompts -> ``{"seconds", "decode_seconds", "tokens", "decode_tokens"}``;
- ``{"memory": true}`` -> ``{"memory": <the plugin's memory() dict, or null>}``;
- ``{"quit": true}``.

A run is timed twice: the whole call, and its decode part alone (from the step in which the
last request got its first token to the end). Prefill and the per-call bookkeeping are the same
for every arm and MoI does not touch them, so only the decode part measures what mixing costs;
on 2 CPU cores a batch-64 prefill takes as long as 15 decode steps, and short rounds would
otherwise dilute every ratio towards 1.

``python -m mixinputs.bench`` runs :func:`serve_engine` (the child's side).
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import subprocess
import sys
import threading
import time

# Short prompts (8 tokens with the version suffix on SmolLM2): prefill is not what the bench
# measures, and on 2 CPU cores every prompt token costs as much compute as a generated one.
PROMPT = "Story {i}: the lighthouse keeper"  # request i's prompt; distinct, so none share KV
PROMPT_TOKENS = 8  # token-id prompts (no tokenizer): this many ids each
REPLY = "BENCH-REPLY:"  # the engine processes' answers on stdout (vLLM logs there too)
LOG_LINES = 200  # the child's log lines kept for an error message


def prompts(batch: int, token_ids: bool) -> list:
    """``batch`` distinct prompts: text, or token ids when the engine has no tokenizer.

    >>> prompts(2, token_ids=False)[1]
    'Story 1: the lighthouse keeper'
    >>> len(prompts(3, token_ids=True)[0]["prompt_token_ids"])
    8
    """
    if token_ids:
        # Distinct ids below 30000: inside every vocabulary these benchmarks use.
        return [
            {"prompt_token_ids": [100 + (i * 131 + k * 17) % 29000 for k in range(PROMPT_TOKENS)]}
            for i in range(batch)
        ]
    return [PROMPT.format(i=i) for i in range(batch)]


def timed_generate(engine, batch_prompts: list, params, ids) -> dict:
    """Run ``batch_prompts`` to completion on a vLLM ``LLMEngine``, stepping it ourselves so that
    the decode part can be timed apart from the prefill (``params`` must stream deltas)."""
    start = time.perf_counter()
    for prompt in batch_prompts:
        engine.add_request(next(ids), prompt, params)
    started: set[str] = set()
    decode_start = None
    tokens = decode_tokens = 0
    while engine.has_unfinished_requests():
        made = 0
        for out in engine.step():
            new = len(out.outputs[0].token_ids)  # a delta: this step's tokens only
            made += new
            if new:
                started.add(out.request_id)
        tokens += made
        if decode_start is not None:
            decode_tokens += made
        elif len(started) == len(batch_prompts):  # every prefill is done: decoding from here
            decode_start = time.perf_counter()
    end = time.perf_counter()
    return {
        "seconds": end - start,
        "decode_seconds": end - decode_start if decode_start is not None else 0.0,
        "tokens": tokens,
        "decode_tokens": decode_tokens,
    }


def serve_engine() -> None:
    """The engine process (the child): reads one JSON command a line on stdin, answers on
    stdout (see the module docstring)."""
    os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")  # the memory probe

    def reply(obj) -> None:
        sys.stdout.write(REPLY + json.dumps(obj) + "\n")
        sys.stdout.flush()

    spec = json.loads(sys.stdin.readline())
    from vllm import LLM, SamplingParams
    from vllm.sampling_params import RequestOutputKind

    engine = spec["engine"]
    llm = LLM(**engine)
    token_ids = bool(engine.get("skip_tokenizer_init"))
    ids = (f"bench-{i}" for i in itertools.count())
    reply({"ready": True, **_engine_facts(llm)})
    for line in sys.stdin:
        cmd = json.loads(line)
        if "run" in cmd:
            run = cmd["run"]
            params = SamplingParams(
                max_tokens=run["max_tokens"],
                temperature=0.0,
                ignore_eos=True,
                detokenize=not token_ids,
                output_kind=RequestOutputKind.DELTA,
                extra_args=run.get("extra"),  # a method's request keys; standard: mode off
            )
            batch_prompts = prompts(run["batch"], token_ids)
            reply(timed_generate(llm.llm_engine, batch_prompts, params, ids))
        elif "memory" in cmd:
            try:
                reply({"memory": llm.collective_rpc(plugin_memory)[0]})
            except Exception as e:  # the run's figures stand without it; say why it is missing
                reply({"memory": None, "error": repr(e)})
        else:
            break
    core = getattr(llm.llm_engine, "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()


def _engine_facts(llm) -> dict:
    from mixinputs.vllm_plugin.attach import uses_v2_runner  # vLLM's own choice, any release

    config = llm.llm_engine.vllm_config
    v2 = uses_v2_runner(config)
    plugins = os.environ.get("VLLM_PLUGINS")
    return {
        "runner": "v2" if v2 else "v1",
        "dtype": str(config.model_config.dtype).removeprefix("torch."),
        "plugins": "all installed" if plugins is None else plugins,
    }


def plugin_memory(worker) -> dict | None:
    """Run in a vLLM worker (``collective_rpc``): what the plugin holds there, on either model
    runner, and what MoI's worst step adds to vLLM's memory profile (the profile is run here when
    the engine skipped it at start-up), or None where no MoI state is attached (the vanilla
    engine)."""
    from mixinputs.vllm_plugin.attach import step_state_of

    state = step_state_of(worker.model_runner)
    if state is None:
        return None
    if state.profiled is None:  # eager CPU engines with a KV cache in bytes skip vLLM's profile
        worker.model_runner.profile_run()
    return state.memory()


class EngineProcess:
    """An engine in a child process (its own environment), driven one command at a time.

    >>> p = EngineProcess("plugin", {"model": "..."}, dict(os.environ))  # doctest: +SKIP
    >>> p.wait()["runner"], p.run(8, 32)["decode_seconds"]              # doctest: +SKIP
    ('v1', 1.93)
    """

    def __init__(self, name: str, engine: dict, env: dict[str, str]):
        self.name = name
        self.log: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mixinputs.bench"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.replies: queue.Queue = queue.Queue()
        threading.Thread(target=self._drain, daemon=True).start()
        self._send({"engine": engine})

    def _drain(self) -> None:
        for line in self.proc.stdout:
            if line.startswith(REPLY):
                self.replies.put(json.loads(line[len(REPLY) :]))
            else:
                self.log.append(line.rstrip())
                del self.log[:-LOG_LINES]
        self.replies.put(None)  # the process ended

    def _send(self, obj) -> None:
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()

    def wait(self, timeout: float = 1800) -> dict:
        """The child's next answer; a clear error with its last log lines if it died."""
        try:
            answer = self.replies.get(timeout=timeout)
        except queue.Empty:
            answer = None
        if answer is None:
            tail = "\n".join(self.log[-40:])
            raise RuntimeError(f"the {self.name} engine process gave no answer:\n{tail}")
        return answer

    def run(self, batch: int, max_tokens: int, extra: dict | None = None) -> dict:
        """One timed batch: every request generates exactly ``max_tokens`` tokens."""
        self._send({"run": {"batch": batch, "max_tokens": max_tokens, "extra": extra}})
        answer = self.wait()
        if answer["tokens"] != batch * max_tokens:
            raise RuntimeError(
                f"{self.name}: {answer['tokens']} tokens made, {batch * max_tokens} expected"
            )
        return answer

    def ask(self, obj) -> dict:
        self._send(obj)
        return self.wait()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self._send({"quit": True})
                self.proc.wait(timeout=120)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
