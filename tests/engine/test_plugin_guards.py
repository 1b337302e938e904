"""The plugin never breaks vLLM: the start-up checks over vLLM's own config classes, the front
end's view of its workers, and MoI's worst step in vLLM's memory profile (no engine here; the
engine-level fault injection is tests/engine/test_vllm_faults.py)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

vllm = pytest.importorskip("vllm", reason="needs vLLM (the cpu extra)")
from vllm.config import (  # noqa: E402
    CompilationConfig,
    CompilationMode,
    CUDAGraphMode,
    ParallelConfig,
)

from mixinputs.vllm_plugin import attach, compat, status  # noqa: E402
from mixinputs.vllm_plugin.peak_memory import PeakBytes  # noqa: E402


def config(
    mode=CompilationMode.VLLM_COMPILE,
    graphs=CUDAGraphMode.NONE,
    eager=False,
    parallel=None,
    **fields,
):
    """A VllmConfig as the plugin reads it, from vLLM's own sub-config classes."""
    model = SimpleNamespace(
        enforce_eager=eager,
        enable_prompt_embeds=fields.pop("prompt_embeds", False),
        runner_type=fields.pop("runner_type", "generate"),
    )
    return SimpleNamespace(
        model_config=model,
        compilation_config=CompilationConfig(mode=mode, cudagraph_mode=graphs),
        parallel_config=parallel or ParallelConfig(),
        speculative_config=fields.pop("speculative_config", None),
        watermark_config=fields.pop("watermark_config", None),
        **fields,
    )


# -- runs_eagerly: every CompilationMode x CUDAGraphMode x enforce_eager ------------------------
@pytest.mark.parametrize(
    ("mode", "graphs", "eager"),
    list(itertools.product(list(CompilationMode), list(CUDAGraphMode), (False, True))),
)
def test_runs_eagerly_over_every_mode(mode, graphs, eager):
    got = attach.runs_eagerly(config(mode, graphs, eager))
    # Eager: enforce_eager, or no compilation and no CUDA graph of any kind (a composite mode
    # such as FULL_AND_PIECEWISE = (2, 1) or FULL_DECODE_ONLY = (2, 0) captures graphs).
    assert got is (eager or (mode == CompilationMode.NONE and graphs == CUDAGraphMode.NONE))


def test_breakable_cuda_graphs_are_not_eager():
    """vLLM 0.32+ runs breakable-CUDA-graph models with compilation mode NONE and graphs on: the
    crash of issue 23 (``int((2, 1))``)."""
    for graphs in (CUDAGraphMode.FULL_AND_PIECEWISE, CUDAGraphMode.FULL_DECODE_ONLY):
        assert attach.runs_eagerly(config(CompilationMode.NONE, graphs)) is False


def test_runs_eagerly_never_raises():
    odd = SimpleNamespace(
        model_config=None, compilation_config=SimpleNamespace(mode="weird", cudagraph_mode=(7,))
    )
    assert attach.runs_eagerly(odd) is False
    assert attach.runs_eagerly(object()) is False


# -- refusal_reason: each refusal input, on both runners ---------------------------------------
REFUSALS = [
    ({"speculative_config": object()}, "speculative decoding"),
    ({"parallel": ParallelConfig(pipeline_parallel_size=2)}, "pipeline parallelism"),
    ({"parallel": ParallelConfig(decode_context_parallel_size=2, tensor_parallel_size=2)},
     "decode context parallelism"),
    ({"prompt_embeds": True}, "prompt embeddings"),
    ({"runner_type": "pooling"}, "not a generative model"),
]  # fmt: skip
V2_ONLY = [
    ({"watermark_config": object()}, "watermarking"),
    ({"parallel": SimpleNamespace(enable_batch_sharded_sampling=True)}, "batch-sharded"),
]


@pytest.mark.parametrize("v2", [False, True], ids=["V1", "V2"])
@pytest.mark.parametrize(("fields", "needle"), REFUSALS + V2_ONLY)
def test_refusal_reason_names_each_input(monkeypatch, v2, fields, needle):
    monkeypatch.setattr(attach, "uses_v2_runner", lambda _config: v2)
    reason = attach.refusal_reason(config(**fields))
    if (fields, needle) in V2_ONLY and not v2:
        assert reason is None
    else:
        assert reason is not None and needle in reason


def test_prefill_context_parallel_is_refused(monkeypatch):
    parallel = SimpleNamespace(prefill_context_parallel_size=2)
    assert "prefill context parallelism" in attach.refusal_reason(config(parallel=parallel))


def test_a_plain_engine_is_not_refused_and_a_broken_config_is_a_reason():
    assert attach.refusal_reason(config()) is None

    class Broken:
        @property
        def parallel_config(self):
            raise KeyError("moved")

        speculative_config = None

    assert "could not read this engine's configuration" in attach.refusal_reason(Broken())


def test_the_standalone_cpu_runner_is_refused(monkeypatch):
    from vllm.platforms import current_platform

    monkeypatch.setattr(
        type(current_platform), "uses_standalone_cpu_model_runner", classmethod(lambda c: True),
        raising=False,
    )  # fmt: skip
    assert "standalone CPU model runner" in attach.refusal_reason(config())


def test_runner_detection(monkeypatch):
    class Picks:
        def __init__(self, value):
            self.value = value

        @property
        def use_v2_model_runner(self):
            if isinstance(self.value, Exception):
                raise self.value
            return self.value

    assert attach.uses_v2_runner(Picks(True)) is True
    assert attach.uses_v2_runner(Picks(False)) is False
    assert attach.uses_v2_runner(Picks(ValueError("HiSparse needs V2"))) is True
    assert attach.uses_v2_runner(SimpleNamespace()) is False  # a release without the property
    monkeypatch.setattr(compat, "has_v1_runner", lambda: False)  # vLLM 0.34: V2 only
    assert attach.uses_v2_runner(Picks(False)) is True
    assert attach.uses_v2_runner(SimpleNamespace()) is True


def test_runner_detection_reads_vllms_own_choice(monkeypatch):
    """On a real VllmConfig of the embedded model, the answer is vLLM's (V1 on this CPU unless
    the user sets VLLM_USE_V2_MODEL_RUNNER); the plugin itself never sets the variable."""
    from vllm.engine.arg_utils import EngineArgs

    from tests.vllm_support import model_path

    monkeypatch.delenv("VLLM_USE_V2_MODEL_RUNNER", raising=False)
    real = EngineArgs(model=model_path(), enforce_eager=True).create_engine_config()
    assert attach.uses_v2_runner(real) is bool(real.use_v2_model_runner)
    assert attach.refusal_reason(real) is None and attach.runs_eagerly(real) is True
    assert "VLLM_USE_V2_MODEL_RUNNER" not in os.environ


def test_register_sets_no_vllm_variable():
    script = (
        "import os, json\n"
        "before = {k: v for k, v in os.environ.items() if k.startswith('VLLM_')}\n"
        "import mixinputs.vllm_plugin as p\n"
        "p.register()\n"
        "after = {k: v for k, v in os.environ.items() if k.startswith('VLLM_')}\n"
        "print('VARS:' + json.dumps([before == after, sorted(set(after) - set(before))]))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_USE_V2")}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    line = next(x for x in out.stdout.splitlines() if x.startswith("VARS:"))
    assert json.loads(line[5:]) == [True, []], out.stderr[-2000:]


# -- registration failures: MoI off, requests refused, vLLM untouched ---------------------------
MOVED_HOOK = (
    "from mixinputs.vllm_plugin.patches import compile_cache\n"
    "def moved():\n    raise AttributeError('VllmConfig has no compile hook here')\n"
    "compile_cache.apply = moved\n"
)


def _run_fault(env_extra):
    from tests.vllm_support import register_in_subprocess

    return register_in_subprocess(MOVED_HOOK, env_extra)


def test_a_patch_that_cannot_be_installed_turns_moi_off_with_one_line():
    result, log = _run_fault({})
    cause = "could not install its compile_cache patch"
    assert result["registered"] and cause in result["request_error"]
    assert "VllmConfig has no compile hook here" in result["request_error"]
    assert result["runner_untouched"]  # the patches after the failing one were not installed
    lines = [x for x in log.splitlines() if "MoI is off for this engine" in x]
    assert len(lines) == 1 and cause in lines[0]


def test_with_mixinputs_beta_a_patch_failure_stops_the_start():
    result, _ = _run_fault({"MIXINPUTS_BETA": "1.0"})
    assert result["raised"].startswith("MoIStartupError: mixinputs: MIXINPUTS_BETA asks for MoI")
    assert "compile_cache" in result["raised"]


def test_a_malformed_variable_without_mixinputs_beta_only_turns_moi_off():
    script = (
        "import mixinputs.vllm_plugin as p\n"
        "from vllm.v1.engine.input_processor import InputProcessor\n"
        "from vllm import SamplingParams\n"
        "p.register()\n"
        "fe = type('F', (), {'vllm_config': None})()\n"
        "try:\n"
        "    InputProcessor.process_inputs(fe, 'r', 'p', SamplingParams("
        "extra_args={'mixinputs_beta': 1}))\n"
        "except ValueError as e:\n    print('REFUSED:' + str(e))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MIXINPUTS_BETA"}
    env["MIXINPUTS_MAX_TOP_K"] = "lots"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert "REFUSED:" in out.stdout and "MIXINPUTS_MAX_TOP_K='lots'" in out.stdout, out.stderr


# -- the front end's view of its workers ---------------------------------------------------------
def test_worker_status_cell_refreshes_only_while_healthy(monkeypatch):
    answers = iter([[None], [None, "the step raised"], [None]])
    calls = []

    def fetch():
        calls.append(1)
        return next(answers)

    cell = status.WorkerStatusCell(fetch_sync=fetch)
    assert cell.current() is None and len(calls) == 1
    assert cell.current() is None and len(calls) == 1  # fresh: not asked again
    monkeypatch.setattr(status, "REFRESH_S", 0.0)
    assert cell.current() == "the step raised" and len(calls) == 2
    assert cell.current() == "the step raised" and len(calls) == 2  # once off, off for good


def test_worker_status_cell_survives_an_engine_that_cannot_answer(monkeypatch):
    def fetch():
        raise TimeoutError("no answer")

    cell = status.WorkerStatusCell(fetch_sync=fetch)
    assert cell.current() is None and not cell.known


def test_async_cell_answers_once_the_task_is_done():
    import asyncio

    async def fetch():
        await asyncio.sleep(0.01)
        return [["nested", None]]

    async def main():
        cell = status.WorkerStatusCell(fetch_async=fetch)
        cell.refresh()
        assert not cell.known and cell.current() is None
        return await cell.wait()

    assert asyncio.run(main()) == "nested"


def test_worker_status_reads_the_attached_state():
    state = SimpleNamespace(disabled=None)
    runner = SimpleNamespace(_mixinputs=SimpleNamespace(state=state))
    wrapper = SimpleNamespace(worker=SimpleNamespace(model_runner=runner))
    assert status.worker_status(wrapper) is None
    state.disabled = "the MoI step raised while mixing (KeyError: 'x')"
    assert status.worker_status(wrapper) == state.disabled
    bare = SimpleNamespace(worker=SimpleNamespace(model_runner=SimpleNamespace()))
    status.record_attach(None)
    assert "does not hook SimpleNamespace" in status.worker_status(bare)


# -- MoI's worst step in vLLM's memory profile ----------------------------------------------------
VOCAB, HIDDEN, SLOTS, K = 512, 16, 4, 8


def _state():
    from mixinputs.vllm_plugin.embedding import MixedInputEmbedding
    from mixinputs.vllm_plugin.step_state import MoIStepState

    torch.manual_seed(0)
    base = torch.nn.Embedding(VOCAB, HIDDEN).requires_grad_(False)
    return MoIStepState(MixedInputEmbedding(base, SLOTS, 32), max_top_k=K)


def _sampler(logits):
    tokens = torch.argmax(logits, dim=-1, keepdim=True)
    return SimpleNamespace(sampled_token_ids=tokens, logprobs_tensors=None)


def test_the_profile_runs_every_heavy_method_on_every_slot_and_leaves_nothing_behind():
    from mixinputs.vllm_plugin import worst_case

    state = _state()
    logits = torch.randn(SLOTS, VOCAB)
    worst_case.profile(state, _sampler, logits)
    report = state.profiled
    assert report["rows"] == SLOTS and set(report["methods"]) == set(worst_case.WORST_CASES)
    assert report["extra_bytes"] > 0 and state.disabled is None
    assert not state.is_open.any() and state.num_open == 0
    assert torch.count_nonzero(state.embed.slots) == 0
    assert int(state.embed.newest_pos.abs().sum()) == 0 and state.plain_mask is None


def test_the_profile_takes_dummy_logits_with_nan_and_inf_rows():
    """vLLM's dummy forward can leave NaN / inf in padding rows (seen with V2 on CPU, where its
    Triton sampling kernel then raised "All-NaN slice" in the interpreter): the profile makes
    them finite in place before anything samples, and MoI stays on."""
    from mixinputs.vllm_plugin import worst_case

    def strict_sampler(logits):
        assert torch.isfinite(logits).all(), "the sampler got non-finite logits"
        return _sampler(logits)

    state = _state()
    logits = torch.randn(SLOTS, VOCAB)
    logits[0] = float("nan")
    logits[1, :7] = float("inf")
    logits[2, 3] = -float("inf")
    worst_case.profile(state, strict_sampler, logits)
    assert state.disabled is None and set(state.profiled["methods"]) == set(worst_case.WORST_CASES)


@pytest.mark.parametrize("method", ["soft", "selar", "multiplex", "swir"])
def test_a_real_full_batch_costs_no_more_than_the_profiled_worst_step(method):
    """Real requests of each heavy method in every slot (the profile's own configs, through the
    plan and sample of a request that is not the first step) peak at or below what the profile
    measured: the KV cache was sized with room for them."""
    from mixinputs.vllm_plugin import worst_case
    from mixinputs.vllm_plugin.step_state import SlotRequest

    state = _state()
    logits = torch.randn(SLOTS, VOCAB)
    worst_case.profile(state, _sampler, logits.clone())
    budget = state.profiled["methods"][method]
    config = worst_case._resolved(worst_case.WORST_CASES[method](K))
    params = worst_case._params(temperature=0.7)
    for slot in range(SLOTS):
        state.open(slot, SlotRequest.new(f"r{slot}", config, params, state.width), params)
    rows = np.arange(SLOTS)
    ones = np.ones(SLOTS, dtype=np.int64)
    for j in range(3):  # a 5-token prompt's prefill, then two decode steps
        token = object()
        if j == 0:
            state.plan(rows, rows, ones * 0, ones * 5, rows * 5, ones * 5, ones * 5, SLOTS, token)
        else:
            state.plan(rows, rows, ones * (4 + j), ones, rows, ones * 5, ones * 5, SLOTS, token)
        step_logits = torch.randn(SLOTS, VOCAB)  # vLLM's, made before the step
        with PeakBytes() as peak:
            state.sample(_sampler, step_logits, token=token)
        assert state.disabled is None
        assert peak.peak <= budget, (method, j, peak.peak, budget)


def test_a_profile_that_raises_turns_moi_off_and_still_samples(monkeypatch):
    from mixinputs.vllm_plugin import worst_case
    from mixinputs.vllm_plugin.mix_step import MixStep

    state = _state()

    def boom(*_a, **_k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")

    monkeypatch.setattr(MixStep, "mix_into_slots", boom)
    out = worst_case.profile(state, _sampler, torch.randn(SLOTS, VOCAB))
    assert out.sampled_token_ids.shape == (SLOTS, 1)
    assert "OutOfMemoryError" in state.disabled and state.profiled is None
    assert state.num_open == 0


def test_a_step_that_raises_turns_moi_off_and_the_step_still_samples(monkeypatch):
    from mixinputs.config import MoIConfig
    from mixinputs.vllm_plugin.mix_step import MixStep
    from mixinputs.vllm_plugin.step_state import SlotRequest

    state = _state()
    params = SimpleNamespace(temperature=0.8, top_k=0, top_p=1.0, seed=1, max_tokens=16)
    state.open(0, SlotRequest.new("r", MoIConfig(beta=1.0, top_k=K), params, state.width), params)
    one = np.ones(1, dtype=np.int64)
    token = object()
    state.plan(np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64), one * 0, one,
               one * 0, one, one, 1, token)  # fmt: skip

    def boom(*_a, **_k):
        raise KeyError("vocab_entropy")

    monkeypatch.setattr(MixStep, "mix_into_slots", boom)
    out = state.sample(_sampler, torch.randn(1, VOCAB), token=token)
    assert out.sampled_token_ids.shape == (1, 1)
    assert state.disabled == "the MoI step raised while mixing (KeyError: 'vocab_entropy')"
    assert int(state.embed.newest_pos.abs().sum()) == 0
    state.contained("planning", lambda: 1 / 0)  # off: hooks do nothing more
    assert "KeyError" in state.disabled


def test_v2_keeps_vllms_model_state_when_attaching_fails():
    """``wrap_model_state`` (Model Runner V2's ``init_model_state``) returns the state vLLM built
    when MoI cannot attach: a model without a token embedding, and a state without V2's sizes."""
    from mixinputs.vllm_plugin.settings import PluginSettings
    from mixinputs.vllm_plugin.v2_model_state import wrap_model_state

    settings = PluginSettings(default=None, max_top_k=20)
    inner = SimpleNamespace(max_num_reqs=4, max_num_tokens=32)
    model = torch.nn.Linear(2, 2)  # no VocabParallelEmbedding anywhere
    assert wrap_model_state(inner, config(), model, "cpu", settings) is inner
    assert "has no token embedding" in status.worker_status(SimpleNamespace())
    bare = SimpleNamespace()
    assert wrap_model_state(bare, config(), model, "cpu", settings) is bare
    assert "reading SimpleNamespace's sizes failed" in status._attach_refusal
    demanding = PluginSettings(default=object(), max_top_k=20)
    with pytest.raises(attach.MoIStartupError, match="MIXINPUTS_BETA asks for MoI"):
        wrap_model_state(inner, config(), model, "cpu", demanding)
    status.record_attach(None)


def test_on_a_vllm_without_model_runner_v1_only_v2_is_hooked():
    """vLLM 0.34 deleted V1: the plugin installs no V1 patch (whose module is gone there) and
    hooks V2 (simulated here by hiding V1 from ``compat``)."""
    script = (
        "import json\n"
        "from mixinputs.vllm_plugin import compat\n"
        "compat.has_v1_runner = lambda: False\n"
        "import mixinputs.vllm_plugin as p\n"
        "p.register()\n"
        "from vllm.v1.worker.gpu_model_runner import GPUModelRunner as V1\n"
        "import vllm.v1.worker.gpu.model_runner as v2\n"
        "from mixinputs.vllm_plugin import status\n"
        "print('HOOKS:' + json.dumps([hasattr(V1._sample, '__mixinputs_original__'),\n"
        "    hasattr(v2.init_model_state, '__mixinputs_original__'),\n"
        "    status.registration_failure()]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
        env={k: v for k, v in os.environ.items() if k != "MIXINPUTS_BETA"},
    )  # fmt: skip
    line = next((x for x in out.stdout.splitlines() if x.startswith("HOOKS:")), None)
    assert line is not None, out.stderr[-2000:]
    assert json.loads(line[6:]) == [False, True, None]
