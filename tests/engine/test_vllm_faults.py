"""The plugin never breaks vLLM (issue 23): a patch that cannot be installed, an unknown model
layout and a MoI step that raises each turn MoI off for that engine with one line naming the
cause; the engine starts (or keeps running), serves standard requests exactly as vLLM without
the plugin, and refuses MoI requests with the cause (a ValueError offline; a
``VLLMValidationError``, HTTP 400, from the server's ``AsyncLLM`` before any stream exists). Only
``MIXINPUTS_BETA`` (MoI demanded for every request) makes it a start-up error.

Each fault is injected at the top of tests/fault_engine_script.py, in every engine process, on
the runner vLLM picks (V1 on this CPU, V2 on a GPU: benchmarks/gpu/verify.sh runs this module);
both runners share ``attach`` and ``MoIStepState``, and V2's own wrapper's containment is tested
without an engine too (tests/engine/test_plugin_guards.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.vllm_support import (
    ENGINE_DEFAULTS,
    HERE,
    PROMPTS,
    REFERENCE_REQUESTS,
    model_path,
    require_vllm,
)

require_vllm()
pytestmark = [pytest.mark.vllm, pytest.mark.slow]

MOI = {"mixinputs_beta": 1.0}
OFF = "mixinputs: MoI is off for this engine"


def run_fault(fault: str, env: dict | None = None, engine: dict | None = None):
    spec = {
        "model": model_path(),
        # The reference's engine arguments (tests/conftest.py).
        "engine": {**ENGINE_DEFAULTS, "max_num_batched_tokens": 256, **(engine or {})},
        "prompts": PROMPTS,
        "moi": MOI,
        "standard": REFERENCE_REQUESTS,
    }
    full_env = {k: v for k, v in os.environ.items() if k != "MIXINPUTS_BETA"}
    full_env.update({"MIXINPUTS_TEST_FAULT": fault, **(env or {})})
    proc = subprocess.run(
        [sys.executable, str(HERE / "fault_engine_script.py")],
        input=json.dumps(spec), text=True, capture_output=True, env=full_env, timeout=600,
    )  # fmt: skip
    lines = [x for x in proc.stdout.splitlines() if x.startswith("FAULT-RESULT:")]
    assert lines, f"no result (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    return json.loads(
        lines[-1].removeprefix("FAULT-RESULT:")
    ), proc.stdout + proc.stderr  # vLLM logs to stdout


@pytest.fixture(scope="module")
def reference(no_plugin_reference):
    """The greedy batch on vLLM without the plugin (tests/conftest.py, shared with
    test_vllm_engine.py); the fault engines send the same requests."""
    return [r["token_ids"] for r in no_plugin_reference]


def off_lines(log: str) -> list[str]:
    return [x for x in log.splitlines() if OFF in x]


def test_a_patch_that_cannot_be_installed(reference):
    result, log = run_fault("register")
    cause = "could not install its prefix_cache patch on vLLM"
    assert result["standard"] == reference
    assert (
        cause in result["moi_error"]
        and "injected: the prefix-cache hook moved" in (result["moi_error"])
    )
    lines = off_lines(log)  # one line per process that registers (front end, engine core)
    assert lines and all(cause in x for x in lines)


def test_an_unknown_model_layout_served_by_asyncllm(reference):
    """The server's engine: refused when called (a 400 before any stream), and right after the
    start, before the workers' first answer arrived, when iterated."""
    result, log = run_fault("attach", env={"MIXINPUTS_TEST_ASYNC": "1"})
    cause = (
        "attaching MoI to LlamaForCausalLM failed (RuntimeError: injected: unknown model layout)"
    )
    assert result["standard"] == reference
    for key in ("early_moi_error", "late_moi_error"):
        assert result[key] is not None and cause in result[key], result
    lines = off_lines(log)
    assert len(lines) == 1 and cause in lines[0]  # the worker's line; the front end logs none


def test_a_step_that_raises_turns_moi_off_and_the_engine_keeps_serving(reference):
    result, log = run_fault("step")
    cause = "the MoI step raised while mixing (RuntimeError: injected: the step failed)"
    assert result["standard"] == reference
    assert len(result["first_moi"][0]) == 12  # the request in flight finished
    assert result["standard_after"] == reference
    assert result["moi_error"] is not None and cause in result["moi_error"]
    lines = off_lines(log)
    assert len(lines) == 1 and cause in lines[0]


def test_with_mixinputs_beta_an_unknown_layout_stops_the_start_with_one_line():
    result, log = run_fault("attach", env={"MIXINPUTS_BETA": "1.0"})
    assert "start_error" in result
    line = (
        "mixinputs: MIXINPUTS_BETA asks for MoI on every request, but this engine cannot mix: "
        "attaching MoI to LlamaForCausalLM failed (RuntimeError: injected: unknown model layout)"
    )
    assert line in log
