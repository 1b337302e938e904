"""The bench run: start the engines, warm every arm up, time interleaved rounds, report.

vLLM: two engines, each in its own process (``engine_process``), up for the whole run:
**vanilla** (no plugin loaded) and **plugin**, which serves **standard** requests and one arm per
mixing method. For each shape (batch size, output length) every arm first runs once, short and
uncounted (the warm-up), then ``rounds`` rounds of all arms in rotating order (``rounds``); an arm
is timed on its decode steps only, so a ratio compares what the arms' decode steps cost.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import time
from collections.abc import Callable
from pathlib import Path

from mixinputs.bench.arms import bench_methods
from mixinputs.bench.engine_args import kv_cache_args, model_files
from mixinputs.bench.engine_process import EngineProcess
from mixinputs.bench.report import print_result, print_summary
from mixinputs.bench.result import Result
from mixinputs.bench.rounds import interleaved_arms
from mixinputs.config import STANDARD_REQUEST, MoIConfig

WARMUP_TOKENS = 4  # the warm-up: every arm once per shape, this long, not counted
QUICK_TOKENS = 16  # --quick: short rounds ...
QUICK_ROUNDS = 8  # ... and enough of them for an interval
DEFAULT_ROUNDS = 5
CLOCK = "decode: from the step in which every request has its first token to the last token"


def quick_shapes(n_methods: int) -> tuple[list[int], list[int], int]:
    """(batch sizes, output lengths, rounds) of ``--quick``: batch 8 and 64 for one method,
    batch 8 alone for several (each arm adds a run to every round).

    >>> quick_shapes(1), quick_shapes(5)
    (([8, 64], [16], 8), ([8], [16], 8))
    """
    return ([8, 64] if n_methods == 1 else [8]), [QUICK_TOKENS], QUICK_ROUNDS


def estimate_round_seconds(warmup: dict, batch: int, max_tokens: int) -> float:
    """One arm's time for a ``max_tokens`` run, scaled from its warm-up run's answer: the
    warm-up's fixed part (prefill, bookkeeping) plus its time per decode token times the tokens.

    >>> warm = {"seconds": 1.0, "decode_seconds": 0.3, "decode_tokens": 24}
    >>> round(estimate_round_seconds(warm, 8, 16), 3)   # 0.7 + 0.3 / 24 x 8 x 15
    2.2
    """
    per_token = warmup["decode_seconds"] / max(warmup["decode_tokens"], 1)
    fixed = warmup["seconds"] - warmup["decode_seconds"]
    return fixed + per_token * batch * (max_tokens - 1)


def decode_rate(answer: dict) -> float:
    """Decode tokens per second of one run (every request's tokens after its first)."""
    return answer["decode_tokens"] / answer["decode_seconds"]


def bench_vllm(
    model: str,
    batches: list[int],
    lengths: list[int],
    rounds: int,
    methods: dict[str, MoIConfig],
    vanilla: str = "interleaved",
    **engine,
) -> tuple[list[Result], dict | None, dict]:
    """(results, plugin memory, facts per engine); one result per shape and method.

    ``methods``: the mixing arms by name (``{"moi": MoIConfig(beta=1)}``, or several: each is an
    arm of the plugin engine, interleaved with the others).

    ``vanilla``: ``"interleaved"`` (both engines up together, all arms' rounds interleaved),
    ``"sequential"`` (the vanilla engine's rounds first, then the plugin engine's: for models two
    copies of which do not fit in memory) or ``"off"``.

    >>> bench_vllm("path/to/model", [8], [16], 8, {"moi": MoIConfig(beta=1.0)})  # doctest: +SKIP
    """
    if min(lengths) < 2:
        raise ValueError("--max-tokens must be at least 2: the first token comes from prefill")
    spec = {
        "model": model,
        "max_num_seqs": max(batches),
        "disable_log_stats": True,
        "seed": 0,
        **model_files(model),
        **engine,
    }
    base_env = {k: v for k, v in os.environ.items() if k != "MIXINPUTS_BETA"}
    shapes = [(b, n) for n in lengths for b in batches]
    requests = {name: config.to_request() for name, config in methods.items()}

    def start(name: str) -> EngineProcess:
        if name == "vanilla":  # a plugin name that is not ours: vLLM loads none
            return EngineProcess(name, spec, {**base_env, "VLLM_PLUGINS": "no-plugin-at-all"})
        return EngineProcess(name, spec, base_env)

    def arm_calls(procs: dict[str, EngineProcess]) -> dict:
        calls = {"standard": lambda b, n: procs["plugin"].run(b, n, STANDARD_REQUEST)}
        if "vanilla" in procs:
            calls["vanilla"] = lambda b, n: procs["vanilla"].run(b, n)
        for name, extra in requests.items():
            calls[name] = lambda b, n, x=extra: procs["plugin"].run(b, n, x)
        return calls

    mixing = list(methods)
    groups = {
        "interleaved": [(["plugin", "vanilla"], ["vanilla", "standard", *mixing])],
        "sequential": [(["vanilla"], ["vanilla"]), (["plugin"], ["standard", *mixing])],
        "off": [(["plugin"], ["standard", *mixing])],
    }[vanilla]
    rates: dict = {}
    facts: dict = {}
    memory = None
    every_arm = list(dict.fromkeys(arm for _, arms in groups for arm in arms))
    print(
        f"  plan: {len(shapes)} shape(s) x {rounds} rounds x {len(every_arm)} arms "
        f"({', '.join(every_arm)}); how long the rounds take is estimated after the warm-up",
        flush=True,
    )
    for names, arms in groups:
        starting = time.perf_counter()
        procs = {name: start(name) for name in names}  # started together
        try:
            for name, p in procs.items():
                facts[name] = f = p.wait()
                f["start_seconds"] = round(time.perf_counter() - starting, 1)
                print(
                    f"  {name} engine: runner {f['runner']}, dtype {f['dtype']}, "
                    f"up after {f['start_seconds']:.0f} s",
                    flush=True,
                )
            measured = [name for name in methods if name in arms]

            def show(b: int, n: int, measured=measured) -> None:
                for name in measured:
                    print_result(to_result(b, n, rates[(b, n)], name))

            measure(arm_calls(procs), arms, shapes, rounds, rates, after_shape=show)
            for name, p in procs.items():  # the vanilla engine must have no MoI state at all
                found = p.ask({"memory": True}).get("memory")
                facts[name]["plugin_state"] = found is not None
                memory = found if name == "plugin" else memory
        finally:
            for p in procs.values():
                p.close()
    results = [to_result(b, n, rates[(b, n)], m) for b, n in shapes for m in methods]
    return results, memory, facts


def measure(
    calls: dict[str, Callable[[int, int], dict]],
    arms: list[str],
    shapes: list[tuple[int, int]],
    rounds: int,
    rates: dict,
    after_shape: Callable[[int, int], None] | None = None,
) -> None:
    """Warm every arm up once per shape, print the estimate, then each shape's rounds; adds
    each arm's per-round decode tok/s to ``rates[(batch, max_tokens)]`` and calls
    ``after_shape(batch, max_tokens)`` as each shape is done.

    ``calls[arm](batch, max_tokens)`` runs one batch and returns the engine's answer.
    """
    print(f"  warm-up: every arm once per shape, {WARMUP_TOKENS} tokens", flush=True)
    warm = {(b, n): {arm: calls[arm](b, min(n, WARMUP_TOKENS)) for arm in arms} for b, n in shapes}
    estimate = sum(
        estimate_round_seconds(warm[(b, n)][arm], b, n) for b, n in shapes for arm in arms
    )
    print(
        f"  {len(shapes)} shape(s) x {rounds} rounds x {len(arms)} arms: "
        f"about {rounds * estimate:.0f} s of rounds (estimated from the warm-up)",
        flush=True,
    )
    for b, n in shapes:
        answers: dict[str, list[dict]] = {arm: [] for arm in arms}

        def timed(arm: str, b=b, n=n, answers=answers) -> float:
            answers[arm].append(calls[arm](b, n))
            return answers[arm][-1]["seconds"]

        interleaved_arms({arm: (lambda a=arm: timed(a)) for arm in arms}, rounds, warmup=0)
        rates.setdefault((b, n), {}).update(
            {arm: [decode_rate(a) for a in answers[arm]] for arm in arms}
        )
        if after_shape is not None:
            after_shape(b, n)


def to_result(batch: int, max_tokens: int, rates: dict[str, list[float]], method: str) -> Result:
    """A shape's per-round decode tok/s by arm -> that method's result."""
    return Result.from_rates(
        "vllm",
        batch,
        max_tokens,
        rates["standard"],
        rates[method],
        rates.get("vanilla"),
        method,
        clock="decode",
    )


def cpu_model() -> str | None:
    """The processor's model name (``lscpu``'s "Model name"), or None where it cannot tell."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def run_bench(
    backends: list[str],
    model: str | None,
    quick: bool,
    batches: list[int] | None,
    lengths: list[int] | None,
    rounds: int | None,
    beta: float,
    json_path: str | None,
    dtype: str | None = None,
    vanilla: str = "interleaved",
    engine_args: dict | None = None,
    methods: list[str] | None = None,
) -> dict:
    """Run the benchmark; print each result with its spread and a summary; optionally write one
    JSON object (``report.load_report`` reads it back).

    ``methods``: method specs (``eval.methods``) measured side by side, each an arm of the plugin
    engine (default: ``["moi"]``, with ``beta``).

    >>> run_bench(["vllm"], None, True, None, None, None, 1.0, "bench.json")  # doctest: +SKIP
    """
    import torch

    from mixinputs import engine_dtype

    if model is None:
        from mixinputs.embedded_model import embedded_model_path

        model = str(embedded_model_path())
    on_gpu = torch.cuda.is_available()
    resolved = engine_dtype.resolve_dtype(dtype, "cuda" if on_gpu else "cpu")
    print(engine_dtype.describe(resolved, dtype), flush=True)
    arms = bench_methods(methods or ["moi"], beta, model)
    if quick:
        quick_batches, quick_lengths, quick_rounds = quick_shapes(len(arms))
        batches, lengths, rounds = (
            batches or quick_batches,
            lengths or quick_lengths,
            rounds or quick_rounds,
        )
    batches = batches or ([1, 8, 64, 256] if on_gpu else [1, 8, 64])
    lengths = lengths or [128, 2048]
    rounds = rounds or DEFAULT_ROUNDS
    results: list[Result] = []
    memory = facts = None
    engine = {}
    started = time.perf_counter()
    if "vllm" in backends:
        max_model_len = max(lengths) + 128
        engine = {
            "dtype": resolved,
            "enforce_eager": not on_gpu,
            "max_model_len": max_model_len,
            **kv_cache_args(
                model, on_gpu, vanilla, max(batches), max_model_len, resolved, engine_args or {}
            ),
            **(engine_args or {}),
        }
        vllm_results, memory, facts = bench_vllm(
            model, batches, lengths, rounds, arms, vanilla, **engine
        )
        results += vllm_results
    if "hf" in backends:
        from mixinputs.bench.hf_run import bench_hf

        hf_method, hf_config = next(iter(arms.items()))  # the first method (transformers)
        results += bench_hf(
            model, [b for b in batches if b <= 8], min(lengths), rounds, hf_config, hf_method
        )
    seconds = time.perf_counter() - started
    command = [
        "mixinputs",
        "bench",
        "--backend",
        ",".join(backends),
        "--model",
        model,
        "--batch-sizes",
        ",".join(map(str, batches)),
        "--max-tokens",
        ",".join(map(str, lengths)),
        "--rounds",
        str(rounds),
        "--beta",
        str(beta),
        "--method",
        ",".join(arms),
        "--dtype",
        resolved,
        "--vanilla",
        vanilla,
    ] + (["--engine-args", json.dumps(engine_args)] if engine_args else [])
    report = {
        "results": [r.to_dict() for r in results],
        "plugin_memory": memory,
        "engines": facts,
        "meta": {
            "command": shlex.join(command),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "model": model,
            "dtype": resolved,
            "engine": engine,
            "beta": beta,
            "methods": {name: c.to_request() for name, c in arms.items()},
            "quick": quick,
            "clock": {"vllm": CLOCK, "hf": "the whole generate call"},
            "seconds": seconds,
            "torch": torch.__version__,
            "machine": platform.machine(),
            "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "load_average": _load_average(),
            "gpu": torch.cuda.get_device_name() if on_gpu else None,
            "vllm": _vllm_version(),
            "VLLM_USE_V2_MODEL_RUNNER": os.environ.get("VLLM_USE_V2_MODEL_RUNNER"),
        },
    }
    print_summary(results, memory, seconds, printed=True)  # each shown as measured
    if json_path:
        with open(json_path, "w") as f:
            json.dump(report, f, indent=1)
    return report


def _load_average() -> list[float] | None:
    """The 1, 5 and 15-minute load averages at the end of the run: how shared the machine was."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _vllm_version() -> str | None:
    try:
        import vllm

        return vllm.__version__
    except ImportError:
        return None
