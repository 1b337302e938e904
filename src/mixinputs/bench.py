"""MoI's cost (and each other method's) against vanilla vLLM and against standard decoding,
measured side by side in one run.

vLLM: two engines, each in its own process, alive for the whole run:
- **vanilla**: vLLM with no plugin loaded (``VLLM_PLUGINS`` names no plugin: what a user without
  mixinputs runs);
- **plugin**: vLLM with mixinputs loaded, serving **standard** requests (``mixinputs_mode: off``)
  and one arm per mixing method (``--method``, default ``moi``; each sends its
  ``MoIConfig.to_request()`` keys).
For each output length and batch size: the same prompts, rounds of all arms interleaved (the
order rotates every round) after a short warm-up round, every request generating exactly
``max_tokens`` tokens. Reports median decode tokens per second per arm and, per method, the
median of the per-round ratios method/vanilla, standard/vanilla and method/standard. Ratios are
measured, never asserted. A ``@thinking`` method gets a think-end token id the model never emits
(:func:`bench_methods`), so it mixes for the whole run.

    mixinputs bench --quick                 # vLLM, batch 8 and 64, 32 tokens: < 3 min on 2 cores
    mixinputs bench --quick --method moi,soft,soft+gumbel,moi@thinking   # batch 8 only
    mixinputs bench --json bench.json       # vLLM and transformers; batch 1, 8, 64 (GPU: 256)
    mixinputs bench --model benchmarks/gpu/configs/qwq-32b --backend vllm   # dummy weights

A model folder with a config but no weights runs with ``load_format="dummy"``; one without a
tokenizer runs with ``skip_tokenizer_init=True`` and token-id prompts.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import queue
import shlex
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mixinputs.config import DEFAULT_THINK_END, STANDARD_REQUEST, MoIConfig

PROMPT = "Write a long story about a lighthouse keeper and a storm. Chapter 1:"
PROMPT_TOKENS = 24  # token-id prompts (no tokenizer): this many ids each
WARMUP_TOKENS = 8  # the vLLM warm-up round: every arm once per batch size, this long
REPLY = "BENCH-REPLY:"  # the engine processes' answers on stdout (vLLM logs there too)


@dataclass
class Result:
    backend: str
    batch_size: int
    max_tokens: int
    rounds: int
    standard_tok_s: float  # median over rounds
    moi_tok_s: float
    ratio: float  # median of per-round ratios MoI / standard
    ratios: list[float] = field(default_factory=list)
    standard_tpot_ms: float = 0.0  # time per output token, per request
    moi_tpot_ms: float = 0.0
    vanilla_tok_s: float | None = None  # vLLM with no plugin loaded (vLLM backend only)
    moi_vs_vanilla: float | None = None  # median of per-round ratios
    standard_vs_vanilla: float | None = None
    moi_vs_vanilla_ratios: list[float] = field(default_factory=list)
    standard_vs_vanilla_ratios: list[float] = field(default_factory=list)
    vanilla_tpot_ms: float | None = None
    method: str = "moi"  # the mixing arm: "moi", or a method spec (``eval.methods``)


def interleaved(run: Callable[[bool], float], tokens: int, rounds: int, warmup: int = 1):
    """``run(moi) -> seconds`` for one round; A B pairs, alternating which goes first."""
    times = interleaved_arms({"standard": lambda: run(False), "moi": lambda: run(True)}, rounds)
    return [tokens / t for t in times["standard"]], [tokens / t for t in times["moi"]]


def interleaved_arms(
    arms: dict[str, Callable[[], float]], rounds: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Seconds per round for each arm: one warm-up round, then ``rounds`` rounds in which every
    arm runs once, the order rotating by one each round (so no arm always goes first).

    >>> calls = []
    >>> out = interleaved_arms({"a": lambda: calls.append("a") or 1.0,
    ...                         "b": lambda: calls.append("b") or 2.0}, rounds=2)
    >>> calls, out
    (['a', 'b', 'a', 'b', 'b', 'a'], {'a': [1.0, 1.0], 'b': [2.0, 2.0]})
    """
    names = list(arms)
    for _ in range(warmup):
        for name in names:
            arms[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(arms[name]())
    return times


def _median_ratio(num: list[float], den: list[float]) -> tuple[float, list[float]]:
    ratios = [n / d for n, d in zip(num, den, strict=True)]
    return statistics.median(ratios), ratios


def _result(backend, batch, max_tokens, std, moi, vanilla=None, method="moi") -> Result:
    """Tokens per second per round for each arm -> medians and per-round ratios."""
    ratio, ratios = _median_ratio(moi, std)
    result = Result(
        backend=backend,
        batch_size=batch,
        max_tokens=max_tokens,
        rounds=len(std),
        standard_tok_s=statistics.median(std),
        moi_tok_s=statistics.median(moi),
        ratio=ratio,
        ratios=ratios,
        standard_tpot_ms=1000 * batch / statistics.median(std),
        moi_tpot_ms=1000 * batch / statistics.median(moi),
        method=method,
    )
    if vanilla is not None:
        result.vanilla_tok_s = statistics.median(vanilla)
        result.vanilla_tpot_ms = 1000 * batch / result.vanilla_tok_s
        result.moi_vs_vanilla, result.moi_vs_vanilla_ratios = _median_ratio(moi, vanilla)
        result.standard_vs_vanilla, result.standard_vs_vanilla_ratios = _median_ratio(std, vanilla)
    return result


# -- vLLM: one engine per process -------------------------------------------------------------
def model_files(model: str) -> dict:
    """Engine arguments a config-only folder needs: dummy weights, no tokenizer.

    >>> model_files("Qwen/QwQ-32B")   # a hub name: load as usual
    {}
    """
    folder = Path(model)
    if not folder.is_dir():
        return {}
    engine = {}
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        engine["load_format"] = "dummy"  # throughput does not depend on the weights
    if not any((folder / name).exists() for name in ("tokenizer.json", "tokenizer.model")):
        engine["skip_tokenizer_init"] = True  # prompts go in as token ids
    return engine


def _prompts(batch: int, token_ids: bool) -> list:
    """``batch`` distinct prompts: text, or token ids when the engine has no tokenizer."""
    if token_ids:
        # Distinct ids below 30000: inside every vocabulary these benchmarks use.
        return [
            {"prompt_token_ids": [100 + (i * 131 + k * 17) % 29000 for k in range(PROMPT_TOKENS)]}
            for i in range(batch)
        ]
    return [f"{PROMPT} (version {i})" for i in range(batch)]


def serve_engine() -> None:
    """The engine process: reads one JSON command a line on stdin, answers on stdout.

    ``{"engine": {...}}`` first (start the engine); then ``{"run": {"batch", "max_tokens",
    "extra"}}`` -> ``{"seconds"}``; ``{"memory": true}``; ``{"quit": true}``.
    """
    os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")  # the memory probe

    def reply(obj) -> None:
        sys.stdout.write(REPLY + json.dumps(obj) + "\n")
        sys.stdout.flush()

    spec = json.loads(sys.stdin.readline())
    from vllm import LLM, SamplingParams

    engine = spec["engine"]
    llm = LLM(**engine)
    token_ids = bool(engine.get("skip_tokenizer_init"))
    reply({"ready": True, **_engine_facts(llm)})
    for line in sys.stdin:
        cmd = json.loads(line)
        if "run" in cmd:
            run = cmd["run"]
            params = SamplingParams(
                max_tokens=run["max_tokens"],
                temperature=0.0,
                ignore_eos=True,
                detokenize=not token_ids,
                extra_args=run.get("extra"),  # a method's request keys; standard: mode off
            )
            prompts = _prompts(run["batch"], token_ids)
            start = time.perf_counter()
            outputs = llm.generate(prompts, params, use_tqdm=False)
            seconds = time.perf_counter() - start
            made = sum(len(o.outputs[0].token_ids) for o in outputs)
            reply({"seconds": seconds, "tokens": made})
        elif "memory" in cmd:
            try:
                reply({"memory": llm.collective_rpc(_plugin_memory)[0]})
            except Exception as e:  # no plugin state in this engine
                reply({"memory": None, "error": repr(e)})
        else:
            break
    core = getattr(llm.llm_engine, "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()


def _engine_facts(llm) -> dict:
    config = llm.llm_engine.vllm_config
    try:
        v2 = bool(config.use_v2_model_runner)
    except Exception:  # releases without Model Runner V2
        v2 = False
    plugins = os.environ.get("VLLM_PLUGINS")
    return {
        "runner": "v2" if v2 else "v1",
        "dtype": str(config.model_config.dtype).removeprefix("torch."),
        "plugins": "all installed" if plugins is None else plugins,
    }


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


class EngineProcess:
    """An engine in a child process (its own environment), driven one command at a time."""

    def __init__(self, name: str, engine: dict, env: dict[str, str]):
        self.name = name
        self.log: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mixinputs.bench"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.replies: queue.Queue = queue.Queue()
        threading.Thread(target=self._drain, daemon=True).start()
        self._send({"engine": engine})

    def _drain(self) -> None:
        for line in self.proc.stdout:
            if line.startswith(REPLY):
                self.replies.put(json.loads(line[len(REPLY) :]))
            else:
                self.log.append(line.rstrip())
                del self.log[:-200]
        self.replies.put(None)  # the process ended

    def _send(self, obj) -> None:
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()

    def wait(self, timeout: float = 1800) -> dict:
        try:
            answer = self.replies.get(timeout=timeout)
        except queue.Empty:
            answer = None
        if answer is None:
            tail = "\n".join(self.log[-40:])
            raise RuntimeError(f"the {self.name} engine process gave no answer:\n{tail}")
        return answer

    def run(self, batch: int, max_tokens: int, extra: dict | None = None) -> float:
        self._send({"run": {"batch": batch, "max_tokens": max_tokens, "extra": extra}})
        answer = self.wait()
        if answer["tokens"] != batch * max_tokens:
            raise RuntimeError(
                f"{self.name}: {answer['tokens']} tokens made, {batch * max_tokens} expected"
            )
        return answer["seconds"]

    def ask(self, obj) -> dict:
        self._send(obj)
        return self.wait()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self._send({"quit": True})
                self.proc.wait(timeout=120)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()


def bench_vllm(
    model: str,
    batches: list[int],
    lengths: list[int],
    rounds: int,
    methods: dict[str, MoIConfig],
    vanilla: str = "interleaved",
    **engine,
) -> tuple[list[Result], dict, dict]:
    """(results, plugin memory, facts per engine); one result per shape and method.

    ``methods``: the mixing arms by name (``{"moi": MoIConfig(beta=1)}``, or several: each is an
    arm of the plugin engine, interleaved with the others).

    ``vanilla``: ``"interleaved"`` (both engines up together, the three arms' rounds
    interleaved), ``"sequential"`` (the vanilla engine's rounds first, then the plugin engine's:
    for models two copies of which do not fit in memory) or ``"off"``.
    """
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

    def start(name: str) -> EngineProcess:
        if name == "vanilla":  # a plugin name that is not ours: vLLM loads none
            env = {**base_env, "VLLM_PLUGINS": "no-plugin-at-all"}
            return EngineProcess(name, spec, env)
        return EngineProcess(name, spec, base_env)

    requests = {name: config.to_request() for name, config in methods.items()}

    def measure(procs: dict[str, EngineProcess], arms: list[str], times: dict) -> None:
        for b, n in shapes:
            calls = {
                "vanilla": lambda tokens, b=b: procs["vanilla"].run(b, tokens),
                "standard": lambda tokens, b=b: procs["plugin"].run(b, tokens, STANDARD_REQUEST),
            }
            for name, extra in requests.items():
                calls[name] = lambda tokens, b=b, x=extra: procs["plugin"].run(b, tokens, x)
            for arm in arms:  # warm-up: each arm once at this batch size, short, not counted
                calls[arm](min(n, WARMUP_TOKENS))
            timed = {arm: (lambda f=calls[arm], n=n: f(n)) for arm in arms}
            got = interleaved_arms(timed, rounds, warmup=0)
            times.setdefault((b, n), {}).update(got)
            for name in methods:
                if name in arms:
                    _progress(_to_result(b, n, times[(b, n)], name))

    mixing = list(methods)
    groups = {
        "interleaved": [(["plugin", "vanilla"], ["vanilla", "standard", *mixing])],
        "sequential": [(["vanilla"], ["vanilla"]), (["plugin"], ["standard", *mixing])],
        "off": [(["plugin"], ["standard", *mixing])],
    }[vanilla]
    times: dict = {}
    facts: dict = {}
    memory = None
    for names, arms in groups:
        procs = {name: start(name) for name in names}  # started together
        try:
            for name, p in procs.items():
                facts[name] = p.wait()
                f = facts[name]
                print(f"  {name} engine: runner {f['runner']}, dtype {f['dtype']}", flush=True)
            measure(procs, arms, times)
            for name, p in procs.items():  # the vanilla engine must have no MoI state at all
                found = p.ask({"memory": True}).get("memory")
                facts[name]["plugin_state"] = found is not None
                memory = found if name == "plugin" else memory
        finally:
            for p in procs.values():
                p.close()
    results = [_to_result(b, n, times[(b, n)], m) for b, n in shapes for m in methods]
    return results, memory, facts


def _to_result(
    batch: int, max_tokens: int, seconds: dict[str, list[float]], method: str = "moi"
) -> Result:
    tok_s = {arm: [batch * max_tokens / t for t in ts] for arm, ts in seconds.items()}
    return _result(
        "vllm",
        batch,
        max_tokens,
        tok_s["standard"],
        tok_s[method],
        tok_s.get("vanilla"),
        method,
    )


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
                    with enable_moi(lm, config=moi, tokenizer=tok):
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
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = Path(path)
    if folder.is_dir() and not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        print(f"  {path} has no weights: random weights from its config")
        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=dtype)
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)


def _progress(r: Result) -> None:
    vanilla = ""
    if r.vanilla_tok_s is not None:
        vanilla = (
            f"vanilla {r.vanilla_tok_s:8.1f}, {r.method}/vanilla {r.moi_vs_vanilla:.3f}, "
            f"standard/vanilla {r.standard_vs_vanilla:.3f}, "
        )
    print(
        f"  {r.backend:5s} batch {r.batch_size:3d} x {r.max_tokens:5d} tokens (tok/s): {vanilla}"
        f"standard {r.standard_tok_s:8.1f}, {r.method} {r.moi_tok_s:8.1f}, "
        f"{r.method}/standard {r.ratio:.3f} "
        f"(rounds: {', '.join(f'{x:.3f}' for x in r.ratios)})",
        flush=True,
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
    """Run the benchmark; print a summary line; optionally write one JSON object.

    ``methods``: method specs (``eval.methods``) measured side by side, each an arm of the plugin
    engine (default: ``["moi"]``, with ``beta``).
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
    if quick:  # each arm is a round more per shape: several methods measure batch 8 only
        batches = batches or ([8, 64] if len(arms) == 1 else [8])
    batches = batches or ([1, 8, 64, 256] if on_gpu else [1, 8, 64])
    lengths = lengths or ([32] if quick else [128, 2048])
    rounds = rounds or (3 if quick else 5)
    results: list[Result] = []
    memory = facts = None
    engine = {}
    started = time.perf_counter()
    if "vllm" in backends:
        engine = {
            "dtype": resolved,
            "enforce_eager": not on_gpu,
            "gpu_memory_utilization": (0.45 if vanilla == "interleaved" else 0.9)
            if on_gpu
            else 0.15,
            "max_model_len": max(lengths) + 128,
            **(engine_args or {}),
        }
        vllm_results, memory, facts = bench_vllm(
            model, batches, lengths, rounds, arms, vanilla, **engine
        )
        results += vllm_results
    if "hf" in backends:
        hf_method, hf_config = next(iter(arms.items()))  # the first method (transformers)
        hf_results = bench_hf(
            model, [b for b in batches if b <= 8], min(lengths), rounds, hf_config
        )
        for r in hf_results:
            r.method = hf_method
        results += hf_results
    report = {
        "results": [asdict(r) for r in results],
        "plugin_memory": memory,
        "engines": facts,
        "meta": {
            "command": shlex.join(
                [
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
                ]
                + (["--engine-args", json.dumps(engine_args)] if engine_args else [])
            ),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "model": model,
            "dtype": resolved,
            "engine": engine,
            "beta": beta,
            "methods": {name: c.to_request() for name, c in arms.items()},
            "quick": quick,
            "seconds": time.perf_counter() - started,
            "torch": torch.__version__,
            "machine": platform.machine(),
            "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "gpu": torch.cuda.get_device_name() if on_gpu else None,
            "vllm": _vllm_version(),
            "VLLM_USE_V2_MODEL_RUNNER": os.environ.get("VLLM_USE_V2_MODEL_RUNNER"),
        },
    }
    for r in results:
        line = f"{r.backend} b={r.batch_size} n={r.max_tokens}: {r.method}/standard {r.ratio:.3f}"
        if r.moi_vs_vanilla is not None:
            line += (
                f", {r.method}/vanilla {r.moi_vs_vanilla:.3f}, "
                f"standard/vanilla {r.standard_vs_vanilla:.3f}"
            )
        print(line)
    extra = f"; plugin memory {memory['device_bytes'] / 2**20:.2f} MiB" if memory else ""
    print(f"decode throughput ratios are medians of per-round ratios{extra}")
    print(f"bench took {report['meta']['seconds']:.0f} s")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(report, f, indent=1)
    return report


def bench_methods(specs: list[str], beta: float, model: str | None) -> dict[str, MoIConfig]:
    """The mixing arms by label (``eval.methods``); standard decoding is always an arm anyway.

    A moi-mode method that does not set ``beta`` itself takes ``beta`` (``--beta``). A thinking
    region whose think-end token is left at the default text gets an explicit token id instead:
    the model's last vocabulary id (``config.json``'s ``vocab_size`` - 1). That id exists in
    every model's vocabulary, so the engine accepts it on a model without ``</think>`` (the
    embedded SmolLM2), and greedy decoding of the bench prompt practically never emits it, so the
    region stays open for the whole run: the cost of mixing while a reasoning model thinks.

    >>> list(bench_methods(["moi", "soft+gumbel", "moi:beta=4"], 2.0, None))
    ['moi', 'soft+gumbel', 'moi(beta=4)']
    """
    from dataclasses import replace

    from mixinputs.eval.methods import method_label, parse_method_options, split_methods

    arms: dict[str, MoIConfig] = {}
    for spec in split_methods(",".join(specs)):
        config, explicit = parse_method_options(spec)
        if config is None:
            continue  # standard decoding is always an arm
        if config.mode == "moi" and "beta" not in explicit:
            config = replace(config, beta=beta)
        name = method_label(config, beta="beta" in explicit)
        if config.needs_think_end and "think_end" not in explicit and model:
            config = replace(config, think_end=never_emitted_token_id(model))
        if config not in arms.values():  # moi:beta=2 with --beta 2 is the moi arm again
            arms.setdefault(name, config)
    if not arms:
        raise ValueError("bench needs at least one mixing method besides standard, e.g. moi")
    return arms


def never_emitted_token_id(model: str) -> int | str:
    """A think-end token id the bench never emits: the last id of the model's vocabulary.

    Falls back to the default text when the folder has no ``config.json`` with a ``vocab_size``
    (the engine then says what is wrong, e.g. no ``</think>`` in the tokenizer).
    """
    try:
        vocab = json.loads((Path(model) / "config.json").read_text())["vocab_size"]
    except (OSError, KeyError, TypeError, ValueError):
        return DEFAULT_THINK_END
    return int(vocab) - 1


def _vllm_version() -> str | None:
    try:
        import vllm

        return vllm.__version__
    except ImportError:
        return None


if __name__ == "__main__":
    serve_engine()
