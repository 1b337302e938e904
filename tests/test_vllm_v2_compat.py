"""Version guard for the Model Runner V2 hook: every V2 name the plugin wraps, calls or reads,
checked with ``ast`` in the installed vLLM (0.32) and in the GPU wheels' sources (0.26.0, 0.33.0).

The wheels are read from ``/work/wheels`` (unzipped ``src-<version>/`` or the ``.whl``) when
present, else downloaded once into the mixinputs cache as ``tests/test_vllm_compat.py`` does.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

WHEEL_RELEASES = ("0.26.0", "0.33.0")
LOCAL_WHEELS = Path("/work/wheels")

RUNNER = "vllm/v1/worker/gpu/model_runner.py"
STATES = "vllm/v1/worker/gpu/model_states/__init__.py"
INTERFACE = "vllm/v1/worker/gpu/model_states/interface.py"
SAMPLER = "vllm/v1/worker/gpu/sample/sampler.py"

# (file, class or None, function, the leading parameters the plugin passes or receives)
FUNCTIONS = [
    (STATES, None, "init_model_state", ["vllm_config", "model", "encoder_cache", "device"]),
    (RUNNER, "GPUModelRunner", "finish_requests", ["self", "scheduler_output"]),
    (INTERFACE, "ModelState", "add_request", ["self", "req_index", "new_req_data"]),
    (INTERFACE, "ModelState", "remove_request", ["self", "req_id"]),
    (INTERFACE, "ModelState", "prepare_inputs", ["self", "input_batch", "req_states"]),
    (INTERFACE, "ModelState", "prepare_dummy_inputs", ["self", "num_reqs", "num_tokens"]),
    (INTERFACE, "ModelState", "custom_sampler", ["self", "sampler"]),
    (SAMPLER, "Sampler", "__call__", ["self", "logits", "input_batch"]),
    (SAMPLER, "Sampler", "apply_sampling_params", ["self", "logits"]),
]
# Calls the plugin relies on: (file, the callee as source text, positional arguments as text).
CALLS = [
    (
        RUNNER,
        "init_model_state",
        ["self.vllm_config", "self.model", "self.encoder_cache", "self.device"],
    ),
    (RUNNER, "self.model_state.custom_sampler", ["self.sampler"]),
    (RUNNER, "self.model_state.add_request", ["req_index", "new_req_data"]),
    (RUNNER, "self.model_state.remove_request", ["req_id"]),
    (RUNNER, "self.model_state.prepare_inputs", ["input_batch", "self.req_states"]),
    (RUNNER, "self.sampler", ["logits", "input_batch"]),
    (RUNNER, "self._remove_request", ["req_id"]),
]
# Text that must be in a file: names the plugin reads or a keyword it looks for.
TEXTS = [
    (RUNNER, "from vllm.v1.worker.gpu.model_states import init_model_state"),
    (RUNNER, "class GPUModelRunner"),
    (RUNNER, "preempted_req_ids = scheduler_output.preempted_req_ids"),
    (SAMPLER, "skip_top_k_top_p=True"),
    (SAMPLER, "sampled_token_ids=sampled.view(-1, 1)"),
    ("vllm/v1/worker/gpu/sample/output.py", "sampled_token_ids: torch.Tensor"),
    ("vllm/v1/worker/gpu/states.py", "self.req_id_to_index: dict[str, int] = {}"),
    ("vllm/v1/worker/gpu/states.py", "self.prompt_len = UvaBackedTensor("),
    ("vllm/v1/worker/gpu/buffer_utils.py", "self.np = self.cpu.numpy()"),
    ("vllm/v1/worker/gpu/input_batch.py", "req_ids: list[str]"),
    ("vllm/v1/worker/gpu/input_batch.py", "num_reqs: int"),
    ("vllm/v1/worker/gpu/input_batch.py", "idx_mapping_np: np.ndarray"),
    ("vllm/v1/worker/gpu/input_batch.py", "num_scheduled_tokens: np.ndarray"),
    ("vllm/v1/worker/gpu/input_batch.py", "query_start_loc_np: np.ndarray"),
    ("vllm/v1/worker/gpu/input_batch.py", "num_computed_tokens_np: np.ndarray"),
    ("vllm/v1/worker/gpu/input_batch.py", "prefill_len_np: np.ndarray"),
    ("vllm/v1/worker/gpu/input_batch.py", "idx_mapping_np = np.arange(num_reqs"),  # dummy
    ("vllm/v1/worker/gpu/model_states/default.py", "class DefaultModelState(ModelState)"),
    ("vllm/v1/worker/cpu/model_runner.py", "class CPUModelRunner(GPUModelRunner)"),
    ("vllm/v1/core/sched/output.py", "preempted_req_ids: set[str] | None"),
    ("vllm/v1/core/sched/output.py", "sampling_params: SamplingParams | None"),
    ("vllm/config/vllm.py", "def use_v2_model_runner(self) -> bool:"),
]


def _function(tree: ast.Module, cls: str | None, name: str):
    scope = tree.body
    if cls is not None:
        owners = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls]
        if not owners:
            return None
        scope = owners[0].body
    found = [n for n in scope if isinstance(n, ast.FunctionDef) and n.name == name]
    return found[0] if found else None


def check_sources(read: Callable[[str], str]) -> list[str]:
    """Problems found in a vLLM source tree; ``read(path)`` returns a file's text."""
    problems = []
    trees: dict[str, ast.Module] = {}

    def tree(path: str) -> ast.Module:
        if path not in trees:
            trees[path] = ast.parse(read(path))
        return trees[path]

    for path, cls, func, params in FUNCTIONS:
        node = _function(tree(path), cls, func)
        if node is None:
            problems.append(f"{path}: no {cls}.{func}")
            continue
        names = [a.arg for a in node.args.args][: len(params)]
        if names != params:
            problems.append(f"{path}: {func}{tuple(names)}, the plugin expects {params}")
    for path, callee, args in CALLS:
        calls = [
            [ast.unparse(a) for a in n.args]
            for n in ast.walk(tree(path))
            if isinstance(n, ast.Call) and ast.unparse(n.func) == callee
        ]
        if args not in calls:
            problems.append(f"{path}: no call {callee}({', '.join(args)}) (found {calls[:3]})")
    for path, text in TEXTS:
        if text not in read(path):
            problems.append(f"{path}: `{text}` not found")
    return problems


def test_installed_vllm_has_the_hooked_v2_names():
    vllm = pytest.importorskip("vllm")
    root = Path(vllm.__file__).parent.parent
    assert check_sources(lambda p: (root / p).read_text()) == []


def _wheel_reader(version: str) -> Callable[[str], str]:
    unzipped = LOCAL_WHEELS / f"src-{version}"
    if (unzipped / "vllm" / "__init__.py").exists():
        return lambda p: (unzipped / p).read_text()
    wheels = sorted(LOCAL_WHEELS.glob(f"vllm-{version}-*.whl"))
    if not wheels:
        from mixinputs.embedded_model import cache_dir

        folder = cache_dir() / "wheels"
        wheels = sorted(folder.glob(f"vllm-{version}-*.whl"))
        if not wheels:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "-q",
                    "-d",
                    str(folder),
                    f"vllm=={version}",
                ],
                check=True,
                timeout=900,
            )
            wheels = sorted(folder.glob(f"vllm-{version}-*.whl"))
    assert wheels, f"no wheel for vllm=={version}"
    archive = zipfile.ZipFile(wheels[0])
    return lambda p: archive.read(p).decode()


@pytest.mark.slow
@pytest.mark.parametrize("version", WHEEL_RELEASES)
def test_gpu_release_has_the_hooked_v2_names(version):
    assert check_sources(_wheel_reader(version)) == []


def test_the_checks_can_fail():
    """A source tree without the hook points is reported, name by name."""
    problems = check_sources(lambda p: "x = 1\n")
    assert len(problems) == len(FUNCTIONS) + len(CALLS) + len(TEXTS)
