"""MoI's cost against standard decoding, measured side by side in one process.

For each backend and batch size: one engine, the same prompts, rounds of standard decoding and
MoI interleaved (A B A B ...), a warm-up pair excluded, every request generating exactly
``max_tokens`` tokens. Reports medians and the median per-pair ratio MoI / standard of decode
tokens per second, and time per output token. Ratios are measured, never asserted.

    mixinputs bench --quick                 # < 3 minutes on a 2-core CPU
    mixinputs bench --json bench.json       # batch 1, 8, 64; output lengths up to 2048
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from mixinputs.config import MoIConfig

PROMPT = "Write a long story about a lighthouse keeper and a storm. Chapter 1:"


@dataclass
class Result:
    backend: str
    batch_size: int
    max_tokens: int
    rounds: int
    standard_tok_s: float  # median over rounds
    moi_tok_s: float
    ratio: float  # median of per-pair ratios MoI / standard
    ratios: list[float] = field(default_factory=list)
    standard_tpot_ms: float = 0.0  # time per output token, per request
    moi_tpot_ms: float = 0.0


def interleaved(run: Callable[[bool], float], tokens: int, rounds: int, warmup: int = 1):
    """``run(moi) -> seconds`` for one round; A B pairs, alternating which goes first."""
    for _ in range(warmup):
        run(False)
        run(True)
    std, moi = [], []
    for r in range(rounds):
        order = (False, True) if r % 2 == 0 else (True, False)
        times = {m: run(m) for m in order}
        std.append(tokens / times[False])
        moi.append(tokens / times[True])
    return std, moi


def _result(backend, batch, max_tokens, std, moi) -> Result:
    ratios = [m / s for m, s in zip(moi, std, strict=True)]
    return Result(
        backend=backend,
        batch_size=batch,
        max_tokens=max_tokens,
        rounds=len(std),
        standard_tok_s=statistics.median(std),
        moi_tok_s=statistics.median(moi),
        ratio=statistics.median(ratios),
        ratios=ratios,
        standard_tpot_ms=1000 * batch / statistics.median(std),
        moi_tpot_ms=1000 * batch / statistics.median(moi),
    )


# -- vLLM ---------------------------------------------------------------------------------
def bench_vllm(
    model: str, batches: list[int], lengths: list[int], rounds: int, moi: MoIConfig, **engine
) -> tuple[list[Result], dict]:
    # The memory probe is a function sent to the worker (pickled): allowed for this process only.
    os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
    from vllm import LLM, SamplingParams

    from mixinputs.config import STANDARD_REQUEST

    llm = LLM(model=model, max_num_seqs=max(batches), disable_log_stats=True, seed=0, **engine)
    results = []
    for max_tokens in lengths:
        for batch in batches:
            prompts = [f"{PROMPT} (version {i})" for i in range(batch)]

            def run(use_moi: bool, prompts=prompts, max_tokens=max_tokens) -> float:
                extra = moi.to_request() if use_moi else dict(STANDARD_REQUEST)
                params = SamplingParams(
                    max_tokens=max_tokens, temperature=0.0, ignore_eos=True, extra_args=extra
                )
                start = time.perf_counter()
                llm.generate(prompts, params, use_tqdm=False)
                return time.perf_counter() - start

            std, mixed = interleaved(run, batch * max_tokens, rounds)
            results.append(_result("vllm", batch, max_tokens, std, mixed))
            _progress(results[-1])
    memory = llm.collective_rpc(_plugin_memory)[0]
    return results, memory


def _plugin_memory(worker) -> dict:
    state = worker.model_runner._mixinputs
    embed = state.embed
    return {
        "device_bytes": embed.extra_bytes(),
        "hidden": embed.slots.shape[1],
        "dtype": str(embed.slots.dtype).removeprefix("torch."),
        "slot_rows": state.num_slots,
        "replay_rows": state.replay_capacity,
        "replay_in_vllm_buffer": not embed.owns_replay,
        "host_history_bytes_per_token": state.width * 8,
    }


# -- transformers --------------------------------------------------------------------------------
def bench_hf(
    model: str, batches: list[int], max_tokens: int, rounds: int, moi: MoIConfig
) -> list[Result]:
    import torch
    from transformers import AutoTokenizer

    from mixinputs.hf import enable_moi

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(model)
    tok.padding_side = "left"
    lm = _load_hf_model(model, torch.float32).to(device).eval()
    results = []
    for batch in batches:
        enc = tok(
            [f"{PROMPT} (version {i})" for i in range(batch)], return_tensors="pt", padding=True
        ).to(device)
        kw = {
            "max_new_tokens": max_tokens,
            "min_new_tokens": max_tokens,
            "do_sample": False,
            "pad_token_id": tok.eos_token_id,
        }

        def run(use_moi: bool, enc=enc, kw=kw) -> float:
            start = time.perf_counter()
            with torch.inference_mode():
                if use_moi:
                    with enable_moi(lm, beta=moi.beta, mode=moi.mode, top_k=moi.top_k):
                        lm.generate(**enc, **kw)
                else:
                    lm.generate(**enc, **kw)
            if device == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - start

        std, mixed = interleaved(run, batch * max_tokens, rounds)
        results.append(_result("hf", batch, max_tokens, std, mixed))
        _progress(results[-1])
    return results


def _load_hf_model(path: str, dtype):
    """The checkpoint at ``path``; a folder with only a config gets random weights (throughput
    does not depend on the weights, and every request generates exactly max_tokens)."""
    from pathlib import Path

    from transformers import AutoConfig, AutoModelForCausalLM

    folder = Path(path)
    if folder.is_dir() and not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        print(f"  {path} has no weights: random weights from its config")
        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=dtype)
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)


def _progress(r: Result) -> None:
    print(
        f"  {r.backend:5s} batch {r.batch_size:3d} x {r.max_tokens:5d} tokens: standard "
        f"{r.standard_tok_s:8.1f} tok/s, MoI {r.moi_tok_s:8.1f} tok/s, ratio {r.ratio:.3f} "
        f"(pairs: {', '.join(f'{x:.3f}' for x in r.ratios)})",
        flush=True,
    )


def run_bench(
    backends: list[str],
    model: str | None,
    quick: bool,
    batches: list[int] | None,
    lengths: list[int] | None,
    rounds: int | None,
    beta: float,
    json_path: str | None,
) -> dict:
    """Run the benchmark; print a summary line; optionally write one JSON object."""
    import torch

    if model is None:
        from mixinputs.embedded_model import embedded_model_path

        model = str(embedded_model_path())
    on_gpu = torch.cuda.is_available()
    batches = batches or ([1, 8, 64] if quick or not on_gpu else [1, 8, 64, 256])
    lengths = lengths or ([32] if quick else [128, 2048])
    rounds = rounds or (3 if quick else 5)
    moi = MoIConfig(beta=beta)
    results: list[Result] = []
    memory = None
    started = time.perf_counter()
    if "vllm" in backends:
        engine = {
            "enforce_eager": not on_gpu,
            "gpu_memory_utilization": 0.9 if on_gpu else 0.3,
            "max_model_len": max(lengths) + 128,
        }
        vllm_results, memory = bench_vllm(model, batches, lengths, rounds, moi, **engine)
        results += vllm_results
    if "hf" in backends:
        results += bench_hf(model, [b for b in batches if b <= 8], min(lengths), rounds, moi)
    report = {
        "results": [asdict(r) for r in results],
        "plugin_memory": memory,
        "meta": {
            "model": model,
            "beta": beta,
            "quick": quick,
            "seconds": time.perf_counter() - started,
            "torch": torch.__version__,
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "gpu": torch.cuda.get_device_name() if on_gpu else None,
            "vllm": _vllm_version(),
        },
    }
    summary = "; ".join(
        f"{r.backend} b={r.batch_size} n={r.max_tokens}: {r.ratio:.3f}" for r in results
    )
    extra = f" MiB plugin memory {memory['device_bytes'] / 2**20:.1f}" if memory else ""
    print(f"MoI/standard decode throughput ratio (median of pairs): {summary};{extra}")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(report, f, indent=1)
    return report


def _vllm_version() -> str | None:
    try:
        import vllm

        return vllm.__version__
    except ImportError:
        return None
