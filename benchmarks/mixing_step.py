"""Micro-benchmark of the MoI mixing step alone: logits [B, V] + sampled ids -> mixtures [B, D].

Times the whole step (top-K over the vocabulary, weights, gather and weighted sum) and, for
comparison, the plain embedding lookup it replaces:

- "MoI": today's PyTorch step (``mixinputs.mixing``, about 25 small kernels on a GPU);
- "fused": the Triton step (``mixinputs.fused_step``, 3 kernels), GPU only: it has no CPU
  backend (on CPU the engines run the PyTorch step, whose table this prints there).

On a GPU both are also captured in a CUDA graph (fixed shapes, no host syncs) and replayed, the
fused step's kernel launches are counted with the profiler, and the "floor" is the bytes the step
must move (the logits once, K+1 embedding rows and the mixture per row) at the GPU's peak memory
bandwidth (``--peak-tbps``, 3.35 for an H100 SXM). Also checks the results against each other.

    python benchmarks/mixing_step.py                 # CPU
    python benchmarks/mixing_step.py --device cuda   # GPU, eager and CUDA graph
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

from mixinputs.mixing import candidates_from_logits, mix_candidates, mixture_weights


def step(logits, sampled, embedding, beta, top_k):
    cands = candidates_from_logits(logits, sampled, top_k)
    weights = mixture_weights(cands.scores, beta)
    return mix_candidates(cands.ids, weights, embedding)


def timeit(fn, device, repeats, inner, row=None, key=None):
    """Median µs per call over ``repeats`` rounds of ``inner`` calls; with ``row``, also records
    the fastest round as ``key_min_us`` (on a shared CPU, the median includes other work)."""
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) / inner * 1e6)
    if row is not None:
        row[f"{key}_min_us"] = min(times)
    return statistics.median(times)


def capture(fn):
    """``fn`` captured in a CUDA graph after a warm-up on a side stream: (graph, its output)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


def count_launches(fn):
    """GPU kernels one call of ``fn`` launches (from the profiler's trace)."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)


def bench(batch, vocab, hidden, top_k, device, dtype, repeats, peak_tbps):
    gen = torch.Generator(device="cpu").manual_seed(0)
    logits = (torch.randn(batch, vocab, generator=gen) * 3).to(device, dtype)
    embedding = (torch.randn(vocab, hidden, generator=gen) * 0.02).to(device, dtype)
    sampled = torch.randint(0, vocab, (batch,), generator=gen).to(device)
    beta = torch.ones(batch, device=device)
    inner = 20 if device.type == "cuda" else 3
    row = {
        "batch": batch,
        "vocab": vocab,
        "hidden": hidden,
        "top_k": top_k,
        "device": device.type,
        "dtype": str(dtype).removeprefix("torch."),
    }
    row["plain_lookup_us"] = timeit(
        lambda: embedding[sampled], device, repeats, inner, row, "plain_lookup"
    )

    def moi():
        return step(logits, sampled, embedding, beta, top_k)

    row["moi_eager_us"] = timeit(moi, device, repeats, inner, row, "moi_eager")
    if device.type != "cuda":
        return row
    graph, static_out = capture(lambda: step(logits, sampled, embedding, beta, top_k))
    row["moi_cuda_graph_us"] = timeit(graph.replay, device, repeats, inner)
    eager = step(logits, sampled, embedding, beta, top_k)
    graph.replay()
    row["graph_equals_eager"] = bool(torch.equal(static_out, eager))
    cpu = step(logits.cpu(), sampled.cpu(), embedding.cpu(), beta.cpu(), top_k)
    row["max_abs_diff_vs_cpu"] = float((eager.float().cpu() - cpu.float()).abs().max())

    # The fused step: same inputs, every row at the engine's K, moi mixture.
    from mixinputs.fused_step import fused_candidates, fused_mix_step

    row_k = torch.full((batch,), top_k, device=device)
    direct = torch.zeros(batch, dtype=torch.bool, device=device)

    def fused():
        return fused_mix_step(logits, sampled, row_k, top_k, beta, direct, embedding)[2]

    row["fused_eager_us"] = timeit(fused, device, repeats, inner)
    graph, static_fused = capture(fused)
    row["fused_cuda_graph_us"] = timeit(graph.replay, device, repeats, inner)
    fused_eager = fused()
    graph.replay()
    row["fused_graph_equals_eager"] = bool(torch.equal(static_fused, fused_eager))
    row["fused_launches"] = count_launches(fused)
    # Same candidate scores as the PyTorch step; mixtures equal up to bf16 rounding and the
    # order of equal logits (torch.topk and the kernel may pick different tied tokens).
    ref = candidates_from_logits(logits, sampled, top_k)
    row["fused_scores_equal_torch"] = bool(
        torch.equal(fused_candidates(logits, sampled, row_k, top_k).scores, ref.scores)
    )
    row["fused_max_abs_diff_vs_torch"] = float((fused_eager.float() - eager.float()).abs().max())
    elt = torch.finfo(dtype).bits // 8
    moved = batch * vocab * elt + batch * (top_k + 2) * hidden * elt  # logits, rows, mixture
    row["bytes_moved"] = moved
    row["floor_us"] = moved / (peak_tbps * 1e12) * 1e6
    return row


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor()
    return next(
        (line.split(":", 1)[1].strip() for line in out.splitlines() if "Model name" in line),
        platform.processor(),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--batches", default="1,8,64,256")
    parser.add_argument(
        "--shapes",
        default="49152x576,152064x5120",
        help="VOCABxHIDDEN pairs: SmolLM2-135M, and a Qwen2.5/QwQ-32B-sized one",
    )
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--peak-tbps", type=float, default=3.35, help="GPU memory bandwidth")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: torch's); 1 on a busy shared machine, where a "
        "multi-threaded op waits for threads the scheduler does not run",
    )
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    load_before = os.getloadavg()[0]  # a shared machine's other work shows up in CPU timings
    rows = []
    for shape in args.shapes.split(","):
        vocab, hidden = (int(x) for x in shape.split("x"))
        for batch in (int(b) for b in args.batches.split(",")):
            row = bench(
                batch, vocab, hidden, args.top_k, device, dtype, args.repeats, args.peak_tbps
            )
            rows.append(row)
            print(json.dumps(row), flush=True)
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    meta = {
        "command": " ".join([*sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
        "torch": torch.__version__,
        "triton": triton_version,
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        "load_average_1min": [load_before, os.getloadavg()[0]],  # before, after
        "peak_tbps": args.peak_tbps if device.type == "cuda" else None,
        "fused": "timed" if device.type == "cuda" else "GPU only: no CPU backend for the kernels",
    }
    print(json.dumps({"meta": meta}))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": rows}, f, indent=1)


if __name__ == "__main__":
    main()
