"""Every vLLM name the plugin wraps, calls or reads, checked in a vLLM source tree.

The plugin wraps few methods and copies none, but each is a promise about vLLM's source: a
method with these leading parameters, a call with these arguments, an attribute assigned under
this name, a configuration field the refusals read. ``check(read)`` tests each promise in a
source tree (``read(path)`` returns a file's text, or None when the file is not there) and
returns what broke, with file and line. Which promises apply follows what the tree has, never
its version number: Model Runner V1's only where ``vllm/v1/worker/gpu_model_runner.py`` exists
(0.26 to 0.33), ``compute_hash`` or ``compile_factors``, V2's ``dummy_sampler_run`` hook where
``ModelState`` has it (0.34+), and so on.

Used by the tests (the installed vLLM and the wheels of 0.26.0, 0.33.0, 0.34.0) and by
``python -m mixinputs.vllm_plugin.check_release <version>`` for any release.

>>> problems = check(lambda path: None)     # an empty tree breaks every promise
>>> problems[0].where, len(problems) > 20
('vllm/v1/engine/input_processor.py', True)
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass

Reader = Callable[[str], "str | None"]

V1_RUNNER = "vllm/v1/worker/gpu_model_runner.py"
V2_RUNNER = "vllm/v1/worker/gpu/model_runner.py"
V2_STATES = "vllm/v1/worker/gpu/model_states/__init__.py"
V2_INTERFACE = "vllm/v1/worker/gpu/model_states/interface.py"
V2_SAMPLER = "vllm/v1/worker/gpu/sample/sampler.py"
CONFIG = "vllm/config/vllm.py"
ASYNC_LLM = "vllm/v1/engine/async_llm.py"
LLM_ENGINE = "vllm/v1/engine/llm_engine.py"


@dataclass(frozen=True)
class Problem:
    """One broken promise: where (file, and line when the file has the place), and what."""

    where: str
    line: int | None
    message: str

    def __str__(self) -> str:
        place = self.where if self.line is None else f"{self.where}:{self.line}"
        return f"{place}: {self.message}"


# (file, class or None, function, the leading parameters the plugin passes or receives, why)
Function = tuple[str, "str | None", str, list[str], str]
# (file, the callee as source text, its positional arguments as source text, why)
Call = tuple[str, str, list[str], str]
# (file, text that must be in it, why)
Text = tuple[str, str, str]

ENGINE_FUNCTIONS: list[Function] = [
    ("vllm/v1/engine/input_processor.py", "InputProcessor", "process_inputs",
     ["self", "request_id", "prompt", "params"], "request_validation resolves MoI requests"),
    (ASYNC_LLM, "AsyncLLM", "generate", ["self", "prompt", "sampling_params"],
     "request_validation refuses before a stream starts"),
    (ASYNC_LLM, "AsyncLLM", "__init__", ["self"], "engine_status asks the workers"),
    (LLM_ENGINE, "LLMEngine", "__init__", ["self"], "engine_status asks the workers"),
    ("vllm/v1/core/kv_cache_utils.py", None, "generate_block_hash_extra_keys",
     ["request", "start_token_idx", "end_token_idx", "start_mm_idx"], "prefix_cache"),
    ("vllm/v1/worker/worker_base.py", "WorkerWrapperBase", "__getattr__", ["self", "attr"],
     "status: mixinputs_status is added to this class"),
    ("vllm/v1/serial_utils.py", None, "run_method", ["obj", "method", "args", "kwargs"],
     "collective_rpc calls mixinputs_status by name"),
    ("vllm/entrypoints/openai/completion/protocol.py", "CompletionRequest", "to_sampling_params",
     ["self"], "openai_request: top-level mixinputs_* keys are a 400"),
    ("vllm/entrypoints/openai/chat_completion/protocol.py", "ChatCompletionRequest",
     "to_sampling_params", ["self"], "openai_request: top-level mixinputs_* keys are a 400"),
]  # fmt: skip
ENGINE_TEXTS: list[Text] = [
    (ASYNC_LLM, "self.input_processor =", "the front end's request validation holder"),
    (ASYNC_LLM, "self.engine_core =", "engine_status asks the workers through it"),
    (LLM_ENGINE, "self.input_processor =", "the front end's request validation holder"),
    (LLM_ENGINE, "self.engine_core =", "engine_status asks the workers through it"),
    ("vllm/v1/engine/core_client.py", "async def collective_rpc_async(", "engine_status"),
    ("vllm/v1/serial_utils.py", "func = getattr(obj, method)", "methods called by name"),
    ("vllm/exceptions.py", "class VLLMValidationError", "MoI request errors are HTTP 400"),
    ("vllm/model_executor/layers/vocab_parallel_embedding.py", "class ParallelLMHead(",
     "find_input_embedding"),
    ("vllm/model_executor/layers/vocab_parallel_embedding.py", "class VocabParallelEmbedding(",
     "find_input_embedding"),
    ("vllm/v1/request.py", "self.num_prompt_tokens =", "prefix_cache"),
    # What the refusals and runs_eagerly read (attach.py).
    (CONFIG, "speculative_config:", "refusal: speculative decoding"),
    ("vllm/config/parallel.py", "pipeline_parallel_size:", "refusal: pipeline parallel"),
    ("vllm/config/parallel.py", "tensor_parallel_size:", "refusal: tensor parallel"),
    ("vllm/config/parallel.py", "prefill_context_parallel_size:", "refusal: context parallel"),
    ("vllm/config/parallel.py", "decode_context_parallel_size:", "refusal: context parallel"),
    ("vllm/config/model.py", "enable_prompt_embeds:", "refusal: prompt embeddings"),
    ("vllm/config/model.py", "self.runner_type =", "refusal: not a generative model"),
    ("vllm/config/model.py", "enforce_eager:", "runs_eagerly"),
    ("vllm/config/compilation.py", "    mode: CompilationMode", "runs_eagerly"),
    ("vllm/config/compilation.py", "cudagraph_mode: CUDAGraphMode", "runs_eagerly"),
    ("vllm/config/compilation.py", "class CUDAGraphMode(enum.Enum):", "runs_eagerly"),
    ("vllm/platforms/interface.py", "def use_all_gather(", "refusal: tensor parallel"),
]  # fmt: skip
# Texts that must be there when a trigger text is: (trigger file, trigger, file, text, why).
CONDITIONAL_TEXTS: list[tuple[str, str, str, str, str]] = [
    ("vllm/v1/worker/gpu/sample/watermark.py", "", CONFIG, "watermark_config:",
     "refusal: watermarking (V2)"),
    (V2_RUNNER, "batch_shard", "vllm/config/parallel.py", "enable_batch_sharded_sampling:",
     "refusal: batch-sharded sampling (V2)"),
    ("vllm/v1/worker/cpu/standalone_model_runner.py", "", "vllm/platforms/interface.py",
     "def uses_standalone_cpu_model_runner(", "refusal: the standalone CPU runner"),
]  # fmt: skip

# Model Runner V1 (patches/model_runner.py), where the tree has it.
V1_FUNCTIONS: list[Function] = [
    (V1_RUNNER, "GPUModelRunner", "load_model", ["self"], "attach MoI"),
    (V1_RUNNER, "GPUModelRunner", "_update_states", ["self", "scheduler_output"], "requests"),
    (V1_RUNNER, "GPUModelRunner", "_prepare_inputs",
     ["self", "scheduler_output", "num_scheduled_tokens"], "plan"),
    (V1_RUNNER, "GPUModelRunner", "_sample", ["self", "logits", "spec_decode_metadata"], "mix"),
    (V1_RUNNER, "GPUModelRunner", "_dummy_run", ["self"], "dummy batches feed nothing"),
    (V1_RUNNER, "GPUModelRunner", "_dummy_sampler_run", ["self", "hidden_states"],
     "memory profile of MoI's worst step"),
    ("vllm/v1/worker/cpu_model_runner.py", "CPUModelRunner", "load_model", ["self"],
     "attach MoI (the CPU runner overrides load_model)"),
    ("vllm/v1/sample/sampler.py", "Sampler", "forward", ["self", "logits", "sampling_metadata"],
     "the profiling sampler passes both positionally"),
]  # fmt: skip
V1_TEXTS: list[Text] = [
    (V1_RUNNER, "self.max_num_reqs =", "slots"),
    (V1_RUNNER, "self.max_num_tokens =", "slots"),
    (V1_RUNNER, "self.inputs_embeds = self._make_buffer(", "replay rows in vLLM's buffer"),
    (V1_RUNNER, "self.supports_mm_inputs =", "replay rows in vLLM's buffer"),
    (V1_RUNNER, "self.requests: dict", "requests' sampling params"),
    (V1_RUNNER, "def get_model(", "attach"),
    (V1_RUNNER, "self.sampler(", "the profiling sampler replaces it for one call"),
    ("vllm/v1/worker/gpu_input_batch.py", "self.num_computed_tokens_cpu =", "plan"),
    ("vllm/v1/worker/gpu_input_batch.py", "self.num_prompt_tokens =", "plan"),
    ("vllm/v1/worker/gpu_input_batch.py", "self.num_tokens_no_spec =", "plan"),
    ("vllm/v1/worker/gpu_input_batch.py", "def req_ids(", "plan"),
    ("vllm/v1/sample/sampler.py", "self.topk_topp_sampler =", "the sampling prior"),
    ("vllm/v1/core/sched/output.py", "scheduled_new_reqs:", "requests"),
    ("vllm/v1/core/sched/output.py", "finished_req_ids:", "requests"),
    ("vllm/v1/core/sched/output.py", "num_scheduled_tokens:", "requests"),
    (CONFIG, "def use_v2_model_runner(", "uses_v2_runner: which runner vLLM picks"),
]

# Model Runner V2 (patches/model_runner_v2.py, v2_model_state.py, v2_state.py).
V2_FUNCTIONS: list[Function] = [
    (V2_STATES, None, "init_model_state", ["vllm_config", "model", "encoder_cache", "device"],
     "wrap_model_state"),
    (V2_RUNNER, "GPUModelRunner", "finish_requests", ["self", "scheduler_output"], "preemption"),
    (V2_RUNNER, "GPUModelRunner", "_dummy_sampler_run", ["self", "hidden_states"],
     "memory profile of MoI's worst step"),
    (V2_INTERFACE, "ModelState", "add_request", ["self", "req_index", "new_req_data"], "slots"),
    (V2_INTERFACE, "ModelState", "remove_request", ["self", "req_id"], "slots"),
    (V2_INTERFACE, "ModelState", "prepare_inputs", ["self", "input_batch", "req_states"], "plan"),
    (V2_INTERFACE, "ModelState", "prepare_dummy_inputs", ["self", "num_reqs", "num_tokens"],
     "graph capture feeds nothing"),
    (V2_INTERFACE, "ModelState", "custom_sampler", ["self", "sampler"], "MoISampler"),
    (V2_SAMPLER, "Sampler", "__call__", ["self", "logits", "input_batch"], "MoISampler"),
    (V2_SAMPLER, "Sampler", "apply_sampling_params", ["self", "logits"], "the sampling prior"),
]  # fmt: skip
V2_CALLS: list[Call] = [
    (V2_RUNNER, "init_model_state",
     ["self.vllm_config", "self.model", "self.encoder_cache", "self.device"], "wrap_model_state"),
    (V2_RUNNER, "self.model_state.custom_sampler", ["self.sampler"], "MoISampler"),
    (V2_RUNNER, "self.model_state.add_request", ["req_index", "new_req_data"], "slots"),
    (V2_RUNNER, "self.model_state.remove_request", ["req_id"], "slots"),
    (V2_RUNNER, "self.model_state.prepare_inputs", ["input_batch", "self.req_states"], "plan"),
    (V2_RUNNER, "self.sampler", ["logits", "input_batch"], "MoISampler"),
    (V2_RUNNER, "self._remove_request", ["req_id"], "preemption"),
]  # fmt: skip
V2_TEXTS: list[Text] = [
    (V2_RUNNER, "from vllm.v1.worker.gpu.model_states import init_model_state",
     "init_model_state is re-bound in the runner's module"),
    (V2_RUNNER, "class GPUModelRunner", "finish_requests"),
    (V2_RUNNER, "preempted_req_ids = scheduler_output.preempted_req_ids", "preemption"),
    (V2_SAMPLER, "skip_top_k_top_p=True", "the sampling prior"),
    (V2_SAMPLER, "sampled_token_ids=sampled.view(-1, 1)", "forced tokens"),
    ("vllm/v1/worker/gpu/sample/output.py", "sampled_token_ids: torch.Tensor", "forced tokens"),
    ("vllm/v1/worker/gpu/states.py", "self.req_id_to_index: dict[str, int] = {}", "plan"),
    ("vllm/v1/worker/gpu/states.py", "self.prompt_len = UvaBackedTensor(", "plan"),
    ("vllm/v1/worker/gpu/buffer_utils.py", "self.np = self.cpu.numpy()", "plan"),
    ("vllm/v1/worker/gpu/input_batch.py", "req_ids: list[str]", "plan"),
    ("vllm/v1/worker/gpu/input_batch.py", "num_reqs: int", "plan"),
    ("vllm/v1/worker/gpu/input_batch.py", "idx_mapping_np: np.ndarray", "plan"),
    ("vllm/v1/worker/gpu/input_batch.py", "num_scheduled_tokens: np.ndarray", "plan"),
    ("vllm/v1/worker/gpu/input_batch.py", "query_start_loc_np: np.ndarray", "plan"),
    ("vllm/v1/worker/gpu/input_batch.py", "num_computed_tokens_np: np.ndarray", "plan"),
    ("vllm/v1/worker/gpu/input_batch.py", "prefill_len_np: np.ndarray", "plan"),
    ("vllm/v1/worker/gpu/input_batch.py", "idx_mapping_np = np.arange(num_reqs",
     "dummy batches are told apart"),
    ("vllm/v1/worker/gpu/model_states/default.py", "class DefaultModelState(ModelState)",
     "the state MoI wraps for plain models"),
    ("vllm/v1/worker/cpu/model_runner.py", "class CPUModelRunner(GPUModelRunner)",
     "the CPU V2 runner inherits the hooks"),
    ("vllm/v1/core/sched/output.py", "preempted_req_ids: set[str] | None", "preemption"),
    ("vllm/v1/core/sched/output.py", "sampling_params: SamplingParams | None", "slots"),
]  # fmt: skip
# V2's 0.34 hooks, checked where ModelState has them (MoIModelState names each on purpose).
V2_HOOKS_034: list[Function] = [
    (V2_INTERFACE, "ModelState", "dummy_sampler_run", ["self", "sampler", "hidden_states"],
     "memory profile of MoI's worst step"),
    (V2_INTERFACE, "ModelState", "compute_sample_logits", ["self", "hidden_states"],
     "passed through"),
    (V2_INTERFACE, "ModelState", "capture_inner_cudagraphs", ["self"], "passed through"),
]  # fmt: skip
V2_CALLS_034: list[Call] = [
    (V2_RUNNER, "self.model_state.dummy_sampler_run", ["self.sampler", "hidden_states"],
     "memory profile of MoI's worst step"),
]  # fmt: skip


class _Tree:
    def __init__(self, read: Reader):
        self.read = read
        self._texts: dict[str, str | None] = {}
        self._asts: dict[str, ast.Module | None] = {}

    def text(self, path: str) -> str | None:
        if path not in self._texts:
            try:
                self._texts[path] = self.read(path)
            except (OSError, KeyError):
                self._texts[path] = None
        return self._texts[path]

    def ast(self, path: str) -> ast.Module | None:
        if path not in self._asts:
            text = self.text(path)
            self._asts[path] = None if text is None else ast.parse(text)
        return self._asts[path]

    def has(self, path: str) -> bool:
        return self.text(path) is not None


def _check_function(tree: _Tree, spec: Function) -> Problem | None:
    path, cls, name, params, why = spec
    module = tree.ast(path)
    if module is None:
        return Problem(path, None, f"file missing ({why})")
    scope, line = module.body, None
    if cls is not None:
        owners = [n for n in module.body if isinstance(n, ast.ClassDef) and n.name == cls]
        if not owners:
            return Problem(path, None, f"no class {cls} ({why})")
        scope, line = owners[0].body, owners[0].lineno
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef)
    found = [n for n in scope if isinstance(n, kinds) and n.name == name]
    label = f"{cls}.{name}" if cls else name
    if not found:
        return Problem(path, line, f"no {label} ({why})")
    names = [a.arg for a in found[0].args.args][: len(params)]
    if names != params:
        return Problem(
            path, found[0].lineno, f"{label}{tuple(names)}, the plugin expects {params} ({why})"
        )
    return None


def _check_call(tree: _Tree, spec: Call) -> Problem | None:
    path, callee, args, why = spec
    module = tree.ast(path)
    if module is None:
        return Problem(path, None, f"file missing ({why})")
    calls = [
        [ast.unparse(a) for a in n.args]
        for n in ast.walk(module)
        if isinstance(n, ast.Call) and ast.unparse(n.func) == callee
    ]
    if args in calls:
        return None
    seen = f" (found {calls[:3]})" if calls else ""
    return Problem(path, None, f"no call {callee}({', '.join(args)}){seen} ({why})")


def _check_text(tree: _Tree, spec: Text) -> Problem | None:
    path, text, why = spec
    source = tree.text(path)
    if source is None:
        return Problem(path, None, f"file missing ({why})")
    if text not in source:
        return Problem(path, None, f"`{text}` not found ({why})")
    return None


def _triggered(tree: _Tree, path: str, trigger: str) -> bool:
    text = tree.text(path)
    return text is not None and trigger in text


def applicable(read: Reader) -> dict[str, bool]:
    """Which groups of promises apply to a tree (what it ships)."""
    tree = _Tree(read)
    interface = tree.text(V2_INTERFACE) or ""
    config = tree.text(CONFIG) or ""
    return {
        "v1": tree.has(V1_RUNNER),
        "v2": tree.has(V2_RUNNER),
        "v2_034_hooks": "def dummy_sampler_run(" in interface,
        "compute_hash": "def compute_hash(" in config,
    }


def check(read: Reader) -> list[Problem]:
    """Every broken promise in the tree ``read`` gives (module docstring), or ``[]``."""
    tree = _Tree(read)
    groups = applicable(read)
    problems: list[Problem | None] = []
    problems += [_check_function(tree, f) for f in ENGINE_FUNCTIONS]
    problems += [_check_text(tree, t) for t in ENGINE_TEXTS]
    for trigger_path, trigger, path, text, why in CONDITIONAL_TEXTS:
        if _triggered(tree, trigger_path, trigger):
            problems.append(_check_text(tree, (path, text, why)))
    config_hash = (CONFIG, "VllmConfig", "compute_hash", ["self"], "compile_cache")
    if not groups["compute_hash"]:
        config_hash = (CONFIG, "VllmConfig", "compile_factors", ["self"], "compile_cache")
    problems.append(_check_function(tree, config_hash))
    if groups["v1"]:
        problems += [_check_function(tree, f) for f in V1_FUNCTIONS]
        problems += [_check_text(tree, t) for t in V1_TEXTS]
    if groups["v2"]:
        problems += [_check_function(tree, f) for f in V2_FUNCTIONS]
        problems += [_check_call(tree, c) for c in V2_CALLS]
        problems += [_check_text(tree, t) for t in V2_TEXTS]
        if groups["v2_034_hooks"]:
            problems += [_check_function(tree, f) for f in V2_HOOKS_034]
            problems += [_check_call(tree, c) for c in V2_CALLS_034]
    if not groups["v1"] and not groups["v2"]:
        problems.append(Problem(V2_RUNNER, None, "neither model runner is in this tree"))
    return [p for p in problems if p is not None]


def count(read: Reader) -> int:
    """How many promises apply to the tree (for the report)."""
    groups = applicable(read)
    tree = _Tree(read)
    n = len(ENGINE_FUNCTIONS) + len(ENGINE_TEXTS) + 1
    n += sum(1 for path, trigger, *_ in CONDITIONAL_TEXTS if _triggered(tree, path, trigger))
    if groups["v1"]:
        n += len(V1_FUNCTIONS) + len(V1_TEXTS)
    if groups["v2"]:
        n += len(V2_FUNCTIONS) + len(V2_CALLS) + len(V2_TEXTS)
        if groups["v2_034_hooks"]:
            n += len(V2_HOOKS_034) + len(V2_CALLS_034)
    return n
