"""One bench engine in a child process (``child_engine``), driven one command at a time.

Each engine lives in its own process with its own environment, so the vanilla engine (no plugin:
``VLLM_PLUGINS`` names none) and the plugin engine can be up together. :class:`EngineProcess`
starts one through :class:`~mixinputs.bench.child_engine.ChildEngine` (the harness the tests'
child engines use too) and asks it, through ``call``, for what the bench needs, each run in the
child by a function here:

- the start -> :func:`engine_facts` (``{"runner", "dtype", "plugins"}``);
- :meth:`EngineProcess.run`: generate ``max_tokens`` tokens for ``batch`` prompts ->
  :func:`timed_run`'s ``{"seconds", "decode_seconds", "tokens", "decode_tokens"}``;
- :meth:`EngineProcess.ask` ``({"memory": True})`` -> :func:`memory` (the plugin's
  ``memory()`` dict in ``"memory"``, or null).

A run is timed twice: the whole call, and its decode part alone (from the step in which the
last request got its first token to the end). Prefill and the per-call bookkeeping are the same
for every arm and MoI does not touch them, so only the decode part measures what mixing costs;
on 2 CPU cores a batch-64 prefill takes as long as 15 decode steps, and short rounds would
otherwise dilute every ratio towards 1.

``python -m mixinputs.bench`` runs :func:`serve_engine` (``child_engine.serve``: the child's side).
"""

from __future__ import annotations

import itertools
import os
import time

from mixinputs.bench.child_engine import ChildEngine
from mixinputs.bench.child_engine import serve as serve_engine  # noqa: F401 (python -m mixinputs.bench)

# Short prompts (8 tokens with the version suffix on SmolLM2): prefill is not what the bench
# measures, and on 2 CPU cores every prompt token costs as much compute as a generated one.
PROMPT = "Story {i}: the lighthouse keeper"  # request i's prompt; distinct, so none share KV
PROMPT_TOKENS = 8  # token-id prompts (no tokenizer): this many ids each
# The child's request ids, unique for the engine's life (the bench runs many batches on it).
_REQUEST_IDS = (f"bench-{i}" for i in itertools.count())


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


def timed_run(llm, batch: int, max_tokens: int, extra: dict | None, token_ids: bool) -> dict:
    """In the child: ``batch`` greedy requests of exactly ``max_tokens`` tokens each (``extra``:
    a method's request keys; standard: mode off), timed by :func:`timed_generate`."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    params = SamplingParams(
        max_tokens=max_tokens,
        temperature=0.0,
        ignore_eos=True,
        detokenize=not token_ids,
        output_kind=RequestOutputKind.DELTA,
        extra_args=extra,
    )
    return timed_generate(llm.llm_engine, prompts(batch, token_ids), params, _REQUEST_IDS)


def memory(llm) -> dict:
    """In the child: ``{"memory": <plugin_memory's answer from the worker>}``; None, with the
    error, where the worker cannot be asked (the run's figures stand without it)."""
    try:
        return {"memory": llm.collective_rpc(plugin_memory)[0]}
    except Exception as e:
        return {"memory": None, "error": repr(e)}


def engine_facts(llm) -> dict:
    """In the child, once it started: which runner vLLM picked, the dtype, the plugins named."""
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
    """A bench engine in a child process (its own environment), driven one command at a time.

    >>> p = EngineProcess("plugin", {"model": "..."}, dict(os.environ))  # doctest: +SKIP
    >>> p.wait()["runner"], p.run(8, 32)["decode_seconds"]              # doctest: +SKIP
    ('v1', 1.93)
    """

    def __init__(self, name: str, engine: dict, env: dict[str, str]):
        self.name = name
        self.token_ids = bool(engine.get("skip_tokenizer_init"))  # no tokenizer: id prompts
        env = {"VLLM_ALLOW_INSECURE_SERIALIZATION": "1", **env}  # the memory probe's callable
        self.child = ChildEngine(engine, env, name=name, facts=f"{__name__}:engine_facts")

    def wait(self, timeout: float = 1800) -> dict:
        """The engine's facts once it has started; a clear error with its log if it did not."""
        return self.child.ready(timeout)

    def run(self, batch: int, max_tokens: int, extra: dict | None = None) -> dict:
        """One timed batch: every request generates exactly ``max_tokens`` tokens."""
        answer = self.child.call(
            f"{__name__}:timed_run",
            batch=batch,
            max_tokens=max_tokens,
            extra=extra,
            token_ids=self.token_ids,
        )
        if answer["tokens"] != batch * max_tokens:
            raise RuntimeError(
                f"{self.name}: {answer['tokens']} tokens made, {batch * max_tokens} expected"
            )
        return answer

    def ask(self, obj: dict) -> dict:
        """``{"memory": True}`` -> :func:`memory`'s answer."""
        if set(obj) != {"memory"}:
            raise ValueError(f"unknown question {obj!r}")
        return self.child.call(f"{__name__}:memory")

    def close(self) -> None:
        self.child.close()
