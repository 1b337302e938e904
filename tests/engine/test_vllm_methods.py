"""The soft-input family per request in a real vLLM engine (CPU, the embedded SmolLM2-135M):
soft thinking, a thinking region, Cold Stop and noisy mixtures, side by side in one batch.

SmolLM2 is not a reasoning model, so the think-end token is given by id
(``mixinputs_think_end``): a token it emits in these prompts, or one it never emits.
"""

from __future__ import annotations

import pytest
import torch

from mixinputs.mixing import MethodRows
from tests.vllm_support import (
    PROMPTS,
    check_step_record,
    embedding_weight,
    require_vllm,
    same_request,
    shutdown,
    start_llm,
    summary,
    token_ids,
    trace,
)

vllm = require_vllm()
from vllm import SamplingParams  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

NEVER = 100  # a token id the model does not emit here: the thinking region stays open
# SwiReasoning's and SeLaR's sampling recipe (their run.py: T 0.6, top-k 20, top-p 0.95).
RECIPE = {"temperature": 0.6, "top_k": 20, "top_p": 0.95}


def methods(think_end: int = NEVER) -> dict[str, dict]:
    """One request's extra_args per method; every method of the family, and standard."""
    thinking = {"mixinputs_region": "thinking", "mixinputs_think_end": think_end}
    return {
        "standard": None,
        "moi": {"mixinputs_beta": 1.0},
        "soft": {"mixinputs_mode": "soft"},
        "soft+gumbel": {"mixinputs_mode": "soft", "mixinputs_noise": "gumbel"},
        "soft+dirichlet@thinking": {
            "mixinputs_mode": "soft",
            "mixinputs_noise": "dirichlet",
            "mixinputs_noise_temperature": 0.5,
            **thinking,
        },
        "moi+gumbel@thinking": {"mixinputs_beta": 2.0, "mixinputs_noise": "gumbel", **thinking},
        "direct@thinking": {"mixinputs_mode": "direct", "mixinputs_top_k": 7, **thinking},
        # SmolLM2 has no <think> / </think>: ids stand in (NEVER: the row never locks itself).
        "swir": SWIR,
        "selar": {"mixinputs_mode": "selar"},
        "multiplex": {"mixinputs_mode": "multiplex", "mixinputs_think_end": think_end},
    }


# A short window and a cap of 1, so every branch of SwiReasoning runs within a few dozen tokens.
SWIR = {
    "mixinputs_mode": "swir",
    "mixinputs_think_end": NEVER,
    "mixinputs_think_start": 1,
    "mixinputs_swir_linebreak": 198,
    "mixinputs_swir_window": 3,
    "mixinputs_swir_max_switches": 1,
    "mixinputs_swir_convergence": [NEVER],
    "mixinputs_swir_termination": " The final answer is",
    "mixinputs_swir_answer_tokens": 8,
    "mixinputs_swir_ramp_tokens": 64,
}


def sampled(extra, seed=0, max_tokens=16, **kw) -> SamplingParams:
    return SamplingParams(
        temperature=0.8, seed=seed, max_tokens=max_tokens, ignore_eos=True, extra_args=extra, **kw
    )


@pytest.fixture(scope="module")
def llm():
    # No chunked prefill: vLLM 0.32's CPU runner cannot rewind a seeded request's generator
    # after a partial-prefill sample ("CPU Generator does not use offset").
    engine = start_llm(enable_chunked_prefill=False, max_num_batched_tokens=1024)
    yield engine
    shutdown(engine)


def generate(llm, prompts, params):
    return llm.generate(prompts, params, use_tqdm=False)


def one_token(llm, text: str) -> int:
    ids = llm.get_tokenizer().encode(text, add_special_tokens=False)
    assert len(ids) == 1, (text, ids)
    return ids[0]


def test_every_method_feeds_its_reference_mixture(llm):
    """Each row of a batch holding every method fed exactly ``mixing.mix_step`` on its logits,
    from its own settings and carried state."""
    if llm.llm_engine.model_config.dtype != torch.float32:
        pytest.skip("compared at float32 precision")
    extras = [e for e in methods().values() if e is not None]
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(len(extras))]
    params = [sampled(e, seed=i, max_tokens=8) for i, e in enumerate(extras)]
    _, records = trace(llm, lambda: generate(llm, prompts, params))
    weight = embedding_weight(llm)
    checked = sum(check_step_record(r, weight, rtol=1e-5) for r in records)
    assert checked == len(extras) * 8


def test_each_method_is_the_same_alone_and_in_a_batch_of_all(llm):
    """Seeded requests: every method (noise included) feeds bit for bit the same inputs and
    emits the same tokens alone and beside every other method; the standard row equals standard
    decoding."""
    if llm.llm_engine.model_config.dtype != torch.float32:
        pytest.skip("batch invariance is asserted on a float32 engine")
    table = methods()
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(len(table))]
    params = [sampled(e, seed=10 + i, logprobs=2) for i, e in enumerate(table.values())]
    together, traced = trace(llm, lambda: generate(llm, prompts, params))
    for i, name in enumerate(table):
        # "Alone": every other row standard, so the batch keeps its size (the model's own
        # forward is batch-invariant only at a fixed batch size on some CPUs).
        others = [sampled(None, seed=10 + n, logprobs=2) for n in range(len(table))]
        alone, traced_alone = trace(
            llm, lambda i=i, o=others: generate(llm, prompts, [*o[:i], params[i], *o[i + 1 :]])
        )
        assert list(alone[i].outputs[0].token_ids) == list(together[i].outputs[0].token_ids), name
        fed_alone = fed_by(traced_alone, alone[i].request_id)
        assert fed_alone.keys() == fed_by(traced, together[i].request_id).keys()
        for j, row in fed_alone.items():  # what the plugin controls: bit for bit
            assert torch.equal(row, fed_by(traced, together[i].request_id)[j]), (name, j)
        # The log-probs too, to float32 rounding: vLLM's CPU forward itself can round a row
        # differently when its neighbours' values differ (seen on an AVX-512 CPU).
        for a, b in zip(_logprobs(alone[i]), _logprobs(together[i]), strict=True):
            assert a.keys() == b.keys(), name
            assert all(abs(a[t] - b[t]) < 1e-4 for t in a), (name, a, b)
    # Different methods do differ (on the same prompt and seed).
    same_prompt = [sampled(e, seed=3) for e in table.values()]
    outs = token_ids(generate(llm, [PROMPTS[1]] * len(table), same_prompt))
    assert len({tuple(o) for o in outs}) >= len(table) - 1, outs
    assert summary(llm)["alive"] == 0


@pytest.mark.parametrize("mode", ["swir", "selar", "multiplex"])
def test_the_engine_feeds_what_the_authors_rule_feeds(llm, mode):
    """Each family method, two requests side by side with other methods, replayed step by step
    against the authors' own rule (``tests/faithfulness.py``): the same tokens at every step, the
    same inputs to float32 rounding."""
    from mixinputs.config import MoIConfig
    from tests import faithfulness

    recipe = {"temperature": 1.0} if mode == "multiplex" else RECIPE
    extra = methods()[mode]
    params = [
        SamplingParams(max_tokens=32, seed=20 + i, ignore_eos=True, extra_args=e, **recipe)
        for i, e in enumerate([extra, extra, methods()["moi"], methods()["soft+gumbel"]])
    ]
    prompts = [PROMPTS[0], PROMPTS[2], PROMPTS[1], PROMPTS[3]]  # SwiReasoning switches on both
    out, records = trace(llm, lambda: generate(llm, prompts, params))
    weight = embedding_weight(llm)
    # The config as the front end resolved it (token text looked up, math tokens listed).
    from mixinputs.tokens import resolve_tokens

    config = resolve_tokens(MoIConfig.from_request(extra), llm.get_tokenizer(), weight.shape[0])
    totals: dict[str, int] = {}
    for i in range(2):
        req_id = out[i].request_id
        steps = [
            faithfulness.Step(
                js, r["prior"][row], int(r["sampled"][row]), int(r["emitted"][row]),
                r["mixed"][row],
            )
            for r in records
            for row, (rid, js) in enumerate(zip(r["req_ids"], r["js"], strict=True))
            if same_request(rid, req_id)
        ]  # fmt: skip
        assert [s.emitted for s in steps] == list(out[i].outputs[0].token_ids)
        top_k, top_p = recipe.get("top_k", 0), recipe.get("top_p", 1.0)
        counts = faithfulness.check(steps, config, weight, 20 + i, top_k, top_p)
        for key, value in counts.items():
            totals[key] = totals.get(key, 0) + value
    assert totals["latent"] > 0, totals
    if mode == "swir":
        assert totals["switches"] > 0, totals


def test_noise_follows_the_seed(llm):
    noisy = {"mixinputs_mode": "soft", "mixinputs_noise": "gumbel"}
    a, b, c = (
        token_ids(generate(llm, [PROMPTS[1]], [sampled(noisy, seed=s, max_tokens=24)]))[0]
        for s in (5, 5, 6)
    )
    assert a == b and a != c


def test_thinking_region_ends_at_the_think_end_token(llm):
    """Mixing stops at the think-end token: up to it the request is MoI with region "all"; the
    token itself and every later one are fed as plain embeddings."""
    moi = {"mixinputs_beta": 1.0}
    greedy = dict(temperature=0.0, max_tokens=12, ignore_eos=True)
    out_all, rec_all = trace(
        llm, lambda: generate(llm, [PROMPTS[2]], [SamplingParams(**greedy, extra_args=moi)])
    )
    tokens = list(out_all[0].outputs[0].token_ids)
    end_at = next(j for j in range(2, len(tokens)) if tokens[j] not in tokens[:j])
    thinking = {**moi, "mixinputs_region": "thinking", "mixinputs_think_end": tokens[end_at]}
    out, rec = trace(
        llm, lambda: generate(llm, [PROMPTS[2]], [SamplingParams(**greedy, extra_args=thinking)])
    )
    got = list(out[0].outputs[0].token_ids)
    assert got[: end_at + 1] == tokens[: end_at + 1]
    weight = embedding_weight(llm)
    fed = {r["js"][0]: r["mixed"][0] for r in rec}
    fed_all = {r["js"][0]: r["mixed"][0] for r in rec_all}
    for j in range(end_at):
        torch.testing.assert_close(fed[j], fed_all[j], rtol=0, atol=0)
        assert not torch.equal(fed[j], weight[got[j]].to(fed[j].dtype)), j
    for j in range(end_at, len(got)):
        assert torch.equal(fed[j], weight[got[j]].to(fed[j].dtype)), j
    for r in rec:
        check_step_record(r, weight)


def test_cold_stop_emits_the_think_end_token_and_leaves_the_region(llm):
    """tau above any entropy: every thinking step is low-entropy, so at step L the sampled token
    becomes the think-end token (also in the log-probs), and mixing stops there."""
    think_end = one_token(llm, " banana")
    cold = {
        "mixinputs_mode": "soft",
        "mixinputs_region": "thinking",
        "mixinputs_think_end": think_end,
        "mixinputs_cold_stop_entropy": 100.0,
        "mixinputs_cold_stop_steps": 3,
    }
    warm = {**cold, "mixinputs_cold_stop_entropy": 1e-9}  # never low: never forced
    params = [sampled(cold, seed=1, logprobs=1), sampled(warm, seed=1, logprobs=1)]
    out, rec = trace(llm, lambda: generate(llm, [PROMPTS[0]] * 2, params))
    forced, free = (list(o.outputs[0].token_ids) for o in out)
    assert len(forced) == len(free) == 16  # forcing a token does not end the request
    assert forced[2] == think_end and think_end not in forced[:2]
    assert forced[:2] == free[:2] and free[2] != think_end
    entry = out[0].outputs[0].logprobs[2][think_end]
    assert entry.logprob < 0 and entry.rank >= 1
    weight = embedding_weight(llm)
    for r in rec:
        check_step_record(r, weight)
        cold = (MethodRows(*r["methods"]).cold_stop_entropy > 1).nonzero().flatten()
        if cold.numel() == 0:  # a step of the other request alone
            continue
        row = int(cold[0])  # the forced request (tau = 100)
        j = r["js"][row]
        if j >= 2:  # the think-end token and everything after it: plain embeddings
            assert torch.equal(r["mixed"][row], weight[forced[j]].to(r["mixed"].dtype)), j


def fed_by(records, request_id) -> dict[int, torch.Tensor]:
    """The mixtures one request was fed, by output index."""
    return {
        j: r["mixed"][row]
        for r in records
        for row, (rid, j) in enumerate(zip(r["req_ids"], r["js"], strict=True))
        if same_request(rid, request_id)
    }


def _logprobs(output) -> list[dict[int, float]]:
    return [{t: lp.logprob for t, lp in step.items()} for step in output.outputs[0].logprobs]


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"mixinputs_mode": "soft", "mixinputs_prior": "raw"}, "mixinputs_prior"),
        ({"mixinputs_region": "sometimes"}, "mixinputs_region"),
        ({"mixinputs_region": "thinking"}, "mixinputs_think_end"),  # "</think>": not one token
        ({"mixinputs_region": "thinking", "mixinputs_think_end": 10**9}, "mixinputs_think_end"),
        ({"mixinputs_cold_stop_entropy": 0.1}, "mixinputs_cold_stop_entropy"),
        (
            {
                "mixinputs_region": "thinking",
                "mixinputs_think_end": 5,
                "mixinputs_cold_stop_entropy": -1,
            },
            "mixinputs_cold_stop_entropy",
        ),
        ({"mixinputs_cold_stop_steps": 3}, "mixinputs_cold_stop_steps"),
        ({"mixinputs_think_end": 5}, "mixinputs_think_end"),  # no thinking region
        ({"mixinputs_noise": "uniform"}, "mixinputs_noise"),
        ({"mixinputs_noise": "gumbel", "mixinputs_noise_temperature": 0}, "mixinputs_noise_temp"),
        ({"mixinputs_mode": "direct", "mixinputs_noise": "gumbel"}, "mixinputs_noise"),
        ({"mixinputs_noise_temperature": 0.5}, "mixinputs_noise_temperature"),
        ({"mixinputs_mode": "swir"}, "mixinputs_think_end"),  # "</think>": not one token
        ({**SWIR, "mixinputs_swir_window": 0}, "mixinputs_swir_window"),
        ({**SWIR, "mixinputs_swir_linebreak": "\\n"}, "mixinputs_swir_linebreak"),  # 2 tokens
        ({"mixinputs_mode": "selar", "mixinputs_selar_threshold": 1.5}, "selar_threshold"),
        ({"mixinputs_mode": "multiplex", "mixinputs_multiplex_width": 99}, "multiplex_width"),
        ({"mixinputs_mode": "multiplex", "mixinputs_swir_window": 4}, "mixinputs_swir_window"),
    ],
)
def test_bad_method_fields_are_rejected_and_the_engine_keeps_serving(llm, extra, key):
    with pytest.raises(ValueError, match=key):
        generate(llm, PROMPTS[:1], [sampled(extra, max_tokens=4)])
    ok = generate(llm, PROMPTS[:1], [sampled({"mixinputs_mode": "soft"}, max_tokens=4)])
    assert len(ok[0].outputs[0].token_ids) == 4
    assert summary(llm)["alive"] == 0


# -- Soft Thinking as released (issue 24) ------------------------------------------------------
# Soft Thinking's released sampling (scripts/st/qwq32b_st_math.sh: T 0.6, top-k 30, top-p 0.95;
# its min-p 0.001 is left out here: vLLM applies min-p before top-p, the release after).
SOFT_RECIPE = {"temperature": 0.6, "top_k": 30, "top_p": 0.95}
SOFT_CASES = {
    "soft": {"mixinputs_mode": "soft"},
    "soft, another seed": {"mixinputs_mode": "soft"},
    "soft+gumbel": {"mixinputs_mode": "soft", "mixinputs_noise": "gumbel"},
    "soft+dirichlet": {"mixinputs_mode": "soft", "mixinputs_noise": "dirichlet"},
    # τ above any entropy: </think> forced at the 6th token, the request ended 6 tokens later.
    "cold stop forced": {
        "mixinputs_mode": "soft",
        "mixinputs_think_end": NEVER,
        "mixinputs_cold_stop_entropy": 100.0,
        "mixinputs_cold_stop_steps": 6,
    },
    "cold stop": {
        "mixinputs_mode": "soft",
        "mixinputs_cold_stop_entropy": 1.0,
        "mixinputs_cold_stop_steps": 2,
    },
    "soft+gumbel cold stop": {
        "mixinputs_mode": "soft",
        "mixinputs_noise": "gumbel",
        "mixinputs_cold_stop_entropy": 0.1,
        "mixinputs_cold_stop_steps": 2,
    },
}


@pytest.mark.parametrize("greedy", [False, True], ids=["seeded", "greedy"])
def test_soft_thinking_follows_its_release(llm, greedy):
    """Soft Thinking (Randomized Soft Thinking with noise) against the transcription of its
    sampler step and ``update_topk_info`` (``tests/reference/``), every request of one
    batch: the same tokens at every step, the same inputs, across ``</think>`` (a token each row
    reaches: a first run shows which), Cold Stop, and the after-thinking abort (EOS here). Cold
    Stop fires at the same steps in the engine (read off its recorded state) and in the
    transcription; without noise two seeds think the same tokens."""
    from mixinputs.config import MoIConfig
    from mixinputs.mixing import CarriedState, MethodRows
    from mixinputs.tokens import resolve_tokens
    from tests import faithfulness

    names = list(SOFT_CASES)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(len(names))]
    prompts[1] = prompts[0]  # "soft" twice on one prompt, two seeds
    recipe = {"temperature": 0.0} if greedy else SOFT_RECIPE

    def params(extras):
        return [
            SamplingParams(
                max_tokens=32, seed=30 + i, ignore_eos=True, extra_args=e, logprobs=0, **recipe
            )
            for i, e in enumerate(extras)
        ]

    never = [{"mixinputs_think_end": NEVER, **SOFT_CASES[n]} for n in names]
    first = token_ids(generate(llm, prompts, params(never)))
    extras = []
    for name, row in zip(names, first, strict=True):
        end = next(t for j, t in enumerate(row) if j >= 4 and t not in row[:j])
        extras.append({"mixinputs_think_end": end, **SOFT_CASES[name]})
    out, records = trace(llm, lambda: generate(llm, prompts, params(extras)))
    weight = embedding_weight(llm)
    tokenizer = llm.get_tokenizer()
    top_k, top_p = (0, 1.0) if greedy else (SOFT_RECIPE["top_k"], SOFT_RECIPE["top_p"])
    totals: dict[str, int] = {"engine_cold_stops": 0}
    for i, (name, extra) in enumerate(zip(names, extras, strict=True)):
        config = resolve_tokens(MoIConfig.from_request(extra), tokenizer, weight.shape[0])
        steps, cold = [], 0
        for r in records:
            for row, (rid, js) in enumerate(zip(r["req_ids"], r["js"], strict=True)):
                if not same_request(rid, out[i].request_id):
                    continue
                steps.append(
                    faithfulness.Step(
                        js, r["prior"][row], int(r["sampled"][row]), int(r["emitted"][row]),
                        r["mixed"][row],
                    )
                )  # fmt: skip
                rows, state = MethodRows(*r["methods"]), CarriedState(*r["state"])
                cold += faithfulness.engine_cold_stop(rows, state, row)
        assert [s.emitted for s in steps] == list(out[i].outputs[0].token_ids), name
        # The log-probs say what was emitted (logprobs=0: that token alone), not what was sampled.
        emitted = out[i].outputs[0]
        for token, entry in zip(emitted.token_ids, emitted.logprobs, strict=True):
            assert token in entry and entry[token].rank >= 1, (name, token, entry)
        try:
            counts = faithfulness.soft_thinking(steps, config, weight, 30 + i, top_k, top_p, greedy)
        except AssertionError as e:
            raise AssertionError(f"{name}: {e}") from None
        assert counts["switches"] == 1, (name, counts)  # it crossed its </think>
        assert counts["cold_stops"] == cold, (name, counts, cold)
        if name == "cold stop forced":
            assert counts["cold_stops"] == 1 and counts["aborts"] == 1, counts
            assert out[i].outputs[0].token_ids[12] == tokenizer.eos_token_id
        for key, value in counts.items():
            totals[key] = totals.get(key, 0) + value
        totals["engine_cold_stops"] += cold
    assert totals["cold_stops"] >= 2, totals  # the real thresholds fired too
    # Without noise the thinking trace is the top-1 of each step: the seed does not enter it.
    end = extras[0]["mixinputs_think_end"]
    a, b = (list(out[i].outputs[0].token_ids) for i in (0, 1))
    assert a[: a.index(end) + 1] == b[: b.index(end) + 1]
