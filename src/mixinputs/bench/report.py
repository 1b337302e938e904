"""What the bench prints, and reading its JSON files back (today's and earlier releases').

Every ratio is printed with its spread: the median of the per-round ratios, the per-round range,
and a verdict from the 95 % bootstrap interval of the median (``spread``), so a run whose rounds
scatter more than the effect says "inconclusive" instead of a bare median.

    mixinputs bench --report benchmarks/results-cpu-quick.json   # any bench JSON file
"""

from __future__ import annotations

import json
from pathlib import Path

from mixinputs.bench.result import RATIOS, Result


def result_lines(r: Result) -> list[str]:
    """A result as printed: one line of tok/s per arm, then one line per ratio with its spread.

    >>> r = Result.from_rates("vllm", 8, 16, [99, 98, 100], [90, 99, 95], [100, 100, 100],
    ...                       clock="decode")
    >>> print("\\n".join(result_lines(r)))
    vllm batch 8 x 16 tokens, 3 rounds, decode tok/s: vanilla 100.0, standard 99.0, moi 95.0
      moi/vanilla       0.950 (rounds 0.900-0.990; slower: interval [0.900, 0.990] lies below 1)
      standard/vanilla  0.990 (rounds 0.980-1.000; inconclusive: interval [0.980, 1.000] contains 1)
      moi/standard      0.950 (rounds 0.909-1.010; inconclusive: interval [0.909, 1.010] contains 1)
    """
    clock = "decode tok/s" if r.clock == "decode" else "tok/s"
    rates = [f"standard {r.standard_tok_s:.1f}", f"{r.method} {r.method_tok_s:.1f}"]
    if r.vanilla_tok_s is not None:
        rates.insert(0, f"vanilla {r.vanilla_tok_s:.1f}")
    head = (
        f"{r.backend} batch {r.batch_size} x {r.max_tokens} tokens, {r.rounds} rounds, "
        f"{clock}: {', '.join(rates)}"
    )
    spreads = r.spreads()
    width = max(len(r.ratio_label(name)) for name in RATIOS) + 2
    return [head] + [
        f"  {r.ratio_label(name):{width}s}{spread.describe()}" for name, spread in spreads.items()
    ]


def print_result(r: Result, indent: str = "  ") -> None:
    """Print one result as soon as its shape is measured."""
    print("\n".join(indent + line for line in result_lines(r)), flush=True)


def headline(results: list[Result]) -> str:
    """The run in one line: each method's decode throughput against vanilla vLLM (no plugin;
    standard decoding where no vanilla arm ran), per shape, with the interval's verdict.

    >>> r = Result.from_rates("vllm", 8, 16, [99, 98, 100], [90, 99, 95], [100, 100, 100])
    >>> headline([r])
    'headline: moi/vanilla 0.950 [0.900, 0.990] slower at batch 8 x 16'
    """
    parts = []
    for method in dict.fromkeys(r.method for r in results):
        shapes = []
        for r in (r for r in results if r.method == method):
            spreads = r.spreads()
            name = (
                "method_over_vanilla"
                if "method_over_vanilla" in spreads
                else ("method_over_standard")
            )
            spread = spreads.get(name)
            if spread is None:
                continue
            verdict = spread.verdict().split(":")[0]
            lo, hi = spread.interval
            label = r.ratio_label(name) if not shapes else ""
            shape = f"{r.backend} " if len({x.backend for x in results}) > 1 else ""
            shapes.append(
                f"{label + ' ' if label else ''}{spread.median:.3f} [{lo:.3f}, {hi:.3f}] "
                f"{verdict} at {shape}batch {r.batch_size} x {r.max_tokens}"
            )
        if shapes:
            parts.append(", ".join(shapes))
    return "headline: " + ("; ".join(parts) if parts else "no ratio measured")


def profile_line(profiled: dict | None) -> str:
    """vLLM's memory profile with and without MoI's worst step, in one line.

    >>> line = profile_line({"rows": 8, "sampler_bytes": 2**21, "extra_bytes": 2**20,
    ...                      "methods": {"soft": 3 * 2**20, "swir": 2**21}})
    >>> line.split(": ")[1]
    '2.00 MiB without MoI, 3.00 MiB with its worst step (+1.00 MiB; soft 3.00, swir 2.00 MiB)'
    """
    if not profiled:
        return "vLLM's memory profile: not run (no MoI step was profiled)"
    alone = profiled["sampler_bytes"]
    per = ", ".join(f"{k} {v / 2**20:.2f}" for k, v in profiled["methods"].items())
    return (
        f"vLLM's memory profile, dummy sampler call on {profiled['rows']} rows: "
        f"{alone / 2**20:.2f} MiB without MoI, {(alone + profiled['extra_bytes']) / 2**20:.2f} MiB "
        f"with its worst step (+{profiled['extra_bytes'] / 2**20:.2f} MiB; {per} MiB)"
    )


def print_summary(
    results: list[Result], memory: dict | None, seconds: float | None, printed: bool = False
) -> None:
    """The results (unless ``printed``: a run prints each as it is measured), the plugin's
    memory, the run's time and the one-line :func:`headline`."""
    if not printed:
        print(
            "each ratio is the median of per-round ratios, with the per-round range and its 95% "
            "bootstrap interval ('inconclusive' where the rounds cannot tell it from 1)"
        )
        for r in results:
            print_result(r, indent="")
    if memory:
        print(
            f"plugin memory: {memory['device_bytes'] / 2**20:.2f} MiB on the device "
            f"({memory.get('slot_rows')} slot rows x {memory.get('hidden')} x "
            f"{memory.get('dtype')}), {memory.get('host_history_bytes_per_token')} host bytes "
            "per generated token"
        )
        print(profile_line(memory.get("profiled")))
    if seconds is not None:
        print(f"bench took {seconds:.0f} s, engine starts included")
    print(headline(results))


def load_report(path: str | Path) -> tuple[list[Result], dict]:
    """A bench JSON file: its results (any release's field names) and the whole object.

    >>> import tempfile, os
    >>> old = {"results": [{"backend": "vllm", "batch_size": 8, "max_tokens": 32, "rounds": 3,
    ...        "standard_tok_s": 54.6, "moi_tok_s": 54.0, "ratio": 0.988, "ratios": [1, 0.98, 0.99],
    ...        "moi_vs_vanilla": 0.986, "moi_vs_vanilla_ratios": [0.91, 0.99, 1.34]}]}
    >>> with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
    ...     json.dump(old, f)
    >>> (r,), _ = load_report(f.name); os.unlink(f.name)
    >>> r.method, r.method_over_vanilla, r.spreads()["method_over_vanilla"].low
    ('moi', 0.986, 0.91)
    """
    data = json.loads(Path(path).read_text())
    return [Result.from_dict(r) for r in data.get("results", [])], data


def print_files(paths: list[str]) -> None:
    """Print the results of bench JSON files, each ratio with its spread (``--report``)."""
    for path in paths:
        results, data = load_report(path)
        meta = data.get("meta", {})
        print(f"{path}: {meta.get('command', '')} ({meta.get('date', 'no date')})")
        print_summary(results, data.get("plugin_memory"), meta.get("seconds"))
