"""The main job on the embedded model: standard decoding and MoI side by side on a few prompts.

Quiet by default: everything the engine prints (vLLM's logs, its engine and worker processes,
progress bars, warnings) goes to a log file (``backends.local.engine_output``, which
``mixinputs eval`` uses too), and only the result reaches the terminal. The log is removed when
the demo succeeds and kept, with its path printed, when it fails; ``verbose=True``
(``mixinputs demo --verbose``) lets it all through instead.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from mixinputs.backends import SamplingSettings, load_backend
from mixinputs.backends.local import engine_output
from mixinputs.config import MoIConfig
from mixinputs.engine_dtype import describe

DEMO_PROMPTS = (
    "What is 12 + 30? Think step by step, then give the answer.",
    "Write one sentence about the ocean.",
    "List three prime numbers greater than 10.",
)


class DemoFailed(RuntimeError):
    """The engine failed; ``log`` is the file that holds what it printed (None when verbose)."""

    def __init__(self, cause: BaseException, log: Path | None):
        super().__init__(str(cause))
        self.cause = cause
        self.log = log


def run_demo(
    backend: str = "vllm",
    model: str | None = None,
    beta: float = 1.0,
    max_tokens: int = 64,
    width: int = 100,
    dtype: str | None = None,
    verbose: bool = True,
) -> list[tuple[str, str, str]]:
    """Generate each prompt greedily with standard decoding and with MoI; print both.

    ``dtype=None`` picks float32 on a CPU without native bf16 (much faster there), else the
    checkpoint's dtype; the last line printed says which. ``verbose=False`` keeps the engine's
    own output off the terminal (see :func:`engine_output`); a failure then raises
    :class:`DemoFailed` naming the log.

    >>> run_demo("hf", max_tokens=8)  # doctest: +SKIP
    """
    from mixinputs.environment_checks import check_torch_companions

    check_torch_companions()  # before anything is hidden: the trap is one line naming the fix
    engine_name = "vLLM" if backend == "vllm" else "transformers"
    if model is None:
        from mixinputs.embedded_model import CHECKPOINT_NAME, is_materialized

        first = "" if is_materialized() else "making the embedded model once (about a minute), "
        name = CHECKPOINT_NAME
    else:
        first, name = "", Path(model).name
    print(
        f"{first}starting {engine_name} on {name} "
        f"({'about 30 s on 2 CPU cores; ' if backend == 'vllm' else ''}"
        f"{'its log follows' if verbose else '--verbose shows its log'}) ...",
        file=sys.stderr,
        flush=True,
    )
    with engine_output(verbose, "mixinputs-demo-") as out:
        try:
            if model is None:
                from mixinputs.embedded_model import embedded_model_path

                model = str(embedded_model_path())
            engine = load_backend(backend, model, dtype=dtype)
            prompts = [engine.chat_prompt(p) for p in DEMO_PROMPTS]
            settings = SamplingSettings(max_tokens=max_tokens, temperature=0.0)
            standard = engine.generate(prompts, settings)
            moi = engine.generate(prompts, settings.with_moi(MoIConfig(beta=beta)))
            close = getattr(engine, "close", None)
            if close is not None:  # the engine's processes end inside the block, quietly
                close()
        except Exception as e:
            if out.log is None:
                raise
            raise DemoFailed(e, out.log) from e
    rows = []
    print(f"Standard decoding vs MoI (β = {beta}), greedy, {max_tokens} tokens, {engine_name}:")
    for question, std, mix in zip(DEMO_PROMPTS, standard, moi, strict=True):
        print(f"\n## {question}")
        for label, completion in (("standard", std), (f"MoI β={beta}", mix)):
            body = textwrap.fill(" ".join(completion.text.split()), width=width - 4)
            print(f"-- {label} ({completion.num_tokens} tokens)\n{textwrap.indent(body, '    ')}")
        rows.append((question, std.text, mix.text))
    changed = sum(std != mix for _, std, mix in rows)
    print(
        f"\nMoI changed {changed} of {len(rows)} answers. backend={engine.name}, "
        f"model={engine.model}, {describe(engine.dtype, dtype)}"
    )
    return rows
