"""MoI's cost (and each other method's) against vanilla vLLM and against standard decoding,
measured side by side in one run.

vLLM: two engines, each in its own process, alive for the whole run:
- **vanilla**: vLLM with no plugin loaded (``VLLM_PLUGINS`` names no plugin: what a user without
  mixinputs runs);
- **plugin**: vLLM with mixinputs loaded, serving **standard** requests (``mixinputs_mode: off``)
  and one arm per mixing method (``--method``, default ``moi``; each sends its
  ``MoIConfig.to_request()`` keys).
For each output length and batch size: the same prompts, a short uncounted warm-up of every arm,
then rounds of all arms interleaved (the order rotates every round), every request generating
exactly ``max_tokens`` tokens, each run timed on its decode steps. Reports median decode tokens
per second per arm and, per method, the median of the per-round ratios method/vanilla,
standard/vanilla and method/standard, each with its per-round range and 95 % bootstrap interval,
and "inconclusive" where that interval contains 1. Ratios are measured, never asserted. A
``@thinking`` method gets a think-end token id the model never emits (:func:`bench_methods`), so
it mixes for the whole run.

    mixinputs bench --quick                 # vLLM, batch 8 and 64, 8 rounds of 16 tokens
    mixinputs bench --quick --method moi,soft,soft+gumbel,moi@thinking   # batch 8 only
    mixinputs bench --json bench.json       # vLLM and transformers; batch 1, 8, 64 (GPU: 256)
    mixinputs bench --model benchmarks/gpu/configs/qwq-32b --backend vllm   # dummy weights
    mixinputs bench --report bench.json     # print a JSON file again (any release's)

A model folder with a config but no weights runs with ``load_format="dummy"``; one without a
tokenizer runs with ``skip_tokenizer_init=True`` and token-id prompts. On CPU both engines size
their KV cache in bytes (``engine_args``), so neither depends on how much memory is free.

The modules: ``child_engine`` (a vLLM engine in a child process and its one-JSON-line protocol,
shared with the tests), ``engine_process`` (the bench's engine on it; ``python -m
mixinputs.bench`` runs the child), ``engine_args``, ``arms``, ``rounds`` (the schedule),
``spread`` (intervals and verdicts), ``result``, ``run`` (vLLM), ``hf_run`` (transformers),
``report``. Importing this package needs neither vLLM nor transformers.
"""

from mixinputs.bench.arms import bench_methods, never_emitted_token_id
from mixinputs.bench.engine_args import cpu_kv_cache_bytes, kv_cache_args, model_files
from mixinputs.bench.engine_process import EngineProcess, prompts, serve_engine
from mixinputs.bench.hf_run import bench_hf
from mixinputs.bench.report import load_report, print_files, result_lines
from mixinputs.bench.result import Result
from mixinputs.bench.rounds import interleaved, interleaved_arms
from mixinputs.bench.run import bench_vllm, cpu_model, quick_shapes, run_bench
from mixinputs.bench.spread import Spread, median_interval, spread_of

__all__ = [
    "EngineProcess",
    "Result",
    "Spread",
    "bench_hf",
    "bench_methods",
    "bench_vllm",
    "cpu_kv_cache_bytes",
    "cpu_model",
    "interleaved",
    "interleaved_arms",
    "kv_cache_args",
    "load_report",
    "median_interval",
    "model_files",
    "never_emitted_token_id",
    "print_files",
    "prompts",
    "quick_shapes",
    "result_lines",
    "run_bench",
    "serve_engine",
    "spread_of",
]
