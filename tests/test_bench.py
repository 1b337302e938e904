"""`mixinputs bench`: the round schedule, the ratios, config-only models, and the vanilla arm
really running vLLM without the plugin (one short run with both engines)."""

from __future__ import annotations

import json

import pytest

from mixinputs import bench
from mixinputs.cli import main


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
