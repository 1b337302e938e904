"""The transformers backend: ``model.generate`` on left-padded batches, MoI by ``mixinputs.hf``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from mixinputs.backends import Completion, Request, SamplingSettings, stream_by_settings
from mixinputs.engine_dtype import resolve_dtype


class HFBackend:
    name = "hf"

    def __init__(
        self,
        model: str,
        *,
        dtype: str | None = None,
        device: str | None = None,
        batch_size: int = 8,
    ):
        from mixinputs.environment_checks import import_transformers

        transformers = import_transformers()

        self.model = model
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        # None: float32 on a CPU without native bf16, else the checkpoint's dtype.
        self.dtype = resolve_dtype(dtype, "cpu" if self.device == "cpu" else "cuda")
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(model)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.lm = transformers.AutoModelForCausalLM.from_pretrained(
            model, dtype="auto" if self.dtype == "auto" else getattr(torch, self.dtype)
        )
        self.lm.to(self.device).eval()
        self.batch_size = batch_size

    def chat_prompt(self, user_message: str) -> str:
        if self.tokenizer.chat_template is None:
            return user_message
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": user_message}], tokenize=False, add_generation_prompt=True
        )

    def generate(self, prompts: list[str], settings: SamplingSettings) -> list[Completion]:
        from mixinputs.hf import enable_moi

        out: list[Completion] = []
        kwargs = {
            "max_new_tokens": settings.max_tokens,
            "min_new_tokens": settings.min_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if settings.temperature > 0:
            kwargs.update(
                do_sample=True,
                temperature=settings.temperature,
                top_p=settings.top_p,
                top_k=settings.top_k or None,
            )
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        moi = settings.moi
        # The whole config (soft thinking, region, Cold Stop, noise); the tokenizer resolves a
        # think-end token given as text.
        ctx = (
            enable_moi(self.lm, config=moi, tokenizer=self.tokenizer)
            if moi
            else contextlib.nullcontext()
        )
        with ctx, torch.inference_mode():
            for start in range(0, len(prompts), self.batch_size):
                chunk = prompts[start : start + self.batch_size]
                if settings.seed is not None:
                    torch.manual_seed(settings.seed + start)
                enc = self.tokenizer(
                    chunk, return_tensors="pt", padding=True, add_special_tokens=False
                ).to(self.device)
                ids = self.lm.generate(**enc, **kwargs)[:, enc.input_ids.shape[1] :]
                for row in ids:
                    keep = row[row != self.tokenizer.pad_token_id] if self._pad_is_eos() else row
                    out.append(
                        Completion(
                            self.tokenizer.decode(row, skip_special_tokens=True), int(keep.numel())
                        )
                    )
        return out

    def generate_stream(self, requests: list[Request]) -> Iterator[tuple[int, Completion]]:
        # transformers batches one generation config at a time: group the requests by settings.
        return stream_by_settings(self, requests, self.batch_size)

    def _pad_is_eos(self) -> bool:
        return self.tokenizer.pad_token_id == self.tokenizer.eos_token_id
