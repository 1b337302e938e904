"""`mixinputs bench`: the round schedule, the ratios, config-only models, and the vanilla arm
really running vLLM without the plugin (one short run with both engines)."""

from __future__ import annotations

import json

import pytest

from mixinputs import bench
from mixinputs.cli import main
from mixinputs.config import MoIConfig


def test_rounds_rotate_so_no_arm_always_goes_first():
    calls = []
    arms = {name: (lambda n=name: calls.append(n) or 1.0) for name in ("v", "s", "m")}
    times = bench.interleaved_arms(arms, rounds=3, warmup=1)
    assert calls[:3] == ["v", "s", "m"]  # the warm-up round, not counted
    assert calls[3:] == ["v", "s", "m", "s", "m", "v", "m", "v", "s"]
    assert {k: len(v) for k, v in times.items()} == {"v": 3, "s": 3, "m": 3}


def test_ratios_are_medians_of_per_round_ratios():
    # tok/s per round: vanilla 100, 100, 100; standard 99, 98, 100; MoI 90, 99, 95
    r = bench._result("vllm", 8, 32, [99, 98, 100], [90, 99, 95], [100, 100, 100])
    assert r.moi_vs_vanilla == pytest.approx(0.95)
    assert r.standard_vs_vanilla == pytest.approx(0.99)
    assert r.ratio == pytest.approx(statistics_median([90 / 99, 99 / 98, 95 / 100]))
    assert r.vanilla_tpot_ms == pytest.approx(80.0)  # 8 requests at 100 tok/s
    assert bench._result("hf", 1, 4, [1.0], [1.0]).moi_vs_vanilla is None


def statistics_median(xs):
    return sorted(xs)[len(xs) // 2]


def test_config_only_folder_gets_dummy_weights_and_token_id_prompts(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert bench.model_files(str(tmp_path)) == {"load_format": "dummy", "skip_tokenizer_init": True}
    (tmp_path / "tokenizer.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert bench.model_files(str(tmp_path)) == {}
    prompts = bench._prompts(3, token_ids=True)
    assert len({tuple(p["prompt_token_ids"]) for p in prompts}) == 3


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
    assert result["vanilla_tok_s"] > 0 and result["moi_tok_s"] > 0
    assert len(result["moi_vs_vanilla_ratios"]) == 1
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
        ["moi@thinking", "soft@thinking:cold_stop_entropy=0.01", "moi@thinking:think_end=7"],
        1.0,
        str(tmp_path),
    )
    assert arms["moi@thinking"].to_request()["mixinputs_think_end"] == 499
    assert arms["soft@thinking(cold_stop_entropy=0.01)"].think_end == 499
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
