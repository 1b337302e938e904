"""The transformers side of the bench: ``generate`` with and without ``enable_moi``, in this
process, rounds interleaved. Timed end to end (``generate`` has no per-step clock); there is no
vanilla arm, the standard arm is plain transformers."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from mixinputs.bench.engine_process import prompts
from mixinputs.bench.report import print_result
from mixinputs.bench.result import Result
from mixinputs.bench.rounds import interleaved
from mixinputs.config import MoIConfig

logger = logging.getLogger(__name__)


def bench_hf(
    model: str,
    batches: list[int],
    max_tokens: int,
    rounds: int,
    config: MoIConfig,
    method: str = "moi",
) -> list[Result]:
    """One result per batch size: standard ``generate`` against ``enable_moi(config)``.

    >>> bench_hf("path/to/model", [1, 8], 32, 5, MoIConfig(beta=1.0))  # doctest: +SKIP
    """
    import torch
    from transformers import AutoTokenizer

    from mixinputs.hf import enable_moi

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(model)
    tok.padding_side = "left"
    lm = load_hf_model(model, torch.float32).to(device).eval()
    results = []
    for batch in batches:
        enc = tok(prompts(batch, token_ids=False), return_tensors="pt", padding=True).to(device)
        kw = {
            "max_new_tokens": max_tokens,
            "min_new_tokens": max_tokens,
            "do_sample": False,
            "pad_token_id": tok.eos_token_id,
        }

        def run(mixing: bool, enc=enc, kw=kw) -> float:
            start = time.perf_counter()
            with torch.inference_mode():
                if mixing:
                    with enable_moi(lm, config=config, tokenizer=tok):
                        lm.generate(**enc, **kw)
                else:
                    lm.generate(**enc, **kw)
            if device == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - start

        standard, mixed = interleaved(run, batch * max_tokens, rounds, warmup=1)
        results.append(Result.from_rates("hf", batch, max_tokens, standard, mixed, None, method))
        print_result(results[-1])
    return results


def load_hf_model(path: str, dtype):
    """The checkpoint at ``path``; a folder with only a config gets random weights (throughput
    does not depend on the weights, and every request generates exactly max_tokens)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = Path(path)
    if folder.is_dir() and not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        logger.warning("%s has no weights: random weights from its config", path)
        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=dtype)
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
