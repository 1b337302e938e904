"""MoI on vLLM's Model Runner V2, on the CPU V2 runner (the embedded SmolLM2-135M, float32).

vLLM's CPU V2 runner needs a Triton with a CPU backend, which no registry ships for this machine
(vLLM refuses: "Model Runner V2 requires Triton."). The engine here runs vLLM's real V2 code with
its Triton kernels executed by Triton's interpreter (``TRITON_INTERPRET=1``, a "cpu" backend entry
registered so vLLM's check passes). That is slow (about a second a step), so every engine lives in
a child process (``mixinputs.bench.child_engine``, which calls this module's ``_summary``,
``_traced_generate``, ... there), and the test process stays free of the interpreter. One engine
for the module, plus two short reference runs before it: vLLM V2 without the plugin
(``VLLM_PLUGINS`` naming none), and the preemption batch on a cache large enough that nothing is
preempted (side by side on a CPU).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mixinputs.bench.child_engine import ChildEngine, ChildEngineError
from mixinputs.bench.child_engine import generate as generate_batch
from tests.vllm_support import PROMPTS, child_engine, core_beside, model_path, require_vllm

V2 = "tests.engine.test_vllm_v2"  # this module, as child engines import it to call its functions
ENGINE = {
    "dtype": "float32",
    "enforce_eager": True,
    "gpu_memory_utilization": 0.15,
    "kv_cache_memory_bytes": 64 << 20,  # in-process engines: vLLM's RSS-based sizing fails
    "block_size": 32,  # the CPU attention backend's smallest
    # Small (one block is vLLM's null block): the preemption batch does not fit, the others do.
    "num_gpu_blocks_override": 8,
    "max_model_len": 224,
    "max_num_seqs": 8,
    "max_num_batched_tokens": 64,  # long prompts go through chunked prefill
    "enable_prefix_caching": True,
    "seed": 0,
    "disable_log_stats": True,
    # The GPU kit's settings (CUDA graphs, async scheduling), when it runs this module.
    **json.loads(os.environ.get("MIXINPUTS_TEST_ENGINE") or "{}"),
}
MOI = {"mixinputs_beta": 1.0}
PREEMPT_PROMPTS = [f"Story {i}: Once upon a time, in a village by the river," for i in range(8)]
COLD_STOP = {  # tau above any entropy: the think-end token (id 100) is forced at token 13
    "mixinputs_noise": "dirichlet",
    "mixinputs_region": "thinking",
    "mixinputs_think_end": 100,
    "mixinputs_cold_stop_entropy": 100.0,
    "mixinputs_cold_stop_steps": 13,
}
SOFT_GUMBEL = {"mixinputs_mode": "soft", "mixinputs_noise": "gumbel"}
# SwiReasoning (ids stand in for SmolLM2's missing think tokens; a short window and a cap of 1
# make it switch and inject within the run) and Multiplex, whose K draws follow the seed.
SWIR = {
    "mixinputs_mode": "swir",
    "mixinputs_think_end": 100,
    "mixinputs_think_start": 1,
    "mixinputs_swir_linebreak": 198,
    "mixinputs_swir_window": 4,
    "mixinputs_swir_max_switches": 1,
    "mixinputs_swir_convergence": [100],
    "mixinputs_swir_termination": [100, 378, 3403],
}
MULTIPLEX = {"mixinputs_mode": "multiplex", "mixinputs_think_end": 100}
PREEMPT_EXTRAS = [
    MOI,
    None,
    {"mixinputs_beta": 0.5},
    {"mixinputs_mode": "direct"},
    SOFT_GUMBEL,
    COLD_STOP,
    SWIR,
    MULTIPLEX,
]
# Seeded sampling for the method rows: the reference engine draws the same tokens and noise.
PREEMPT_SAMPLING = [
    {},
    {},
    {},
    {},
    {"temperature": 0.8, "seed": 5},
    {"temperature": 0.8, "seed": 6},
    # No top-k / top-p here: vLLM's Triton top-k / top-p kernel does not run in the interpreter.
    {"temperature": 0.6, "seed": 7},
    {"temperature": 1.0, "seed": 8},
]
# Prompts of ~15 tokens: each request needs a second block after ~17 tokens, and the 7 usable
# blocks cannot hold 8 such requests, so some are preempted mid-generation and resumed.
PREEMPT_TOKENS = 24
LONG_PROMPT = " ".join(f"Item {i} is a word about colour number {i}." for i in range(9))


def greedy(extra=None, max_tokens=8, **kw) -> dict:
    return {"max_tokens": max_tokens, "temperature": 0.0, "extra_args": extra, **kw}


def batch(prompts, params) -> list[dict]:
    return [{"prompt": p, "params": q} for p, q in zip(prompts, params, strict=True)]


def preempt_batch() -> list[dict]:
    params = [
        greedy(e, PREEMPT_TOKENS, ignore_eos=True) | s
        for e, s in zip(PREEMPT_EXTRAS, PREEMPT_SAMPLING, strict=True)
    ]
    return batch(PREEMPT_PROMPTS, params)


# -- the engine process -------------------------------------------------------------------------
V2_ENV = {
    "VLLM_USE_V2_MODEL_RUNNER": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # the shim must be in the engine's process
    # No GPU: vLLM's Triton kernels run in Triton's interpreter.
    "TRITON_INTERPRET": "0" if torch.cuda.is_available() else "1",
}


def v2_engine(env: dict[str, str], engine: dict, log: Path) -> ChildEngine:
    """A V2 engine in a child process (started now, answered in order), its log in ``log``."""
    require_vllm()
    return child_engine(engine, {**V2_ENV, **env}, name="V2", log=log, setup=[f"{V2}:_child_setup"])


def summary(engine: ChildEngine) -> dict:
    return engine.call(f"{V2}:_summary")


def traced(engine: ChildEngine, requests: list[dict], path: Path) -> list[dict]:
    """``requests`` as one batch, every MoI step and every fed mixture saved to ``path``."""
    return engine.call(f"{V2}:_traced_generate", requests=requests, trace=str(path))


def ids(outputs: list[dict]) -> list[list[int]]:
    return [o["token_ids"] for o in outputs]


# -- fixtures: two reference runs, then the module's engine ------------------------------------
STANDARD_RUN = batch(PROMPTS, [greedy() for _ in PROMPTS])
SEEDED_RUN = batch(PROMPTS[:2], [{"max_tokens": 8, "temperature": 0.8, "seed": 7}] * 2)


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    return tmp_path_factory.mktemp("v2-logs")


@pytest.fixture(scope="module")
def references(logs):
    """The two reference runs: the standard batches on vLLM V2 without the plugin, and the
    preemption batch with the plugin on a cache where nothing is preempted; side by side where
    ``vllm_support.core_beside`` gives the second a core of its own (one after the other on a
    GPU or a single core)."""
    beside = core_beside()
    with contextlib.ExitStack() as stack:

        def start_uninterrupted() -> ChildEngine:
            roomy = {**ENGINE, "num_gpu_blocks_override": 64}
            bind = {"VLLM_CPU_OMP_THREADS_BIND": beside} if beside else {}
            e = stack.enter_context(v2_engine(bind, roomy, logs / "uninterrupted.log"))
            e.send("generate", requests=preempt_batch())
            return e

        no_plugin = stack.enter_context(
            v2_engine({"VLLM_PLUGINS": "none-at-all"}, ENGINE, logs / "no-plugin.log")
        )
        for run in (STANDARD_RUN, SEEDED_RUN):
            no_plugin.send("generate", requests=run)
        uninterrupted = start_uninterrupted() if beside else None
        standard = [no_plugin.answer() for _ in range(2)]
        no_plugin.close()  # one engine alive at a time where they must not run side by side
        uninterrupted = uninterrupted or start_uninterrupted()
        return {"no_plugin": standard, "uninterrupted": uninterrupted.answer()}


@pytest.fixture(scope="module")
def no_plugin(references):
    return references["no_plugin"]


@pytest.fixture(scope="module")
def uninterrupted(references):
    return references["uninterrupted"]


@pytest.fixture(scope="module")
def engine(logs, no_plugin, uninterrupted):
    with v2_engine({}, ENGINE, logs / "engine.log") as e:
        yield e


# -- engine tests ------------------------------------------------------------------------------
@pytest.mark.vllm
@pytest.mark.slow
def test_v2_runner_serves_with_the_moi_model_state(engine):
    info = summary(engine)
    # V2's runners live in vllm/v1/worker/{gpu,cpu}/model_runner.py (V1's in gpu_model_runner.py).
    assert info["runner_module"] in (
        "vllm.v1.worker.cpu.model_runner",
        "vllm.v1.worker.gpu.model_runner",
    )
    assert info["model_state"] == "MoIModelState"
    assert info["inner_model_state"] == "DefaultModelState"
    assert info["sampler"] == "MoISampler"
    assert info["embedding"] == "MixedInputEmbedding"
    assert info["step_state"] == "MoIStepState"  # the class the V1 runner runs too


@pytest.mark.vllm
@pytest.mark.slow
def test_vllms_memory_profile_runs_moi_worst_step_on_every_slot(engine):
    before = ids(engine.generate(batch(PROMPTS, [greedy(MOI) for _ in PROMPTS])))
    answer = engine.call(f"{V2}:_profile")
    assert answer["disabled"] is None and answer["open"] == 0
    report = answer["profiled"]
    assert report["rows"] == ENGINE["max_num_seqs"] and report["extra_bytes"] > 0
    assert set(report["methods"]) == {"soft", "selar", "multiplex", "swir"}
    assert ids(engine.generate(batch(PROMPTS, [greedy(MOI) for _ in PROMPTS]))) == before


@pytest.mark.vllm
@pytest.mark.slow
def test_standard_requests_equal_vllm_v2_without_the_plugin(engine, no_plugin):
    assert ids(engine.generate(STANDARD_RUN)) == ids(no_plugin[0])
    assert ids(engine.generate(SEEDED_RUN)) == ids(no_plugin[1])


@pytest.mark.vllm
@pytest.mark.slow
def test_mixed_batch_isolation(engine, no_plugin):
    mixed = ids(engine.generate(batch(PROMPTS, [greedy(), greedy(MOI), greedy(), greedy(MOI)])))
    all_moi = ids(engine.generate(batch(PROMPTS, [greedy(MOI)] * 4)))
    reference = ids(no_plugin[0])
    assert mixed[0] == reference[0] and mixed[2] == reference[2]
    assert mixed[1] == all_moi[1] and mixed[3] == all_moi[3]
    assert mixed[1] != reference[1] or mixed[3] != reference[3], "MoI changed nothing"
    inf = ids(engine.generate(batch(PROMPTS, [greedy({"mixinputs_beta": "inf"})] * 4)))
    assert inf == reference  # beta = inf feeds exactly E[y]


def _check_trace(path: Path) -> tuple[int, int, list[dict]]:
    """Every mixture equals ``mixing``'s reference on the same logits, and every forward fed
    exactly the newest mixture of each MoI request. Returns (mixtures checked, feeds checked,
    records)."""
    from tests.vllm_support import check_step_record

    data = torch.load(path)
    newest: dict[str, torch.Tensor] = {}
    mixed = fed = 0
    for rec in data["records"]:
        if "fed" in rec:
            for req_id, row in rec["fed"].items():
                torch.testing.assert_close(row, newest[req_id], rtol=0, atol=0)
                fed += 1
            continue
        mixed += check_step_record(rec, data["weight"], rtol=1e-5)
        newest.update(zip(rec["req_ids"], rec["mixed"], strict=True))
    return mixed, fed, [r for r in data["records"] if "fed" not in r]


@pytest.mark.vllm
@pytest.mark.slow
def test_fed_embeddings_equal_mix_embeddings(engine, tmp_path):
    params = [greedy({"mixinputs_beta": b}, 8, ignore_eos=True) for b in (0.5, 1.0, 4.0)]
    params.append(greedy({"mixinputs_mode": "direct", "mixinputs_top_k": 5}, 8, ignore_eos=True))
    traced(engine, batch(PROMPTS, params), tmp_path / "trace.pt")
    mixed, fed, _ = _check_trace(tmp_path / "trace.pt")
    assert mixed == 4 * 8
    assert fed == 4 * 7  # the last mixture of each request is never fed: it has finished


@pytest.mark.vllm
@pytest.mark.slow
def test_every_method_feeds_its_reference_mixture(engine, tmp_path):
    """Soft thinking, noise, a thinking region, Cold Stop, SwiReasoning, SeLaR and Multiplex side
    by side: each row fed ``mixing.mix_step`` on its logits, and each forward fed each request's
    newest mixture."""

    thinking = {"mixinputs_region": "thinking", "mixinputs_think_end": 100}
    extras = [
        {"mixinputs_mode": "soft"},
        SOFT_GUMBEL,
        {"mixinputs_beta": 2.0, "mixinputs_noise": "dirichlet", **thinking},
        {**COLD_STOP, "mixinputs_cold_stop_steps": 4},
        SWIR,
        {"mixinputs_mode": "selar"},
        MULTIPLEX,
    ]
    params = [greedy(e, 8, ignore_eos=True, temperature=0.8, seed=i) for i, e in enumerate(extras)]
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(len(extras))]
    out = traced(engine, batch(prompts, params), tmp_path / "trace.pt")
    mixed, fed, _ = _check_trace(tmp_path / "trace.pt")
    assert mixed == len(extras) * 8 and fed == len(extras) * 7
    assert ids(out)[3][3] == 100  # Cold Stop after 4 low-entropy thinking steps


# Soft Thinking as released (issue 24): τ above any entropy forces </think> (id 100) at the 4th
# token and, after thinking, ends the request 4 tokens later (EOS; ignore_eos keeps it going).
SOFT_FORCED = {
    "mixinputs_mode": "soft",
    "mixinputs_think_end": 100,
    "mixinputs_cold_stop_entropy": 100.0,
    "mixinputs_cold_stop_steps": 4,
}
SOFT_RELEASE_CASES = [  # (extra_args, sampling): seeded and greedy, with and without noise
    (SOFT_FORCED, {"temperature": 0.6, "seed": 40}),
    ({**SOFT_FORCED, "mixinputs_noise": "gumbel"}, {"temperature": 0.6, "seed": 41}),
    ({**SOFT_FORCED, "mixinputs_noise": "dirichlet"}, {"temperature": 0.6, "seed": 42}),
    (SOFT_FORCED, {"temperature": 0.0}),
    ({**SOFT_FORCED, "mixinputs_cold_stop_entropy": 1.0, "mixinputs_cold_stop_steps": 2},
     {"temperature": 0.6, "seed": 43}),
    (SOFT_FORCED, {"temperature": 0.6, "seed": 44}),  # case 0 with another seed
]  # fmt: skip


@pytest.mark.vllm
@pytest.mark.slow
def test_soft_thinking_follows_its_release(engine, tmp_path):
    """Soft Thinking on the V2 runner against the transcription of its release (Randomized
    Soft Thinking's with noise, ``tests/reference/``): the same tokens and inputs at
    every step, across </think>, Cold Stop and the after-thinking end; Cold Stop fires where the
    transcription's does; without noise two seeds think the same tokens. (V1 and transformers:
    ``tests/engine/test_vllm_methods.py``, ``tests/hf/test_faithful_hf.py``.)"""
    import transformers

    from mixinputs.config import MoIConfig
    from mixinputs.mixing import CarriedState, MethodRows
    from mixinputs.tokens import resolve_tokens
    from tests import faithfulness
    from tests.vllm_support import same_request

    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(len(SOFT_RELEASE_CASES))]
    prompts[5] = prompts[0]
    params = [{"max_tokens": 14, "ignore_eos": True, "extra_args": e, **s}
              for e, s in SOFT_RELEASE_CASES]  # fmt: skip
    out = traced(engine, batch(prompts, params), tmp_path / "trace.pt")
    data = torch.load(tmp_path / "trace.pt")
    records, weight = [r for r in data["records"] if "fed" not in r], data["weight"].float()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_path())
    for i, (extra, sampling) in enumerate(SOFT_RELEASE_CASES):
        config = resolve_tokens(MoIConfig.from_request(extra), tokenizer, weight.shape[0])
        greedy = sampling["temperature"] == 0.0
        steps, engine_cold = [], 0
        for r in records:
            for row, (rid, j) in enumerate(zip(r["req_ids"], r["js"], strict=True)):
                if same_request(rid, out[i]["request_id"]):
                    steps.append(faithfulness.Step(
                        j, r["prior"][row], int(r["sampled"][row]), int(r["emitted"][row]),
                        r["mixed"][row],
                    ))  # fmt: skip
                    rows, state = MethodRows(*r["methods"]), CarriedState(*r["state"])
                    engine_cold += faithfulness.engine_cold_stop(rows, state, row)
        assert [s.emitted for s in steps] == out[i]["token_ids"], i
        counts = faithfulness.soft_thinking(steps, config, weight, sampling.get("seed", 0),
                                            0, 1.0, greedy)  # fmt: skip
        assert counts["cold_stops"] == engine_cold, (i, counts, engine_cold)
        # Only Cold Stop ends thinking here (id 100 never leads): forced in all but case 4.
        assert counts["switches"] == counts["cold_stops"] == (1 if i != 4 else engine_cold)
        if i != 4:  # the forced cases end 4 tokens after thinking, without noise
            assert counts["aborts"] == (config.noise == "none"), (i, counts)
    assert out[0]["token_ids"][:4] == out[5]["token_ids"][:4]  # thinking: no seed enters it
    assert out[0]["token_ids"][8] == tokenizer.eos_token_id  # the request's end


@pytest.mark.vllm
@pytest.mark.slow
def test_chunked_prefill_mixes_only_generated_tokens(engine, tmp_path):
    run = batch([LONG_PROMPT], [greedy(MOI, 6, ignore_eos=True)])
    out = traced(engine, run, tmp_path / "trace.pt")
    assert out[0]["num_prompt_tokens"] > ENGINE["max_num_batched_tokens"]
    mixed, fed, records = _check_trace(tmp_path / "trace.pt")
    assert [r["js"] for r in records] == [[j] for j in range(6)]  # no partial-chunk samples
    assert mixed == 6 and fed == 5


@pytest.mark.vllm
@pytest.mark.slow
def test_prefix_cache_never_serves_mixed_kv_to_standard_requests(engine):
    block = summary(engine)["block_size"]
    text = " ".join(f"Entry {i}: field {i * 7 % 13} holds {i * 31 % 97}." for i in range(20))
    prompt_ids = engine.call(f"{V2}:_tokenize", text=text)[: 2 * block + 5]
    # One block of mixtures takes the sequence past a third full block (3 * block > len + block)
    # that a standard request would be served from, were mixed KV shared.
    moi = [{"prompt_token_ids": prompt_ids, "params": greedy(MOI, block)}]
    generated = engine.generate(moi)[0]["token_ids"]
    follow = [{"prompt_token_ids": prompt_ids + generated, "params": greedy(None, 2)}]
    cached = engine.generate(follow)[0]["num_cached_tokens"]
    assert cached <= len(prompt_ids), "KV built from mixtures was served to a standard request"
    assert cached >= 2 * block, "prompt blocks should still be shared"
    assert engine.generate(moi)[0]["token_ids"] == generated


@pytest.mark.vllm
@pytest.mark.slow
def test_preempted_requests_resume_equal_to_uninterrupted_ones(engine, uninterrupted):
    before = summary(engine)["replayed"]
    out = engine.generate(preempt_batch())
    info = summary(engine)
    assert info["replayed"] > before, "no MoI request was preempted and resumed"
    for i, (got, want) in enumerate(zip(ids(out), ids(uninterrupted), strict=True)):
        assert got == want, f"request {i} ({PREEMPT_EXTRAS[i]}) diverged after preemption"
    cold = ids(out)[PREEMPT_EXTRAS.index(COLD_STOP)]
    assert cold[COLD_STOP["mixinputs_cold_stop_steps"] - 1] == COLD_STOP["mixinputs_think_end"]


@pytest.mark.vllm
@pytest.mark.slow
def test_sampling_prior_greedy_is_standard(engine, no_plugin):
    prior = {"mixinputs_beta": 1.0, "mixinputs_prior": "sampling"}
    out = ids(engine.generate(batch(PROMPTS, [greedy(prior)] * 4)))
    assert out == ids(no_plugin[0])  # a greedy draw is a point mass on y: E[y] exactly


@pytest.mark.vllm
@pytest.mark.slow
def test_bad_request_fields_are_rejected_and_the_engine_keeps_serving(engine, no_plugin):
    bad = batch(PROMPTS[:1], [greedy({"mixinputs_beta": -2})])
    with pytest.raises(ChildEngineError, match="mixinputs_beta"):
        engine.generate(bad)
    assert ids(engine.generate(batch(PROMPTS[:1], [greedy()]))) == ids(no_plugin[0])[:1]


@pytest.mark.vllm
@pytest.mark.slow
def test_state_is_freed_after_every_request(engine):
    info = summary(engine)
    assert info["slots_used"] == 0 and info["parked"] == 0 and info["pending"] == 0


# -- the V2 state with fakes of V2's batch (fast, no engine) ------------------------------------
class FakeBatch:
    """The fields of V2's ``InputBatch`` the plugin reads."""

    def __init__(self, req_ids, slots, computed, scheduled, prefill):
        self.req_ids = list(req_ids)
        self.num_reqs = len(req_ids)
        self.idx_mapping_np = np.array(slots)
        self.num_computed_tokens_np = np.array(computed, dtype=np.int32)
        self.num_scheduled_tokens = np.array(scheduled, dtype=np.int32)
        self.query_start_loc_np = np.concatenate([[0], np.cumsum(scheduled)]).astype(np.int32)
        self.prefill_len_np = np.array(prefill, dtype=np.int32)


class FakeRequestStates:
    def __init__(self, num_slots):
        self.req_id_to_index = {}
        self.prompt_len = type("Uva", (), {"np": np.zeros(num_slots, dtype=np.int32)})()

    def add(self, req_id, slot, prompt_len):
        self.req_id_to_index[req_id] = slot
        self.prompt_len.np[slot] = prompt_len


def params(extra=None, temperature=0.0, top_k=0, top_p=1.0):
    """vLLM's SamplingParams as a worker sees them: the front end resolved the MoI keys."""
    from mixinputs.config import KEY_RESOLVED, MoIConfig

    config = MoIConfig.from_request(extra)
    resolved = {KEY_RESOLVED: config.to_resolved()} if config else extra
    return SimpleNamespace(
        extra_args=resolved, temperature=temperature, top_k=top_k, top_p=top_p, seed=None
    )


def new_state(num_slots=4, vocab=64, hidden=8, max_top_k=20):
    from mixinputs.vllm_plugin.embedding import MixedInputEmbedding
    from mixinputs.vllm_plugin.step_state import MoIStepState
    from mixinputs.vllm_plugin.v2_state import V2MoI

    torch.manual_seed(0)
    embed = MixedInputEmbedding(torch.nn.Embedding(vocab, hidden), num_slots, 32)
    return V2MoI(MoIStepState(embed, max_top_k))


def sample(moi, batch, logits, sampled):
    """Run the step's sample with a sampler that returns ``sampled`` [num_reqs]; returns the
    observed steps (none when nothing mixed)."""
    seen = []
    moi.state.observers.append(seen.append)
    tokens = torch.tensor(sampled).view(-1, 1)
    out = moi.state.sample(lambda lg: SimpleNamespace(sampled_token_ids=tokens), logits, batch)
    moi.state.observers.remove(seen.append)
    assert torch.equal(out.sampled_token_ids, tokens)
    return seen


def test_plan_feeds_newest_mixtures_of_decoding_moi_rows_only():
    moi, reqs = new_state(), FakeRequestStates(4)
    for req_id, slot, extra in (("a", 3, MOI), ("b", 1, None), ("c", 0, MOI)):
        reqs.add(req_id, slot, prompt_len=5)
        moi.add_request(slot, req_id, params(extra))
    # c samples its output 0 from its prefill's last chunk, a its outputs 0 and 1 alone.
    for batch in (FakeBatch(["c"], [0], [3], [2], [5]), FakeBatch(["a"], [3], [0], [5], [5])):
        moi.plan(batch, reqs)
        sample(moi, batch, torch.randn(1, 64), [9])
    batch = FakeBatch(["a"], [3], [5], [1], [5])
    moi.plan(batch, reqs)
    sample(moi, batch, torch.randn(1, 64), [9])
    # a feeds its output 1 (position 6), b decodes, c feeds its output 0 (position 5).
    batch = FakeBatch(["a", "b", "c"], [3, 1, 0], [6, 6, 5], [1, 1, 1], [5, 5, 5])
    moi.plan(batch, reqs)
    assert moi.state.embed.newest_pos.tolist() == [3, 0, 0, 1]  # slot 3 feeds flattened token 0
    (step,) = sample(moi, batch, torch.randn(3, 64), [4, 5, 6])
    assert step.req_ids == ["a", "c"] and step.js == [2, 1]  # a samples output 2 (position 7)
    assert step.sampled.tolist() == [4, 6]
    # A dummy batch (profiling, graph capture) reuses slot numbers under made-up ids.
    dummy = FakeBatch(["dummy_0"], [3], [0], [1], [1])
    moi.plan(dummy, reqs)
    assert moi.state.embed.newest_pos.tolist() == [0, 0, 0, 0]
    assert sample(moi, dummy, torch.randn(1, 64), [1]) == []


def test_partial_prefill_chunks_do_not_sample_and_replays_rebuild_history():
    from mixinputs.mixing import mix_rows

    moi, reqs = new_state(), FakeRequestStates(4)
    reqs.add("a", 2, prompt_len=4)
    moi.add_request(2, "a", params(MOI))
    request = moi.state.requests["a"]
    history, width = request.history, moi.state.width
    rng = np.random.default_rng(0)
    for j in range(3):  # outputs 0..2 were mixed before a preemption
        w = rng.random(width).astype(np.float32)
        history.record(j, rng.integers(0, 64, width), w / w.sum())
    moi.preempting = frozenset({"a"})
    moi.remove_request("a")
    moi.preempting = frozenset()
    moi.add_request(2, "a", params(MOI))
    embed = moi.state.embed
    # Resumed: prefill = prompt (4) + 3 outputs; this chunk computes positions 2..5.
    batch = FakeBatch(["a"], [2], [2], [4], [7])
    moi.plan(batch, reqs)
    assert sample(moi, batch, torch.randn(1, 64), [1]) == []  # position 5 < prefill 7: dropped
    assert embed.replay_count == 2 and embed.replay_pos[:2].tolist() == [3, 4]
    ids = torch.from_numpy(history.ids[:2]).long()
    expected = mix_rows(torch.from_numpy(history.w[:2]), embed.base(ids))
    torch.testing.assert_close(embed.replay[:2], expected)
    # Next chunk: position 6 (output 2) replays, and the sample (output 3) is kept.
    batch = FakeBatch(["a"], [2], [6], [1], [7])
    moi.plan(batch, reqs)
    assert embed.replay_pos[:1].tolist() == [1]
    assert [s.js for s in sample(moi, batch, torch.randn(1, 64), [1])] == [[3]]


def test_mixture_equals_mix_embeddings_and_is_recorded():
    from mixinputs import mix_embeddings

    moi, reqs = new_state(), FakeRequestStates(4)
    configs = [("a", 1, {"mixinputs_beta": 0.5, "mixinputs_top_k": 3}), ("b", 2, MOI)]
    for req_id, slot, extra in configs:
        reqs.add(req_id, slot, prompt_len=3)
        moi.add_request(slot, req_id, params(extra))
    batch = FakeBatch(["a", "b"], [1, 2], [4, 5], [1, 1], [3, 3])
    moi.plan(batch, reqs)
    logits = torch.randn(2, 64)
    sample(moi, batch, logits.clone(), [7, 9])
    state = moi.state
    weight = state.embed.base.weight
    sampled = torch.tensor([[7], [9]])
    for row, (beta, k, slot) in enumerate(((0.5, 3, 1), (1.0, 20, 2))):
        expected = mix_embeddings(logits[row : row + 1], sampled[row, :1], weight, beta, top_k=k)
        torch.testing.assert_close(state.embed.slots[slot], expected[0])
    history = state.requests["a"].history
    assert history.length == 3  # output j = 4 + 1 - 3 = 2 recorded
    assert history.w[2].sum() == pytest.approx(1.0)


def test_preempted_history_is_parked_and_finished_requests_are_forgotten():
    moi, reqs = new_state(), FakeRequestStates(4)
    state = moi.state
    reqs.add("a", 0, prompt_len=3)
    moi.add_request(0, "a", params(MOI))
    state.requests["a"].history.record(0, np.arange(state.width), np.ones(state.width) / 21)
    moi.preempting = frozenset({"a"})
    moi.remove_request("a")
    moi.preempting = frozenset()
    assert state.stats()["parked"] == 1 and not state.is_open.any()
    moi.add_request(3, "a", params(MOI))  # back, in another slot, with its history
    assert state.owner(3) == "a" and state.requests["a"].history.length == 1
    assert state.stats()["parked"] == 0
    moi.remove_request("a")  # finished
    assert state.stats()["alive"] == 0 and not state.is_open.any()
    moi.add_request(0, "b", params(MOI))
    moi.preempting = frozenset({"b"})
    moi.remove_request("b")
    moi.preempting = frozenset()
    moi.remove_request("b")  # V2 removes every new request before adding it
    assert state.stats()["parked"] == 1
    state.forget({"b"})  # aborted while preempted
    assert state.stats()["alive"] == 0


def test_sampler_keeps_the_raw_logits_the_base_sampler_edits_in_place():
    from mixinputs import mix_embeddings
    from mixinputs.vllm_plugin.v2_model_state import MoISampler

    class EditingSampler:  # V2 0.26's sampler edits the logits in place
        def __call__(self, logits, input_batch):
            sampled = logits.argmax(dim=-1, keepdim=True)
            logits.mul_(-1.0)
            return SimpleNamespace(sampled_token_ids=sampled)

    moi, reqs = new_state(), FakeRequestStates(4)
    reqs.add("a", 2, prompt_len=3)
    moi.add_request(2, "a", params(MOI))
    sampler = MoISampler(EditingSampler(), moi.state)
    batch = FakeBatch(["a"], [2], [3], [1], [3])
    moi.plan(batch, reqs)
    logits = torch.randn(1, 64)
    raw = logits.clone()
    out = sampler(logits, batch)
    embed = moi.state.embed
    expected = mix_embeddings(raw, out.sampled_token_ids[:, 0], embed.base.weight, 1.0)
    torch.testing.assert_close(embed.slots[2], expected[0])
    # A call for another batch (a dummy sampler run) never uses the plan made for a's next
    # step: it only samples; a's mixture (slot 2, the slot the dummy batch names too) and its
    # history stay as they were.
    moi.plan(FakeBatch(["a"], [2], [4], [1], [3]), reqs)
    recorded = moi.state.requests["a"].history.length
    dummy = torch.randn(1, 64)
    out = sampler(dummy.clone(), FakeBatch(["x"], [2], [0], [1], [1]))
    assert out.sampled_token_ids.flatten().tolist() == [int(dummy.argmax())]
    torch.testing.assert_close(embed.slots[2], expected[0], rtol=0, atol=0)
    assert moi.state.requests["a"].history.length == recorded


def test_model_state_wrapper_delegates_and_yields_to_a_custom_sampler():
    from mixinputs.vllm_plugin.v2_model_state import MoIModelState, MoISampler

    class Inner:
        max_num_reqs = 4

        def custom_sampler(self, sampler):
            return None

    moi = new_state()
    wrapper = MoIModelState(Inner(), moi)
    wrapper._mamba_ctx = "set"  # vLLM resets attributes of its model state
    assert wrapper._inner._mamba_ctx == "set" and wrapper.max_num_reqs == 4
    sampler, rejection = wrapper.custom_sampler(object())
    assert isinstance(sampler, MoISampler) and rejection is None
    Inner.custom_sampler = lambda self, sampler: ("theirs", None)
    assert MoIModelState(Inner(), moi).custom_sampler(object()) == ("theirs", None)
    moi.add_request(0, "m", params(MOI))
    assert moi.state.disabled and not moi.state.is_open.any()


# -- the engine process's side (called there by name: ``V2``) ------------------------------------
def _child_setup() -> None:
    """Before the engine starts: without a GPU, let vLLM see a Triton CPU backend; kernels then
    run in Triton's interpreter."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        return
    from triton.backends import Backend, backends
    from triton.backends.nvidia.compiler import CUDABackend

    class InterpreterDriver:
        @classmethod
        def is_active(cls) -> bool:
            return False

    backends.setdefault("cpu", Backend(compiler=CUDABackend, driver=InterpreterDriver))


def _runner(llm):
    core = llm.llm_engine.engine_core.engine_core
    return core.model_executor.driver_worker.worker.model_runner


def _summary(llm) -> dict:
    from mixinputs.vllm_plugin.attach import step_state_of

    runner = _runner(llm)
    state = runner.model_state
    info = {
        "runner": type(runner).__name__,
        "runner_module": type(runner).__module__,
        "model_state": type(state).__name__,
        "inner_model_state": type(getattr(state, "_inner", state)).__name__,
        "sampler": type(runner.sampler).__name__,
        "embedding": type(runner.model.model.embed_tokens).__name__,
        "block_size": llm.llm_engine.vllm_config.cache_config.block_size,
    }
    moi = step_state_of(runner)
    if moi is not None:
        info.update(moi.stats(), step_state=type(moi).__name__)
    return info


def _profile(llm) -> dict:
    """vLLM's memory profile run again (eager CPU engines skip it at start-up)."""
    from mixinputs.vllm_plugin.attach import step_state_of

    runner = _runner(llm)
    moi = step_state_of(runner)
    moi.profiled = None
    runner.profile_run()
    return {"profiled": moi.profiled, "open": moi.num_open, "disabled": moi.disabled}


def _tokenize(llm, text: str) -> list[int]:
    return llm.get_tokenizer()(text).input_ids


def _traced_generate(llm, requests: list[dict], trace: str) -> list[dict]:
    """``child_engine.generate`` with every MoI step and every fed mixture (each forward's
    newest mixture per MoI request) recorded, saved to ``trace`` with the embedding weight."""
    from mixinputs.vllm_plugin.attach import step_state_of
    from tests.vllm_support import record_of

    moi = step_state_of(_runner(llm))
    records: list[dict] = []

    def record_step(step):
        records.append(record_of(step))

    def record_fed(module, args, output):
        rows = {}
        for slot in torch.nonzero(module.newest_pos).flatten().tolist():
            position = int(module.newest_pos[slot]) - 1
            rows[moi.owner(slot)] = output.reshape(-1, output.shape[-1])[position].clone()
        if rows:
            records.append({"fed": rows})

    moi.observers.append(record_step)
    hook = moi.embed.register_forward_hook(record_fed)
    try:
        outputs = generate_batch(llm, requests)
    finally:
        hook.remove()
        moi.observers.remove(record_step)
    weight = moi.embed.base.weight.detach().clone()
    torch.save({"records": records, "weight": weight}, trace)
    return outputs
