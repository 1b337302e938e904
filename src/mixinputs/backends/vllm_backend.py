"""The vLLM backend: one engine, MoI per request through ``SamplingParams.extra_args``.

The plugin is loaded by vLLM itself (entry point); this module only builds requests.
"""

from __future__ import annotations

from mixinputs.backends import Completion, SamplingSettings
from mixinputs.config import STANDARD_REQUEST


class VLLMBackend:
    name = "vllm"

    def __init__(
        self,
        model: str,
        *,
        max_model_len: int = 4096,
        gpu_memory_utilization: float | None = None,
        enforce_eager: bool | None = None,
        **engine_kwargs,
    ):
        import torch
        from vllm import LLM

        on_gpu = torch.cuda.is_available()
        self.model = model
        self.llm = LLM(
            model=model,
            max_model_len=max_model_len,
            # On a CPU build this is the share of RAM vLLM reserves; 0.3 fits a 24 GiB machine.
            gpu_memory_utilization=gpu_memory_utilization or (0.9 if on_gpu else 0.3),
            enforce_eager=(not on_gpu) if enforce_eager is None else enforce_eager,
            disable_log_stats=True,
            **engine_kwargs,
        )
        self.tokenizer = self.llm.get_tokenizer()

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
