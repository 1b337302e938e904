"""Micro-benchmark of the MoI mixing step alone: logits [B, V] + sampled ids -> mixtures [B, D].

Times the whole step (top-K over the vocabulary, weights, gather and weighted sum) and, for
comparison, the plain embedding lookup it replaces. On a GPU the step is also captured in a CUDA
graph (fixed shapes, no host syncs) and replayed. Also checks the GPU result against the CPU one.

    python benchmarks/mixing_step.py                 # CPU
    python benchmarks/mixing_step.py --device cuda   # GPU, eager and CUDA graph
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from mixinputs.mixing import candidates_from_logits, mix_candidates, mixture_weights


def step(logits, sampled, embedding, beta, top_k):
    cands = candidates_from_logits(logits, sampled, top_k)
    weights = mixture_weights(cands.scores, beta)
    return mix_candidates(cands.ids, weights, embedding)


def timeit(fn, device, repeats, inner):
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
    return statistics.median(times)


def bench(batch, vocab, hidden, top_k, device, dtype, repeats):
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
    row["plain_lookup_us"] = timeit(lambda: embedding[sampled], device, repeats, inner)
    row["moi_eager_us"] = timeit(
        lambda: step(logits, sampled, embedding, beta, top_k), device, repeats, inner
    )
    if device.type == "cuda":
        static_out = step(logits, sampled, embedding, beta, top_k)  # warm-up on the side stream
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                step(logits, sampled, embedding, beta, top_k)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = step(logits, sampled, embedding, beta, top_k)
        row["moi_cuda_graph_us"] = timeit(graph.replay, device, repeats, inner)
        eager = step(logits, sampled, embedding, beta, top_k)
        graph.replay()
        row["graph_equals_eager"] = bool(torch.equal(static_out, eager))
        cpu = step(logits.cpu(), sampled.cpu(), embedding.cpu(), beta.cpu(), top_k)
        row["max_abs_diff_vs_cpu"] = float((eager.float().cpu() - cpu.float()).abs().max())
    return row


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
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    rows = []
    for shape in args.shapes.split(","):
        vocab, hidden = (int(x) for x in shape.split("x"))
        for batch in (int(b) for b in args.batches.split(",")):
            row = bench(batch, vocab, hidden, args.top_k, device, dtype, args.repeats)
            rows.append(row)
            print(json.dumps(row), flush=True)
    meta = {
        "torch": torch.__version__,
        "machine": platform.machine(),
        "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps({"meta": meta}))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": rows}, f, indent=1)


if __name__ == "__main__":
    main()
