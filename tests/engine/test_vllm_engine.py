"""MoI inside a real vLLM engine (CPU, the embedded SmolLM2-135M): one engine for the module."""

from __future__ import annotations

import pytest
import torch

from tests.vllm_support import (
    PROMPTS,
    embedding_weight,
    require_vllm,
    run_engine_subprocess,
    shutdown,
    start_llm,
    summary,
    texts,
    token_ids,
    trace,
)

vllm = require_vllm()
from vllm import SamplingParams  # noqa: E402

from mixinputs import mix_embeddings  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

LONG_PROMPT = " ".join(f"Item {i} is a word about colour number {i}." for i in range(60))
MOI = {"mixinputs_beta": 1.0}


def greedy(extra=None, max_tokens=24, **kw) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, extra_args=extra, **kw)


@pytest.fixture(scope="module")
def llm(no_plugin_run):
    # The no-plugin reference (tests/conftest.py) runs beside this engine's start.
    # A small token budget makes long prompts go through chunked prefill.
    engine = start_llm(max_num_batched_tokens=256, enable_prefix_caching=True)
    yield engine
    shutdown(engine)


@pytest.fixture(scope="module")
def block_size(llm):
    return llm.llm_engine.vllm_config.cache_config.block_size


def generate(llm, prompts, params):
    return llm.generate(prompts, params, use_tqdm=False)


# -- isolation --------------------------------------------------------------------------------
# no_plugin_reference (tests/conftest.py): PROMPTS greedy and one seeded, without the plugin.
def test_standard_requests_equal_vllm_without_the_plugin(llm, no_plugin_reference):
    params = [greedy() for _ in PROMPTS] + [SamplingParams(max_tokens=24, temperature=0.8, seed=7)]
    out = generate(llm, [*PROMPTS, PROMPTS[1]], params)
    assert token_ids(out) == [r["token_ids"] for r in no_plugin_reference]
    for o in out:  # the plugin never forces log-probs into anyone's output
        assert o.outputs[0].logprobs is None


def test_mixed_batch_isolation(llm, no_plugin_reference):
    mixed_params = [greedy(), greedy(MOI), greedy(), greedy(MOI)]
    mixed = token_ids(generate(llm, PROMPTS, mixed_params))
    all_moi = token_ids(generate(llm, PROMPTS, [greedy(MOI) for _ in PROMPTS]))
    reference = [r["token_ids"] for r in no_plugin_reference]
    assert mixed[0] == reference[0] and mixed[2] == reference[2]
    assert mixed[1] == all_moi[1] and mixed[3] == all_moi[3]
    assert mixed[1] != reference[1] or mixed[3] != reference[3], "MoI changed nothing"


def test_beta_inf_is_standard_and_betas_differ_per_row(llm):
    standard = token_ids(generate(llm, PROMPTS, [greedy() for _ in PROMPTS]))
    inf = token_ids(generate(llm, PROMPTS, [greedy({"mixinputs_beta": "inf"}) for _ in PROMPTS]))
    assert inf == standard
    prompt = [PROMPTS[1]] * 4
    betas = [0.0, 0.25, 4.0, float("inf")]
    per_row = texts(generate(llm, prompt, [greedy({"mixinputs_beta": b}, 32) for b in betas]))
    assert len(set(per_row)) >= 3, per_row


def test_direct_mode_and_top_k(llm):
    base = texts(generate(llm, PROMPTS[:2], [greedy(MOI)] * 2))
    direct = texts(generate(llm, PROMPTS[:2], [greedy({"mixinputs_mode": "direct"})] * 2))
    small_k = texts(generate(llm, PROMPTS[:2], [greedy({**MOI, "mixinputs_top_k": 2})] * 2))
    assert direct != base and small_k != base


# -- exactness ----------------------------------------------------------------------------------
def _check_fed_mixtures(records, weight):
    checked = 0
    for rec in records:
        betas = rec["beta"]
        expected = mix_embeddings(
            rec["prior"], rec["sampled"], weight, betas, mode=rec["direct"], top_k=20
        )
        torch.testing.assert_close(
            rec["mixed"].float(), expected.to(rec["mixed"].dtype).float(), rtol=2**-7, atol=1e-6
        )
        checked += len(betas)
    return checked


def _logprobs(output) -> list[dict[int, float]]:
    return [{t: lp.logprob for t, lp in step.items()} for step in output.outputs[0].logprobs]


@pytest.mark.parametrize(
    "extra",
    [
        {"mixinputs_beta": 1.0, "mixinputs_top_k": 5},
        {"mixinputs_mode": "direct", "mixinputs_top_k": 4},
    ],
    ids=["moi-k5", "direct-k4"],
)
def test_a_request_mixes_the_same_alone_and_in_any_batch(llm, extra):
    """Batch invariance: the same seeded request beside standard rows and beside rows with other
    K, beta, mode and prior gives identical tokens and log-probs (float32 engine). Sampling at
    temperature 2 from vLLM's top-15 often picks a token outside the row's own K but inside the
    batch's largest K, the case a batch-wide candidate width got wrong. The batch keeps its
    size (every row runs its full length): the model's own forward is only batch-invariant at
    a fixed batch size on some CPUs (a 1-row matrix product takes another kernel)."""
    params = SamplingParams(
        temperature=2.0, top_k=15, seed=11, max_tokens=32, logprobs=3, extra_args=extra
    )
    neighbours = [
        ("Write a short poem about the sea:", {"mixinputs_beta": 0.5, "mixinputs_top_k": 20}),
        ("1, 2, 3, 4,", {"mixinputs_mode": "direct", "mixinputs_top_k": 3}),
        (
            "Question: what is 17 + 25? Answer:",
            {"mixinputs_top_k": 12, "mixinputs_prior": "sampling"},
        ),
        ("The capital of France is", None),
    ]

    def run(with_methods: bool):
        prompts = [LONG_PROMPT[:200]] + [p for p, _ in neighbours]
        others = [
            SamplingParams(
                temperature=0.7, top_p=0.9, seed=3, max_tokens=32, ignore_eos=True,
                extra_args=x if with_methods else None,
            )
            for _, x in neighbours
        ]  # fmt: skip
        return generate(llm, prompts, [params, *others])[0]

    alone, beside = run(False), run(True)
    assert list(alone.outputs[0].token_ids) == list(beside.outputs[0].token_ids)
    assert _logprobs(alone) == _logprobs(beside)


def test_fused_triton_step_drives_the_engine_like_the_reference(llm):
    """The fused Triton step (the CUDA path) run here under Triton's interpreter, in an engine
    of its own: MoI, direct, sampling-prior and soft-input method rows with different K give the
    same tokens as this module's engine, which mixes with the PyTorch reference."""
    moi_rows = [
        {"mixinputs_beta": 1.0, "mixinputs_top_k": 5},
        {"mixinputs_mode": "direct", "mixinputs_top_k": 20},
        {"mixinputs_beta": 0.5, "mixinputs_top_k": 12, "mixinputs_prior": "sampling"},
        # The soft-input methods go through the same kernels (noise drawn from the seed).
        {"mixinputs_beta": 1.0, "mixinputs_noise": "gumbel"},
        {
            "mixinputs_mode": "direct",
            "mixinputs_top_k": 7,
            "mixinputs_region": "thinking",
            "mixinputs_think_end": 100,
        },
    ]
    prompts = [*PROMPTS, PROMPTS[0]]
    reference = generate(llm, prompts, [greedy(x, max_tokens=12, seed=3) for x in moi_rows])
    info: dict = {}
    fused = run_engine_subprocess(
        [
            {
                "prompt": p,
                "params": {"max_tokens": 12, "temperature": 0.0, "seed": 3, "extra_args": x},
            }
            for p, x in zip(prompts, moi_rows, strict=True)
        ],
        env={"TRITON_INTERPRET": "1"},
        engine={"max_num_batched_tokens": 256},
        info=info,
    )
    assert info == {"moi": True, "fused": True}
    assert [r["token_ids"] for r in fused] == token_ids(reference)


def test_fed_embeddings_equal_mix_embeddings(llm):
    params = [greedy({"mixinputs_beta": b}, 16, ignore_eos=True) for b in (0.5, 1.0, 4.0)]
    params.append(greedy({"mixinputs_mode": "direct"}, 16, ignore_eos=True))
    _, records = trace(llm, lambda: generate(llm, PROMPTS, params))
    assert records, "no MoI step was traced"
    assert _check_fed_mixtures(records, embedding_weight(llm)) == 4 * 16


def _teacher_forced_gap(llm, prompt, extra, steps=12):
    """Max |engine logits - transformers float32 logits| along a decode fed the engine's own
    inputs (its mixtures, teacher-forced), and the number of greedy disagreements."""
    transformers = pytest.importorskip("transformers")
    from tests.vllm_support import model_path

    run = [greedy(extra, steps, ignore_eos=True)]
    out, records = trace(llm, lambda: generate(llm, [prompt], run))
    model = transformers.AutoModelForCausalLM.from_pretrained(model_path(), dtype=torch.float32)
    ids = torch.tensor([out[0].prompt_token_ids])
    gap, disagree = 0.0, 0
    with torch.no_grad():
        step = model(input_ids=ids, use_cache=True)
        for rec in records:
            engine_logits = rec["prior"][0]
            hf_logits = step.logits[0, -1]
            gap = max(gap, float((engine_logits - hf_logits).abs().max()))
            disagree += int(engine_logits.argmax() != hf_logits.argmax())
            fed = rec["mixed"][0].float()[None, None]  # the engine's input for the next step
            step = model(inputs_embeds=fed, past_key_values=step.past_key_values, use_cache=True)
    return gap, disagree, len(records)


def test_following_logits_match_transformers_teacher_forced(llm):
    vanilla_gap, _, n_plain = _teacher_forced_gap(llm, PROMPTS[1], {"mixinputs_beta": "inf"})
    moi_gap, disagree, n_moi = _teacher_forced_gap(llm, PROMPTS[1], {"mixinputs_beta": 0.5})
    assert n_plain == n_moi == 12
    # MoI's inputs add no error of their own: the gap stays within vanilla vLLM's bf16 gap.
    assert moi_gap <= 1.5 * vanilla_gap + 0.25, (moi_gap, vanilla_gap)
    assert disagree <= 1


# -- engine features ------------------------------------------------------------------------------
def test_chunked_prefill_mixes_only_generated_tokens(llm):
    tokens = len(llm.get_tokenizer()(LONG_PROMPT).input_ids)
    assert tokens > 256, "the prompt must not fit one step's token budget"
    run = [greedy(MOI, 10, ignore_eos=True)]
    out, records = trace(llm, lambda: generate(llm, [LONG_PROMPT], run))
    assert [r["js"] for r in records] == [[j] for j in range(10)]  # no partial-chunk samples
    assert _check_fed_mixtures(records, embedding_weight(llm)) == 10
    assert len(out[0].outputs[0].token_ids) == 10


def test_prefix_cache_never_serves_mixed_kv_to_standard_requests(llm, block_size):
    tok = llm.get_tokenizer()
    # A text no other test sends: its continuation must not be cached as anyone's prompt.
    text = " ".join(f"Entry {i}: field {i * 7 % 13} holds {i * 31 % 97}." for i in range(80))
    prompt_ids = tok(text).input_ids[: 3 * block_size + 5]
    first = generate(llm, [{"prompt_token_ids": prompt_ids}], [greedy(MOI, 2 * block_size)])
    generated = list(first[0].outputs[0].token_ids)
    # A standard request whose prompt is the MoI request's prompt + its generated text.
    follow = generate(llm, [{"prompt_token_ids": prompt_ids + generated}], [greedy(None, 4)])
    cached = follow[0].num_cached_tokens or 0
    assert cached <= len(prompt_ids), "KV built from mixtures was served to a standard request"
    assert cached >= 3 * block_size, "prompt blocks should still be shared"
    # The same MoI request again may reuse its own blocks and gives the same text.
    again = generate(llm, [{"prompt_token_ids": prompt_ids}], [greedy(MOI, 2 * block_size)])
    assert list(again[0].outputs[0].token_ids) == generated


def test_seeded_sampling_is_reproducible(llm):
    def run(seed):
        params = SamplingParams(
            max_tokens=24, temperature=0.9, top_p=0.95, seed=seed, extra_args=MOI
        )
        return texts(generate(llm, PROMPTS[:2], [params, params]))

    a, b, c = run(11), run(11), run(12)
    assert a == b
    assert a != c


def test_sampling_prior_mixes_the_distribution_the_token_was_drawn_from(llm):
    prior = {"mixinputs_beta": 0.5, "mixinputs_prior": "sampling"}
    params = SamplingParams(
        max_tokens=12, temperature=0.5, top_k=3, seed=3, ignore_eos=True, extra_args=prior
    )
    _, records = trace(llm, lambda: generate(llm, PROMPTS[:2], [params] * 2))
    weight = embedding_weight(llm)
    checked = 0
    for rec in records:
        scaled = rec["prior"]  # the sampler's logits: raw / temperature
        third = scaled.topk(3, dim=-1).values[:, -1:]
        allowed = scaled.masked_fill(scaled < third, float("-inf"))  # vLLM keeps ties at the k-th
        assert (allowed.argmax(-1) == scaled.argmax(-1)).all()
        expected = mix_embeddings(allowed, rec["sampled"], weight, rec["beta"], top_k=20)
        torch.testing.assert_close(
            rec["mixed"].float(), expected.to(rec["mixed"].dtype).float(), rtol=2**-7, atol=1e-6
        )
        checked += len(rec["sampled"])
    assert checked == 2 * 12
    raw = SamplingParams(
        max_tokens=12,
        temperature=0.5,
        top_k=3,
        seed=3,
        ignore_eos=True,
        extra_args={**prior, "mixinputs_prior": "raw"},
    )
    sampled_texts = texts(generate(llm, PROMPTS[:2], [params] * 2))
    assert texts(generate(llm, PROMPTS[:2], [raw] * 2)) != sampled_texts


def test_n_greater_than_one_and_structured_output(llm):
    params = SamplingParams(n=3, max_tokens=16, temperature=1.0, seed=5, extra_args=MOI)
    (out,) = generate(llm, [PROMPTS[1]], [params])
    assert len(out.outputs) == 3 and len({c.text for c in out.outputs}) > 1
    from vllm.sampling_params import StructuredOutputsParams

    choice = SamplingParams(
        max_tokens=8,
        temperature=0.0,
        extra_args=MOI,
        structured_outputs=StructuredOutputsParams(choice=["yes", "no"]),
    )
    (answer,) = generate(llm, ["Is the sky blue? Answer yes or no:"], [choice])
    assert answer.outputs[0].text in ("yes", "no")


def test_abort_mid_flight_frees_state_and_keeps_others(llm):
    engine = llm.llm_engine
    for i, extra in enumerate([MOI, MOI, None]):
        engine.add_request(f"abort-{i}", PROMPTS[i], greedy(extra, 40))
    for _ in range(5):
        engine.step()
    engine.abort_request(["abort-0"])
    finished = {}
    while engine.has_unfinished_requests():
        for o in engine.step():
            if o.finished:
                finished[o.request_id] = o
    assert set(finished) == {"abort-1", "abort-2"}
    assert all(
        len(o.outputs[0].token_ids) == 40 or o.outputs[0].finish_reason == "stop"
        for o in finished.values()
    )
    state = summary(llm)
    assert state["alive"] == 0 and state["slots_used"] == 0 and state["requests"] == 0
    assert state["step_state"] == "MoIStepState"  # the class Model Runner V2 runs too


@pytest.mark.parametrize(
    "extra, key",
    [
        ({"mixinputs_beta": -1.0}, "mixinputs_beta"),
        ({"mixinputs_beta": float("nan")}, "mixinputs_beta"),
        ({"mixinputs_beta": "high"}, "mixinputs_beta"),
        ({"mixinputs_mode": "blend"}, "mixinputs_mode"),
        ({"mixinputs_top_k": 0}, "mixinputs_top_k"),
        ({"mixinputs_top_k": 10_000}, "mixinputs_top_k"),
        ({"mixinputs_prior": "hot"}, "mixinputs_prior"),
        ({"mixinputs_betta": 1.0}, "mixinputs_betta"),
    ],
)
def test_bad_request_fields_are_rejected_and_the_engine_keeps_serving(llm, extra, key):
    with pytest.raises(ValueError, match=key):
        generate(llm, PROMPTS[:1], [greedy(extra, 4)])
    assert len(texts(generate(llm, PROMPTS[:1], [greedy(MOI, 4)]))[0]) > 0
    assert summary(llm)["alive"] == 0


def test_environment_default_matches_per_request(llm):
    """MIXINPUTS_BETA makes MoI the default; a request opts out with mixinputs_mode='off'."""
    requests = [{"prompt": p, "params": {"max_tokens": 24, "temperature": 0.0}} for p in PROMPTS]
    requests[0]["params"]["extra_args"] = {"mixinputs_mode": "off"}
    out = run_engine_subprocess(
        requests, env={"MIXINPUTS_BETA": "1.0"}, engine={"max_num_batched_tokens": 256}
    )
    here = generate(llm, PROMPTS, [greedy(), greedy(MOI), greedy(MOI), greedy(MOI)])
    assert [r["token_ids"] for r in out] == token_ids(here)


def test_transformers_path_agrees_with_the_engine(llm):
    """The first decode steps of `mixinputs.hf` feed what the vLLM plugin feeds."""
    transformers = pytest.importorskip("transformers")
    from mixinputs.hf import enable_moi
    from tests.vllm_support import model_path

    out, records = trace(
        llm, lambda: generate(llm, [PROMPTS[1]], [greedy(MOI, 4, ignore_eos=True)])
    )
    model = transformers.AutoModelForCausalLM.from_pretrained(model_path(), dtype=torch.float32)
    ids = torch.tensor([out[0].prompt_token_ids])
    fed = []
    with enable_moi(model, beta=1.0):
        hook = model.get_input_embeddings().register_forward_hook(
            lambda m, a, o: fed.append(o.detach().clone())
        )
        hf_out = model.generate(
            ids, max_new_tokens=4, do_sample=False, pad_token_id=2, eos_token_id=None
        )
        hook.remove()
    hf_tokens = hf_out[0, ids.shape[1] :].tolist()
    assert hf_tokens[:3] == list(out[0].outputs[0].token_ids)[:3]
    for step in range(3):  # fed[0] is the prompt; fed[step + 1] the mixture after token `step`
        engine_mix = records[step]["mixed"][0].float()
        torch.testing.assert_close(fed[step + 1][0, 0], engine_mix, rtol=0.05, atol=0.01)


def test_compile_cache_key_differs_with_the_plugin(llm):
    from vllm.config import VllmConfig

    config = llm.llm_engine.vllm_config
    name = "compute_hash" if "compute_hash" in VllmConfig.__dict__ else "compile_factors"  # 0.34
    key = getattr(config, name)
    original = getattr(VllmConfig, name).__mixinputs_original__
    assert key() != original(config)
    assert key() == key()  # still deterministic


def _profile(worker):
    """vLLM's memory profile run again in the worker (eager CPU engines with a KV cache in
    bytes skip it at start-up; compiled and GPU engines run it before sizing the KV cache)."""
    from mixinputs.vllm_plugin.attach import step_state_of

    state = step_state_of(worker.model_runner)
    state.profiled = None
    worker.model_runner.profile_run()
    return state.profiled, state.num_open, state.disabled


def test_vllms_memory_profile_runs_moi_worst_step_on_every_slot(llm):
    before = token_ids(generate(llm, PROMPTS, [greedy(MOI) for _ in PROMPTS]))
    report, still_open, disabled = llm.collective_rpc(_profile)[0]
    assert disabled is None and still_open == 0
    assert report["rows"] == llm.llm_engine.vllm_config.scheduler_config.max_num_seqs
    assert set(report["methods"]) == {"soft", "selar", "multiplex", "swir"}
    assert report["extra_bytes"] > 0
    # The profile leaves nothing behind: MoI decodes exactly as before it.
    assert token_ids(generate(llm, PROMPTS, [greedy(MOI) for _ in PROMPTS])) == before
