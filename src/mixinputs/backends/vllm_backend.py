"""The vLLM backend: one engine, MoI per request through ``SamplingParams.extra_args``.

The plugin is loaded by vLLM itself (entry point); this module only builds requests.
``generate_stream`` puts every request of a run into the engine at once (up to ``window`` in
flight, topped up as they finish), whatever their settings: per-request MoI lets standard and
MoI samples of every beta and seed share each batch.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from mixinputs.backends import Completion, Request, SamplingSettings
from mixinputs.config import STANDARD_REQUEST
from mixinputs.engine_dtype import resolve_dtype

_RUNS = itertools.count()


class VLLMBackend:
    name = "vllm"

    def __init__(
        self,
        model: str,
        *,
        dtype: str | None = None,
        max_model_len: int = 4096,
        gpu_memory_utilization: float | None = None,
        kv_cache_memory_bytes: int | None = None,
        enforce_eager: bool | None = None,
        window: int = 4096,
        **engine_kwargs,
    ):
        from mixinputs.engine_memory import kv_cache_args
        from mixinputs.environment_checks import EnvironmentProblem, check_torch_companions

        check_torch_companions()  # a CUDA torchvision beside a CPU torch breaks vLLM's import
        import torch

        try:
            from vllm import LLM
        except ModuleNotFoundError as e:
            if e.name != "vllm":
                raise
            raise EnvironmentProblem(
                "the vllm backend needs vLLM: `pip install 'mixinputs[cpu]'` on a CPU, "
                "`pip install 'mixinputs[vllm]'` on a GPU"
            ) from None

        on_gpu = torch.cuda.is_available()
        self.model = model
        # None: float32 on a CPU without native bf16 (3-6x faster there), else the checkpoint's.
        self.dtype = resolve_dtype(dtype, "cuda" if on_gpu else "cpu")
        self.window = window
        if not on_gpu:
            # vLLM's CPU runner crashes ("CPU Generator does not use offset") when a seeded
            # request's prefill is split across steps, which a whole run submitted at once makes
            # likely: prefill each prompt in one step instead.
            engine_kwargs.setdefault("enable_chunked_prefill", False)
            engine_kwargs.setdefault("max_num_batched_tokens", max(max_model_len, 4096))
        self.llm = LLM(
            model=model,
            dtype=self.dtype,
            max_model_len=max_model_len,
            # On a CPU the KV cache in bytes (2 GiB unless asked), never a share of free memory.
            **kv_cache_args(on_gpu, kv_cache_memory_bytes, gpu_memory_utilization),
            enforce_eager=(not on_gpu) if enforce_eager is None else enforce_eager,
            disable_log_stats=True,
            **engine_kwargs,
        )
        self.tokenizer = self.llm.get_tokenizer()

    def close(self) -> None:
        """Stop the engine's processes now (they would otherwise stop at interpreter exit)."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()

    def chat_prompt(self, user_message: str) -> str:
        if getattr(self.tokenizer, "chat_template", None) is None:
            return user_message
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": user_message}], tokenize=False, add_generation_prompt=True
        )

    def sampling_params(self, settings: SamplingSettings):
        from vllm import SamplingParams

        extra = settings.moi.to_request() if settings.moi is not None else dict(STANDARD_REQUEST)
        return SamplingParams(
            max_tokens=settings.max_tokens,
            min_tokens=settings.min_tokens,
            temperature=settings.temperature,
            top_p=settings.top_p,
            top_k=settings.top_k if settings.top_k > 0 else -1,
            seed=settings.seed,
            extra_args=extra,
            **settings.extra,
        )

    def generate(self, prompts: list[str], settings: SamplingSettings) -> list[Completion]:
        outputs = self.llm.generate(prompts, self.sampling_params(settings), use_tqdm=False)
        return [Completion(o.outputs[0].text, len(o.outputs[0].token_ids)) for o in outputs]

    def generate_stream(self, requests: list[Request]) -> Iterator[tuple[int, Completion]]:
        """All requests in one engine, each yielded as it finishes. Closing the iterator early
        (an interrupted run) aborts what is still in flight."""
        engine = self.llm.llm_engine
        run = next(_RUNS)
        params: dict[SamplingSettings, object] = {}
        todo = iter(enumerate(requests))
        in_flight: dict[str, int] = {}
        renamed: dict[str, str] = {}  # an engine's own request id -> ours

        def submit(count: int) -> None:
            for index, (prompt, settings) in itertools.islice(todo, max(count, 0)):
                if settings not in params:
                    params[settings] = self.sampling_params(settings)
                request_id = f"mixinputs-eval-{run}-{index}"
                in_flight[request_id] = index
                returned = engine.add_request(request_id, prompt, params[settings])
                if isinstance(returned, str) and returned != request_id:
                    renamed[returned] = request_id

        try:
            submit(self.window)
            while in_flight:
                for output in engine.step():
                    if not output.finished:
                        continue
                    request_id = renamed.pop(output.request_id, output.request_id)
                    if request_id not in in_flight:
                        continue
                    first = output.outputs[0]
                    yield in_flight.pop(request_id), Completion(first.text, len(first.token_ids))
                submit(self.window - len(in_flight))
        finally:
            if in_flight:
                engine.abort_request(list(in_flight))
