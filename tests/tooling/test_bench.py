"""`mixinputs bench`: the round schedule, the ratios and their spread, old result files, the KV
cache sizing, config-only models, and the vanilla arm really running vLLM without the plugin
(one short run with both engines)."""

from __future__ import annotations

import doctest
import importlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from mixinputs import bench
from mixinputs.bench import engine_args, engine_process, run, spread
from mixinputs.cli import main
from mixinputs.config import MoIConfig

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
BENCH_MODULES = [
    "arms",
    "child_engine",
    "engine_args",
    "engine_process",
    "hf_run",
    "report",
    "result",
    "rounds",
    "run",
    "spread",
]


def test_rounds_rotate_so_no_arm_always_goes_first():
    calls = []
    arms = {name: (lambda n=name: calls.append(n) or 1.0) for name in ("v", "s", "m")}
    times = bench.interleaved_arms(arms, rounds=3, warmup=1)
    assert calls[:3] == ["v", "s", "m"]  # the warm-up round, not counted
    assert calls[3:] == ["v", "s", "m", "s", "m", "v", "m", "v", "s"]
    assert {k: len(v) for k, v in times.items()} == {"v": 3, "s": 3, "m": 3}


def test_ratios_are_medians_of_per_round_ratios():
    # tok/s per round: vanilla 100, 100, 100; standard 99, 98, 100; MoI 90, 99, 95
    r = bench.Result.from_rates("vllm", 8, 32, [99, 98, 100], [90, 99, 95], [100, 100, 100])
    assert r.method_over_vanilla == pytest.approx(0.95)
    assert r.standard_over_vanilla == pytest.approx(0.99)
    assert r.method_over_standard == pytest.approx(statistics_median([90 / 99, 99 / 98, 95 / 100]))
    assert r.vanilla_tpot_ms == pytest.approx(80.0)  # 8 requests at 100 tok/s
    lo, hi = r.intervals["method_over_vanilla"]
    assert 0.9 <= lo <= 0.95 <= hi <= 0.99  # the median's interval lies inside the rounds
    assert bench.Result.from_rates("hf", 1, 4, [1.0], [1.0]).method_over_vanilla is None


def statistics_median(xs):
    return sorted(xs)[len(xs) // 2]


def test_config_only_folder_gets_dummy_weights_and_token_id_prompts(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert bench.model_files(str(tmp_path)) == {"load_format": "dummy", "skip_tokenizer_init": True}
    (tmp_path / "tokenizer.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert bench.model_files(str(tmp_path)) == {}
    prompts = bench.prompts(3, token_ids=True)
    assert len({tuple(p["prompt_token_ids"]) for p in prompts}) == 3
    assert len(set(bench.prompts(3, token_ids=False))) == 3


def test_bad_engine_args_are_a_clear_error():
    with pytest.raises(SystemExit, match="--engine-args is not JSON"):
        main(["bench", "--engine-args", "{enforce_eager: no}"])


@pytest.mark.vllm
@pytest.mark.slow
def test_vanilla_arm_runs_vllm_without_the_plugin(tmp_path):
    pytest.importorskip("vllm")
    out = tmp_path / "bench.json"
    report = bench.run_bench(["vllm"], None, False, [2], [4], 1, 1.0, str(out), dtype="float32")
    assert json.loads(out.read_text())["results"] == report["results"]
    (result,) = report["results"]
    assert result["vanilla_tok_s"] > 0 and result["method_tok_s"] > 0
    assert result["method"] == "moi"
    assert len(result["method_over_vanilla_ratios"]) == 1
    if report["meta"]["gpu"] is None:  # on CPU the KV cache is sized in bytes, not free memory
        engine = report["meta"]["engine"]
        assert engine["kv_cache_memory_bytes"] > 0 and "gpu_memory_utilization" not in engine
    assert report["engines"]["vanilla"]["plugins"] == "no-plugin-at-all"
    assert report["engines"]["plugin"]["plugins"] == "all installed"
    assert report["engines"]["plugin"]["dtype"] == "float32"
    assert report["plugin_memory"]["device_bytes"] > 0
    # The vanilla engine has no MoI state at all: the plugin was never loaded there.
    assert report["engines"]["vanilla"]["plugin_state"] is False
    assert report["engines"]["plugin"]["plugin_state"] is True


def test_methods_are_arms_of_one_run(tmp_path):
    """Each method spec becomes an arm with its own request keys, named by its label."""
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 500}))
    specs = ["moi", "soft+gumbel", "moi@thinking", "standard", "direct", "moi:beta=4", "moi:beta=2"]
    arms = bench.bench_methods(specs, 2.0, str(tmp_path))
    assert list(arms) == ["moi", "soft+gumbel", "moi@thinking", "direct", "moi(beta=4)"]
    assert arms["moi"] == MoIConfig(beta=2.0)  # --beta, and moi:beta=2 is the same arm
    assert arms["moi(beta=4)"] == MoIConfig(beta=4.0)
    assert arms["moi@thinking"].beta == 2.0  # a moi-mode arm without its own beta takes --beta
    assert arms["direct"] == MoIConfig(mode="direct")
    requests = {name: config.to_request() for name, config in arms.items()}
    assert requests["soft+gumbel"]["mixinputs_mode"] == "soft"
    assert requests["soft+gumbel"]["mixinputs_noise"] == "gumbel"
    assert "mixinputs_region" not in requests["moi"]


def test_a_thinking_arm_gets_a_think_end_id_the_model_never_emits(tmp_path):
    """The bench model need not have ``</think>``: the arm names the last vocabulary id, so the
    region stays open for the whole run; a think-end the spec names is kept."""
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 500}))
    arms = bench.bench_methods(
        ["moi@thinking", "moi@thinking:cold_stop_entropy=0.01", "moi@thinking:think_end=7"],
        1.0,
        str(tmp_path),
    )
    assert arms["moi@thinking"].to_request()["mixinputs_think_end"] == 499
    assert arms["moi@thinking(cold_stop_entropy=0.01)"].think_end == 499
    assert arms["moi@thinking(think_end=7)"].think_end == 7
    assert bench.never_emitted_token_id(str(tmp_path / "missing")) == "</think>"


def test_bad_bench_methods_fail_before_any_engine_starts():
    with pytest.raises(ValueError, match="at least one"):
        bench.bench_methods(["standard"], 1.0, None)
    with pytest.raises(ValueError, match="unknown noise 'uniform'"):
        bench.bench_methods(["soft+uniform"], 1.0, None)
    with pytest.raises(SystemExit, match="--method: bad method 'moi@later'"):
        main(["bench", "--quick", "--method", "moi,moi@later"])


def test_bench_method_flag_reaches_run_bench(monkeypatch):
    """``--method`` goes to ``run_bench`` whole (labels hold commas inside parentheses)."""
    import mixinputs.bench

    got = {}
    monkeypatch.setattr(mixinputs.bench, "run_bench", lambda *a, **kw: got.update(kw))
    assert main(["bench", "--quick", "--method", "soft,moi(beta=2, top_k=5)"]) == 0
    assert got["methods"] == ["soft,moi(beta=2, top_k=5)"]
    arms = bench.bench_methods(got["methods"], 1.0, None)
    assert list(arms) == ["soft", "moi(beta=2, top_k=5)"]


# -- the spread of a ratio and the verdict ----------------------------------------------------
def test_rounds_that_scatter_more_than_the_effect_are_inconclusive():
    """The issue's own quick run: 3 rounds 0.885-1.181 around a median of 0.912."""
    s = spread.spread_of([0.885, 0.912, 1.181])
    assert (s.median, s.low, s.high) == (0.912, 0.885, 1.181)
    assert s.contains_one
    assert s.verdict() == "inconclusive: interval [0.885, 1.181] contains 1"


def test_tight_rounds_resolve_an_effect_either_way():
    slower = spread.spread_of([0.91, 0.92, 0.90, 0.93, 0.92, 0.91, 0.92, 0.90])
    assert slower.verdict().startswith("slower: interval [0.9")
    assert slower.interval[1] < 1.0 and not slower.contains_one
    faster = spread.spread_of([1.04, 1.06, 1.05, 1.07, 1.05, 1.06])
    assert faster.verdict().startswith("faster:") and faster.interval[0] > 1.0


def test_one_outlier_round_does_not_move_the_interval_past_the_others():
    rounds = [0.97, 0.98, 0.99, 0.98, 0.97, 0.99, 0.98, 1.40]  # one round hit by a busy neighbour
    s = spread.spread_of(rounds)
    assert s.high == 1.40 and s.interval[1] < 1.0  # the median's interval ignores it
    assert s.verdict().startswith("slower")


def test_the_interval_is_reproducible_and_inside_the_rounds():
    rounds = [0.93, 1.02, 0.97, 1.05, 0.99, 0.95, 1.01, 0.98, 1.03, 0.96]
    lo, hi = spread.median_interval(rounds)
    assert (lo, hi) == spread.median_interval(rounds)  # seeded
    assert min(rounds) <= lo <= spread.spread_of(rounds).median <= hi <= max(rounds)
    narrower = spread.median_interval(rounds, confidence=0.5)
    assert lo <= narrower[0] <= narrower[1] <= hi


def test_the_interval_is_scipys_percentile_bootstrap_of_the_median():
    import numpy as np
    from scipy.stats import bootstrap

    rounds = [0.93, 1.02, 0.97, 1.05, 0.99, 0.95, 1.01, 0.98, 1.03, 0.96]
    theirs = bootstrap(
        (rounds,),
        np.median,
        n_resamples=spread.RESAMPLES,
        method="percentile",
        rng=np.random.default_rng(0),
    ).confidence_interval
    assert spread.median_interval(rounds) == pytest.approx((theirs.low, theirs.high))
    assert spread.median_interval([1.2]) == (1.2, 1.2)  # one round is its own interval


def test_a_run_prints_each_result_once_and_ends_with_a_headline(capsys):
    fast = bench.Result.from_rates(
        "vllm", 8, 16, [100] * 8, [90, 91, 92, 90, 91, 92, 90, 91], [100] * 8, clock="decode"
    )
    bench.report.print_result(fast)  # as the run prints it when the shape is measured
    bench.report.print_summary([fast], None, 12.0, printed=True)
    out = capsys.readouterr().out.splitlines()
    assert sum(line.strip().startswith("vllm batch 8 x 16") for line in out) == 1
    assert out[-1].startswith("headline: moi/vanilla 0.910 [0.90") and out[-1].endswith(
        "slower at batch 8 x 16"
    )
    bench.report.print_summary([fast], None, None)  # --report: the results, then the headline
    out = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("vllm batch 8 x 16") for line in out) == 1
    assert out[-1].startswith("headline: ")


def test_too_few_rounds_say_so_instead_of_a_verdict():
    assert spread.spread_of([0.8, 0.81]).verdict() == "too few rounds (2) for an interval"
    with pytest.raises(ValueError, match="no rounds"):
        spread.median_interval([])


def test_every_printed_ratio_carries_its_spread():
    r = bench.Result.from_rates(
        "vllm", 64, 16, [50] * 4, [48, 47, 49, 60], [50] * 4, "soft", clock="decode"
    )
    lines = bench.result_lines(r)
    assert lines[0].startswith("vllm batch 64 x 16 tokens, 4 rounds, decode tok/s: vanilla 50.0")
    labels = [line.split()[0] for line in lines[1:]]
    assert labels == ["soft/vanilla", "standard/vanilla", "soft/standard"]
    assert "rounds 0.940-1.200; inconclusive: interval" in lines[1]


# -- result files: today's names and earlier releases' -----------------------------------------
@pytest.mark.parametrize(
    "name",
    [
        "results-cpu-quick.json",  # issue 9: moi_* and *_vs_vanilla, no method
        "results-cpu-methods-quick.json",  # issue 12: method, still moi_* names
        "results-cpu-64tok.json",  # before the vanilla arm: ratio / ratios only
    ],
)
def test_old_result_files_read_under_todays_names(name):
    path = BENCHMARKS / name
    raw = json.loads(path.read_text())["results"]
    results, data = bench.load_report(path)
    assert len(results) == len(raw) and "meta" in data
    for old, new in zip(raw, results, strict=True):
        assert new.method == old.get("method", "moi") and new.clock == "call"
        assert new.method_tok_s == old["moi_tok_s"]
        assert new.method_over_standard == old["ratio"]
        assert new.method_over_standard_ratios == old["ratios"]
        assert new.method_over_vanilla == old.get("moi_vs_vanilla")
        assert new.standard_over_vanilla_ratios == old.get("standard_vs_vanilla_ratios", [])
        # Their spreads come from the stored rounds: the median is the file's own.
        assert new.spreads()["method_over_standard"].median == pytest.approx(old["ratio"])


def test_todays_result_round_trips_through_json(tmp_path):
    r = bench.Result.from_rates("vllm", 8, 16, [99, 98, 97], [90, 99, 95], [100, 101, 99], "soft")
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"results": [r.to_dict()]}))
    (back,), _ = bench.load_report(path)
    assert back == bench.Result(**json.loads(json.dumps(r.to_dict())))
    assert back.method == "soft" and back.intervals == r.intervals
    assert "moi_tok_s" not in r.to_dict()  # written under today's names only


def test_bench_report_prints_an_old_file_with_spreads(capsys):
    assert main(["bench", "--report", str(BENCHMARKS / "results-cpu-quick.json")]) == 0
    out = capsys.readouterr().out
    # Its tok/s timed the whole call (no decode clock then), and 3 rounds cannot tell 0.986 from 1.
    assert "vllm batch 8 x 32 tokens, 3 rounds, tok/s: vanilla 56.3, standard 54.6, moi 54.0" in out
    assert "moi/vanilla       0.986 (rounds 0.912-1.341; inconclusive: interval" in out
    assert "plugin memory: 0.17 MiB" in out


# -- the KV cache: bytes on CPU, never a share of free memory ----------------------------------
def test_cpu_engines_size_their_kv_cache_in_bytes_from_the_model(tmp_path):
    config = {"num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
              "hidden_size": 576, "head_dim": 64}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(config))
    args = engine_args.kv_cache_args(str(tmp_path), False, "interleaved", 64, 160, "float32", {})
    # 64 requests x 160 tokens rounded up to a 256-token block x 46,080 bytes a token
    assert args == {"kv_cache_memory_bytes": 64 * 256 * 46080}
    bf16 = engine_args.cpu_kv_cache_bytes(str(tmp_path), 64, 160, "bfloat16")
    assert bf16 == args["kv_cache_memory_bytes"] // 2


def test_a_run_too_large_for_the_cap_keeps_one_full_length_request(tmp_path, monkeypatch):
    """The cap is a share of the machine's total memory (not what is free now); below it vLLM
    could not hold even one request of max_model_len, so that is the floor."""
    (tmp_path / "config.json").write_text(
        json.dumps({"num_hidden_layers": 2, "num_attention_heads": 2, "hidden_size": 8})
    )
    one_request = 2 * 2 * 2 * 4 * 4 * 256  # K and V, 2 layers, 2 heads of 4, float32, 1 block
    assert engine_args.cpu_kv_cache_bytes(str(tmp_path), 8, 100, "float32") == 8 * one_request
    monkeypatch.setattr(engine_args, "_total_memory", lambda: 6000)
    assert engine_args.cpu_kv_cache_bytes(str(tmp_path), 8, 100, "float32") == one_request


def test_gpu_engines_keep_a_share_and_user_sizing_wins():
    assert engine_args.kv_cache_args("m", True, "sequential", 8, 160, "auto", {}) == {
        "gpu_memory_utilization": 0.9
    }
    user = {"kv_cache_memory_bytes": 2**30}
    assert engine_args.kv_cache_args("m", False, "interleaved", 8, 160, "float32", user) == {}


# -- the quick plan, the estimate and the decode clock -----------------------------------------
def test_quick_measures_batch_8_and_64_in_more_shorter_rounds():
    batches, lengths, rounds = bench.quick_shapes(1)
    assert batches == [8, 64] and rounds >= 8 and max(lengths) <= 16
    assert bench.quick_shapes(4)[0] == [8]  # several methods: batch 8 only


def test_the_estimate_scales_the_warmup_to_the_rounds():
    warm = {"seconds": 2.0, "decode_seconds": 1.0, "decode_tokens": 24}  # batch 8, 4 tokens
    # prefill and bookkeeping (1 s) once, then 8 x 15 decode tokens at 1/24 s each
    assert run.estimate_round_seconds(warm, 8, 16) == pytest.approx(1.0 + 120 / 24)


class _FakeEngine:
    """An engine that prefills request 0 in step 1, request 1 in step 2, then decodes both."""

    def __init__(self, tokens: int):
        self.requests: list[str] = []
        self.tokens = tokens
        self.steps = 0

    def add_request(self, request_id, prompt, params):
        self.requests.append(request_id)

    def has_unfinished_requests(self):
        return self.steps < self.tokens + 1

    def step(self):
        self.steps += 1
        first, second = self.requests
        outs = [(first, 1)] if self.steps <= self.tokens else []
        if self.steps >= 2:
            outs.append((second, 1))
        return [SimpleNamespace(request_id=r, outputs=[SimpleNamespace(token_ids=[7] * n)])
                for r, n in outs]  # fmt: skip


# -- the child engine harness (mixinputs.bench.child_engine), on a stand-in for vLLM ---------------
ROOT = Path(__file__).resolve().parents[2]
FAKE = {"cwd": ROOT, "setup": ["tests.tooling.test_bench:_fake_vllm"]}


def _fake_vllm() -> None:
    """(In a child, before its start.) A stand-in ``vllm`` module: ``LLM`` answers each prompt
    with its words' lengths, and prints to fd 1 as vLLM's logs do."""
    import sys
    import types

    def output(i, prompt):
        words = prompt.split()
        out = SimpleNamespace(text=prompt.upper(), token_ids=[len(w) for w in words])
        return SimpleNamespace(
            request_id=str(i), prompt_token_ids=[0] * len(words), num_cached_tokens=None,
            outputs=[out],
        )  # fmt: skip

    class LLM:
        def __init__(self, **engine):
            print("fake engine: starting", flush=True)
            if engine.get("fail"):
                raise RuntimeError("fake engine: no such model")
            self.engine = engine

        def generate(self, prompts, params, use_tqdm=True):
            return [output(i, p) for i, p in enumerate(prompts)]

    sys.modules["vllm"] = types.SimpleNamespace(LLM=LLM, SamplingParams=lambda **kw: kw)


def _engine_args(llm) -> dict:
    return llm.engine


def _raise(llm, message: str):
    raise ValueError(message)


def _exit(llm, code: int):
    import os

    os._exit(code)


def _sleep(llm, seconds: float) -> None:
    import time

    time.sleep(seconds)


def test_a_child_engine_answers_in_order_and_keeps_serving_after_a_failed_command(tmp_path):
    from mixinputs.bench.child_engine import ChildEngine, ChildEngineError

    log = tmp_path / "child.log"
    facts = "tests.tooling.test_bench:_engine_args"
    with ChildEngine({"model": "m"}, name="fake", log=log, facts=facts, **FAKE) as child:
        # Sent before the start is answered: the child answers each in turn.
        child.send("generate", requests=[{"prompt": "a bb ccc", "params": {"seed": 1}}])
        bad = {"message": "bad mixinputs_x"}
        child.send("call", fn="tests.tooling.test_bench:_raise", kwargs=bad)
        (out,) = child.answer()
        assert child.facts == {"model": "m"}
        assert out["token_ids"] == [1, 2, 3] and out["text"] == "A BB CCC"
        assert out["num_prompt_tokens"] == 3 and out["num_cached_tokens"] == 0
        with pytest.raises(ChildEngineError, match="fake engine process: ValueError: bad mix"):
            child.answer()
        assert child.generate([{"prompt": "dd", "params": {}}])[0]["token_ids"] == [2]
    # What the child printed on its stdout is its log, never an answer.
    assert "fake engine: starting" in log.read_text()


def test_a_child_engine_that_fails_or_dies_is_a_clear_error():
    from mixinputs.bench.child_engine import ChildEngine, ChildEngineError

    with ChildEngine({"model": "m", "fail": True}, **FAKE) as child:
        child.send("generate", requests=[])
        with pytest.raises(ChildEngineError, match="RuntimeError: fake engine: no such model"):
            child.ready()
        with pytest.raises(ChildEngineError, match="the engine did not start"):
            child.answer()
    with ChildEngine({"model": "m"}, **FAKE) as child:
        with pytest.raises(
            ChildEngineError, match=r"(?s)ended \(exit code 3\):\n.*engine: starting"
        ):
            child.call("tests.tooling.test_bench:_exit", code=3)
        with pytest.raises(ChildEngineError, match="ended"):
            child.call("tests.tooling.test_bench:_engine_args")  # every later command says so too
    child = ChildEngine({"model": "m"}, **FAKE)
    child.ready()
    with pytest.raises(ChildEngineError, match="gave no answer in 1 s"):
        child.call("tests.tooling.test_bench:_sleep", timeout=1, seconds=3)  # too long a command
    child.close()


def test_decode_is_timed_from_the_step_in_which_every_request_has_a_token():
    ids = iter(f"r{i}" for i in range(10))
    got = engine_process.timed_generate(_FakeEngine(4), ["a", "b"], None, ids)
    assert got["tokens"] == 8  # both requests, 4 tokens each
    # Steps 1-2 are prefill (request 1 gets its first token in step 2); after: 3 + 3 tokens
    # minus request 0's last token, which it made in step 2 already.
    assert got["decode_tokens"] == 8 - 2 - 1
    assert 0 < got["decode_seconds"] <= got["seconds"]


def test_plugin_memory_is_none_where_no_moi_state_is_attached():
    worker = SimpleNamespace(model_runner=SimpleNamespace())
    assert engine_process.plugin_memory(worker) is None


@pytest.mark.parametrize("name", BENCH_MODULES)
def test_bench_doctests(name):
    module = importlib.import_module(f"mixinputs.bench.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_the_bench_package_imports_without_vllm():
    import subprocess
    import sys

    code = "import sys, mixinputs.bench; print('vllm' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_measure_warms_every_arm_up_then_times_decode_rounds(capsys):
    runs = []

    def call(arm):
        per_token = {"vanilla": 1 / 120, "standard": 1 / 120, "moi": 1 / 60}[arm]  # moi: half rate

        def run_batch(batch, tokens):
            runs.append((arm, batch, tokens))
            decode_tokens = batch * (tokens - 1)
            decode = per_token * decode_tokens
            return {
                "seconds": decode + 0.25,
                "decode_seconds": decode,
                "decode_tokens": decode_tokens,
            }

        return run_batch

    arms = ["vanilla", "standard", "moi"]
    rates, shown = {}, []
    run.measure({a: call(a) for a in arms}, arms, [(8, 16)], 3, rates, lambda b, n: shown.append(b))
    assert runs[:3] == [(a, 8, run.WARMUP_TOKENS) for a in arms]  # the warm-up, not counted
    assert len(runs) == 3 + 3 * 3 and all(n == 16 for _, _, n in runs[3:])
    expected = {"vanilla": 120.0, "standard": 120.0, "moi": 60.0}
    assert {arm: pytest.approx([rate] * 3) for arm, rate in expected.items()} == rates[(8, 16)]
    assert shown == [8]
    # 3 rounds x (1 + 1 + 2 s of decode + 3 x 0.25 s), scaled from the 4-token warm-up
    assert "about 14 s of rounds" in capsys.readouterr().out
