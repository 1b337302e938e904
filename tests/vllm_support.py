"""Shared helpers for the tests that start a real vLLM engine (CPU, the embedded model)."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mixinputs.bench.child_engine import ChildEngine

# Callables sent to the workers with `collective_rpc` are pickled: allowed in tests only.
os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")

HERE = Path(__file__).parent
ROOT = HERE.parent
KV_CACHE_BYTES = 512 << 20
# The engine modules' four prompts (of different lengths, one a counting pattern).
PROMPTS = [
    "The capital of France is",
    "Write a short poem about the sea:",
    "1, 2, 3, 4,",
    "Question: what is 17 + 25? Answer:",
]
# What standard requests are compared on: PROMPTS greedy and one seeded, as one batch
# (tests/conftest.py runs it once on vLLM without the plugin).
REFERENCE_REQUESTS = [
    *({"prompt": p, "params": {"max_tokens": 24, "temperature": 0.0}} for p in PROMPTS),
    {"prompt": PROMPTS[1], "params": {"max_tokens": 24, "temperature": 0.8, "seed": 7}},
]
ENGINE_DEFAULTS = {
    # float32 on every CPU: the tests compare fed mixtures and tokens with the float32 reference
    # (bf16, where a CPU has it, rounds ties differently in the fused and reference steps).
    "dtype": "float32",
    "enforce_eager": True,
    # The KV cache in bytes, never a share of memory: vLLM's CPU worker checks a share against the
    # memory free at start-up (which the page cache and a neighbouring engine eat) and fails, an
    # explicit size skips that check. 512 MiB holds all 8 sequences at full length in float32
    # (SmolLM2-135M: 45 KiB a token), so no test is preempted unless it asks to be.
    "kv_cache_memory_bytes": KV_CACHE_BYTES,
    "max_model_len": 1024,
    "max_num_seqs": 8,
    "seed": 0,
    "disable_log_stats": True,
}
# The GPU kit (benchmarks/gpu/) runs these modules with CUDA graphs and async scheduling on:
# engine arguments as JSON in MIXINPUTS_TEST_ENGINE, server flags in MIXINPUTS_TEST_SERVER_ARGS.
ENGINE_DEFAULTS.update(json.loads(os.environ.get("MIXINPUTS_TEST_ENGINE") or "{}"))


def require_vllm():
    return pytest.importorskip("vllm", reason="needs vLLM (the cpu extra)")


def model_path() -> str:
    # The GPU kit carries no weights: it points the tests at a random-weight copy of the embedded
    # model, made there from its config and tokenizer (benchmarks/gpu/random_model.py).
    if os.environ.get("MIXINPUTS_TEST_MODEL"):
        return os.environ["MIXINPUTS_TEST_MODEL"]
    from mixinputs.embedded_model import embedded_model_path

    return str(embedded_model_path())


def start_llm(**overrides):
    vllm = require_vllm()
    return vllm.LLM(model=model_path(), **{**ENGINE_DEFAULTS, **overrides})


def shutdown(llm) -> None:
    """Stop an engine's processes now, so the next module's engine has the memory."""
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()


def texts(outputs) -> list[str]:
    return [o.outputs[0].text for o in outputs]


def token_ids(outputs) -> list[list[int]]:
    return [list(o.outputs[0].token_ids) for o in outputs]


# -- calls that run inside the worker (self is the worker) --------------------------------------
def _state(worker):
    from mixinputs.vllm_plugin.attach import step_state_of

    return step_state_of(worker.model_runner)


def record_of(step) -> dict:
    """A ``StepRecord`` as the checks below read it (what crosses vLLM's RPC: plain tensors)."""
    methods = step.method_step
    return {
        "req_ids": step.req_ids,
        "js": step.js,
        "prior": step.prior,
        "sampled": step.sampled,
        "beta": step.rows.methods.beta,
        "direct": step.rows.methods.direct,
        "top_k": step.rows.row_top_k,
        "methods": list(step.rows.methods) if methods else None,
        "state": list(step.rows.state) if methods else None,
        "emitted": step.emitted,
        "mixed": step.mixed,
        "plain_mask": step.plain_mask,
    }


class _Recorder:
    """An observer of the worker's MoI steps (``MoIStepState.observers``)."""

    def __init__(self):
        self.records: list[dict] = []

    def __call__(self, step) -> None:
        self.records.append(record_of(step))


def _enable_trace(worker):
    state = _state(worker)
    state.observers[:] = [o for o in state.observers if not isinstance(o, _Recorder)]
    state.observers.append(_Recorder())


def _take_trace(worker):
    state = _state(worker)
    recorder = next(o for o in state.observers if isinstance(o, _Recorder))
    state.observers.remove(recorder)
    return recorder.records


def _summary(worker):
    state = _state(worker)
    return {**state.stats(), "step_state": type(state).__name__}


def _embedding_weight(worker):
    return _state(worker).embed.base.weight.detach().float().cpu()


def same_request(worker_id: str, request_id: str) -> bool:
    """Whether a worker's request id is the one ``LLM.generate`` returned (vLLM appends a random
    suffix to each request id inside the engine)."""
    return worker_id == request_id or worker_id.startswith(f"{request_id}-")


def worker(llm, fn, *args):
    return llm.collective_rpc(fn, args=args)[0]


def trace(llm, run):
    """Run ``run()`` with the worker recording every MoI step; returns (result, records)."""
    worker(llm, _enable_trace)
    result = run()
    return result, worker(llm, _take_trace)


def summary(llm) -> dict:
    return worker(llm, _summary)


def embedding_weight(llm):
    return worker(llm, _embedding_weight)


# -- engines in another process (other environment: no plugin, MIXINPUTS_BETA, ...) -------------
def child_engine(engine: dict, env: dict[str, str] | None = None, **options) -> ChildEngine:
    """vLLM with ``engine`` (its arguments, the model added) in a process of its own, with this
    process's environment plus ``env``, run from the repository root (so that it can call
    functions of ``tests``); ``options``: ``ChildEngine``'s (``log``, ``setup``, ``name``)."""
    return ChildEngine(
        {"model": model_path(), **engine}, {**os.environ, **(env or {})}, cwd=ROOT, **options
    )


def run_engine_subprocess(
    requests: list[dict],
    env: dict[str, str],
    engine: dict | None = None,
    timeout: int = 600,
    info: dict | None = None,
) -> list[dict]:
    """Start an engine (``ENGINE_DEFAULTS`` and ``engine``) in a fresh process with ``env``; run
    ``requests`` as one batch; ``mixinputs.bench.child_engine.generate``'s answer.

    ``info``, when given, is filled with what the worker reports ({"moi", "fused"})."""
    with child_engine({**ENGINE_DEFAULTS, **(engine or {})}, env) as child:
        out = child.generate(requests, timeout=timeout)
        if info is not None:
            info.update(child.call("tests.vllm_support:moi_info"))
    return out


def moi_info(llm) -> dict:
    """(In a child engine.) Whether its worker runs MoI, and with the fused step."""
    try:
        return worker(llm, _moi_info)
    except Exception as e:  # no plugin, or callables not allowed over RPC
        return {"error": repr(e)}


def _moi_info(worker) -> dict:
    state = _state(worker)
    return {"moi": state is not None, "fused": state is not None and state.step.fused}


def core_beside() -> str | None:
    """A CPU core for an engine that runs beside another, as ``VLLM_CPU_OMP_THREADS_BIND``
    takes it: the last allowed core (vLLM's automatic binding puts every engine's one OpenMP
    thread on the first; one thread either way, so the arithmetic is the same). None where
    engines should not run side by side: one core, or a GPU (vLLM's memory profile fails when
    another process frees GPU memory meanwhile)."""
    import torch

    cores = sorted(os.sched_getaffinity(0))
    return None if torch.cuda.is_available() or len(cores) < 2 else str(cores[-1])


class EngineBeside:
    """``run_engine_subprocess`` started now, beside whatever runs next (a reference run while
    the module's own engine starts and works), collected with :meth:`result`. Runs at
    :meth:`result` instead where :func:`core_beside` says engines should not run side by side."""

    def __init__(self, requests: list[dict], env: dict[str, str], engine: dict | None = None):
        self._run = requests, env, engine
        self._child = None
        core = core_beside()
        if core is not None:
            engine = {**ENGINE_DEFAULTS, **(engine or {})}
            self._child = child_engine(engine, {**env, "VLLM_CPU_OMP_THREADS_BIND": core})
            self._child.send("generate", requests=requests)  # answered while this one goes on

    def result(self) -> list[dict]:
        if self._child is None:
            return run_engine_subprocess(*self._run)
        with self._child:
            return self._child.answer(timeout=600)


# -- the OpenAI-compatible server -------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(port: int, *extra_args: str, model: str | None = None) -> list[str]:
    """The ``vllm serve`` command line of :func:`openai_server` (the console script of this
    environment): ``model`` (default: the embedded model) served as "smol" on ``port``."""
    return [
        str(Path(sys.executable).parent / "vllm"),
        "serve",
        model or model_path(),
        "--served-model-name",
        "smol",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--kv-cache-memory-bytes",
        str(ENGINE_DEFAULTS["kv_cache_memory_bytes"]),
        "--max-model-len",
        "1024",
        "--max-num-seqs",
        "8",
        "--enforce-eager",
        "--seed",
        "0",
        *shlex.split(os.environ.get("MIXINPUTS_TEST_SERVER_ARGS", "")),
        *extra_args,
    ]


@contextlib.contextmanager
def openai_server(log_path: Path, *extra_args: str, timeout: float = 400, model: str | None = None):
    """Start vLLM's OpenAI server on a free loopback port, as the README says (``vllm serve``:
    :func:`server_command`); yield an ``openai.OpenAI`` client. (The plugin's server with the
    defaults is shared by the modules that only send it requests: ``plugin_server`` in
    tests/conftest.py.)"""
    import openai

    port = free_port()
    cmd = server_command(port, *extra_args, model=model)
    with open(log_path, "w") as handle:
        proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT)
    api = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"server exited:\n{log_path.read_text()[-4000:]}")
            try:
                api.models.list()
                break
            except openai.APIConnectionError:
                if time.time() > deadline:
                    raise AssertionError(f"no server:\n{log_path.read_text()[-4000:]}") from None
                time.sleep(2)
        yield api
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


# -- checking traced steps against the reference --------------------------------------------------
def check_step_record(rec: dict, weight, width: int = 20, rtol: float = 2**-7) -> int:
    """Every row of one traced step fed ``mixing``'s reference on the same logits: the soft-input
    methods through ``mix_step``, plain MoI / direct rows through ``mix_embeddings``. Returns
    the number of rows checked."""
    import torch

    from mixinputs import mix_embeddings
    from mixinputs.mixing import CarriedState, MethodRows, mix_step

    mixed = rec["mixed"].float()
    if rec.get("methods") is not None:
        rows = MethodRows(*rec["methods"])
        state = CarriedState(*rec["state"])
        expected, step, _ = mix_step(
            rec["prior"], rec["sampled"], weight, rows, state, width, rec["top_k"],
            rec.get("plain_mask"),
        )  # fmt: skip
        assert torch.equal(step.sampled, rec["emitted"]), (step.sampled, rec["emitted"])
    else:
        expected = mix_embeddings(
            rec["prior"], rec["sampled"], weight, rec["beta"], mode=rec["direct"], top_k=width
        )
        if "top_k" in rec and bool((rec["top_k"] < width).any()):
            expected = torch.stack(
                [
                    mix_embeddings(
                        rec["prior"][i : i + 1],
                        rec["sampled"][i : i + 1],
                        weight,
                        rec["beta"][i : i + 1],
                        mode=rec["direct"][i : i + 1],
                        top_k=int(rec["top_k"][i]),
                    )[0]
                    for i in range(len(rec["sampled"]))
                ]
            )
    torch.testing.assert_close(mixed, expected.to(rec["mixed"].dtype).float(), rtol=rtol, atol=1e-6)
    return len(rec["sampled"])


# -- the plugin registered in a fresh process, with one thing changed first ---------------------
_REGISTER_SCRIPT = r"""
import json, logging, sys
logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
{setup}
import mixinputs.vllm_plugin as plugin
result = {{}}
try:
    plugin.register()
    result["registered"] = True
except Exception as e:
    result["raised"] = f"{{type(e).__name__}}: {{e}}"
if result.get("registered"):
    from vllm import SamplingParams
    from vllm.v1.engine.input_processor import InputProcessor
    front_end = type("FrontEnd", (), {{"vllm_config": None}})()
    try:
        InputProcessor.process_inputs(
            front_end, "r", "p", SamplingParams(extra_args={{"mixinputs_beta": 1}}))
    except ValueError as e:
        result["request_error"] = str(e)
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner
    result["runner_untouched"] = not hasattr(GPUModelRunner._sample, "__mixinputs_original__")
print("RESULT:" + json.dumps(result))
"""


def register_in_subprocess(setup: str, env: dict[str, str] | None = None) -> tuple[dict, str]:
    """Run ``setup`` (Python source: a fault to inject), register the plugin, then send one MoI
    request to the front end's validation; returns ({"registered" or "raised",
    "request_error", "runner_untouched"}, the log). ``MIXINPUTS_BETA`` only when ``env`` sets it."""
    require_vllm()
    base = {k: v for k, v in os.environ.items() if k != "MIXINPUTS_BETA"}
    out = subprocess.run(
        [sys.executable, "-c", _REGISTER_SCRIPT.format(setup=setup)],
        capture_output=True, text=True, env={**base, **(env or {})}, timeout=300,
    )  # fmt: skip
    lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT:")]
    assert lines, out.stderr[-3000:]
    return json.loads(lines[0][7:]), out.stderr
