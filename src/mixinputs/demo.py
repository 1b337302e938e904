"""The main job on the embedded model: standard decoding and MoI side by side on a few prompts."""

from __future__ import annotations

import textwrap

from mixinputs.backends import SamplingSettings, load_backend
from mixinputs.config import MoIConfig
from mixinputs.engine_dtype import describe

DEMO_PROMPTS = (
    "What is 12 + 30? Think step by step, then give the answer.",
    "Write one sentence about the ocean.",
    "List three prime numbers greater than 10.",
)


def run_demo(
    backend: str = "vllm",
    model: str | None = None,
    beta: float = 1.0,
    max_tokens: int = 64,
    width: int = 100,
    dtype: str | None = None,
) -> list[tuple[str, str, str]]:
    """Generate each prompt greedily with standard decoding and with MoI; print both.

    ``dtype=None`` picks float32 on a CPU without native bf16 (much faster there), else the
    checkpoint's dtype; the first line printed says which.

    >>> run_demo("hf", max_tokens=8)  # doctest: +SKIP
    """
    engine = load_backend(backend, model, dtype=dtype)
    prompts = [engine.chat_prompt(p) for p in DEMO_PROMPTS]
    settings = SamplingSettings(max_tokens=max_tokens, temperature=0.0)
    standard = engine.generate(prompts, settings)
    moi = engine.generate(prompts, settings.with_moi(MoIConfig(beta=beta)))
    rows = []
    print(
        f"# backend={engine.name} model={engine.model} greedy, max_tokens={max_tokens}, "
        f"MoI beta={beta}, {describe(engine.dtype, dtype)}"
    )
    for question, std, mix in zip(DEMO_PROMPTS, standard, moi, strict=True):
        print(f"\n## {question}")
        for label, completion in (("standard", std), (f"MoI β={beta}", mix)):
            body = textwrap.fill(" ".join(completion.text.split()), width=width - 4)
            print(f"-- {label} ({completion.num_tokens} tokens)\n{textwrap.indent(body, '    ')}")
        rows.append((question, std.text, mix.text))
    return rows
