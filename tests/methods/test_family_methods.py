"""SwiReasoning, SeLaR and Multiplex Thinking in ``mixinputs.mixing``, against transcriptions of
the authors' own step rules (``tests/reference``), step by step, token for token.

The engines (vLLM, transformers) run these same functions; ``test_vllm_methods.py`` and
``test_hf.py`` check them on the embedded model against the same transcriptions.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from mixinputs.config import MoIConfig, MoIConfigError
from mixinputs.methods import method
from mixinputs.mixing import (
    MethodInputs,
    apply_methods,
    candidates_from_logits,
    dense_inputs,
    fresh_state,
    mask_top_k_top_p,
    method_rows,
    mix_step,
    row_settings,
)
from tests.reference import (
    MultiplexParams,
    MultiplexState,
    SelarParams,
    SwirParams,
    SwirState,
    authors_sampling_filter,
    authors_sampling_probs,
    multiplex_reference_step,
    selar_reference_step,
    swir_reference_step,
)

VOCAB, DIM, WIDTH = 64, 16, 20
THINK_START, THINK_END, LINEBREAK, EOS, MATH = 1, 2, 3, 0, 7


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(2026)


@pytest.fixture
def table(gen):
    return torch.randn(VOCAB, DIM, generator=gen)


def logits_at(gen, step: int) -> torch.Tensor:
    # Alternate peaked and flat steps, so every switch and gate fires both ways.
    scale = 6.0 if step % 3 == 0 else 0.5
    return torch.randn(VOCAB, generator=gen) * scale


def plain_mask() -> torch.Tensor:
    mask = torch.zeros(VOCAB, dtype=torch.bool)
    mask[MATH] = True
    return mask


# -- SwiReasoning --------------------------------------------------------------------------------
SWIR = MoIConfig(
    mode="swir",
    think_end=THINK_END,
    think_start=THINK_START,
    swir_linebreak=LINEBREAK,
    swir_window=2,
    swir_max_switches=1,
    swir_convergence=(THINK_END,),
    swir_termination=(THINK_END, 5, 6),
    swir_answer_tokens=4,
    swir_ramp_tokens=60,
    eos=EOS,
    plain_ids=(MATH,),
)
SWIR_PARAMS = SwirParams(
    think_start_id=THINK_START,
    think_end_id=THINK_END,
    linebreak_id=LINEBREAK,
    eos_id=EOS,
    window=2,
    max_switch_count=1,
    convergence_ids=(THINK_END,),
    termination_ids=(THINK_END, 5, 6),
    termination_max_tokens=4,
    max_new_tokens=60,
    math_ids=frozenset({MATH}),
)


def assert_same_swir_state(ours, ref: SwirState) -> None:
    assert bool(ours.swir_explicit) == (ref.mode == 1)
    assert int(ours.swir_stay) == ref.stay
    assert float(ours.swir_ref) == pytest.approx(ref.ref, rel=1e-6)
    assert bool(ours.swir_locked) == ref.locked
    assert int(ours.swir_switches) == ref.switch_count
    assert (int(ours.swir_queue) > 0) == ref.injecting
    sequence = (
        SWIR_PARAMS.convergence_ids if int(ours.swir_queue) == 1 else (SWIR_PARAMS.termination_ids)
    )
    left = sequence[int(ours.swir_queue_pos) :] if int(ours.swir_queue) else ()
    assert tuple(left) == ref.queue
    assert int(ours.swir_budget) == ref.budget


def test_swir_follows_the_authors_step_rule(gen, table):
    """60 steps with a window of 2 and a cap of 1: latent and explicit switches, blends, the
    convergence and termination injections, and the answer budget, all as the authors' loop."""
    state, ref = fresh_state(1), SwirState()
    seen = {"to_explicit": 0, "injected": 0, "latent": 0, "plain_math": 0}
    ended_at = None
    for t in range(60):
        logits = logits_at(gen, t)
        if t % 11 == 5:
            logits[MATH] = 30.0  # a math token: fed as itself
        y = int(torch.multinomial(authors_sampling_probs(logits), 1, generator=gen))
        if ended_at is not None:  # the original stopped; engines emit EOS at the next step
            rows = method_rows([SWIR], [t], [0])
            _, step, _ = mix_step(logits[None], torch.tensor([y]), table, rows, state, WIDTH)
            assert int(step.sampled) == EOS and bool(step.forced)
            break
        h_ref, new_ref, token_ref = swir_reference_step(logits, y, ref, SWIR_PARAMS, table)
        rows = method_rows([SWIR], [t], [0])
        h, step, _ = mix_step(
            logits[None], torch.tensor([y]), table, rows, state, WIDTH, plain_mask=plain_mask()
        )
        assert int(step.sampled) == token_ref, t
        torch.testing.assert_close(h[0], h_ref, rtol=1e-5, atol=1e-6)
        assert_same_swir_state(step.state, new_ref)
        seen["to_explicit"] += new_ref.mode == 1 and ref.mode == 0 and t > 0
        seen["injected"] += token_ref != y
        seen["latent"] += new_ref.mode == 0
        if token_ref == MATH:  # a math token is fed as itself, latent or not
            assert torch.equal(h[0], table[MATH])
            seen["plain_math"] += 1
        state, ref = step.state, new_ref
        if new_ref.finished:
            ended_at = t
    assert ended_at is not None, "the answer budget never ran out"
    assert all(seen.values()), seen


def test_swir_starts_latent_with_the_line_break_blend(gen, table):
    logits = logits_at(gen, 1)  # flat: the first step is latent
    rows = method_rows([SWIR], [0], [0])
    h, step, _ = mix_step(logits[None], torch.tensor([9]), table, rows, fresh_state(1), WIDTH)
    soft = torch.softmax(logits, -1) @ table
    torch.testing.assert_close(h[0], 0.9 * soft + 0.1 * table[LINEBREAK])
    assert float(step.dense) == pytest.approx(0.9)
    assert float(step.state.swir_ref) == pytest.approx(
        float(-(torch.softmax(logits, -1) * torch.log_softmax(logits, -1)).sum())
    )


# -- SeLaR ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("tau", [0.5, 0.7])
def test_selar_follows_the_authors_step_rule(gen, table, tau):
    params = SelarParams(entropy_threshold=tau, math_ids=frozenset({MATH}))
    config = MoIConfig(mode="selar", selar_threshold=tau, plain_ids=(MATH,))
    gated = 0
    for t in range(40):
        logits = logits_at(gen, t)
        # Our prior: the distribution the token is drawn from (temperature, top-k, top-p).
        prior = authors_sampling_filter(logits / 0.6, 20, 0.95)
        y = int(torch.multinomial(torch.softmax(prior, -1), 1, generator=gen))
        h_ref, _, token = selar_reference_step(logits, y, None, params, table)
        rows = method_rows([config], [t], [0])
        h, step, _ = mix_step(
            prior[None], torch.tensor([y]), table, rows, fresh_state(1), WIDTH,
            torch.tensor([3]), plain_mask(),
        )  # fmt: skip
        assert int(step.sampled) == token == y
        torch.testing.assert_close(h[0], h_ref, rtol=1e-5, atol=1e-6)
        gated += not torch.equal(h_ref, table[y])
    assert 0 < gated < 40


# -- Multiplex -----------------------------------------------------------------------------------
@pytest.mark.parametrize("weighted", [True, False])
def test_multiplex_follows_the_authors_step_rule(gen, table, weighted):
    params = MultiplexParams(think_end_id=THINK_END, weighted=weighted)
    config = MoIConfig(mode="multiplex", think_end=THINK_END, multiplex_weighted=weighted)
    state, ref = fresh_state(1), MultiplexState()
    for t in range(30):
        logits = logits_at(gen, t)
        if t == 20:
            logits[THINK_END] = 50.0  # the visible draw ends thinking
        y = int(torch.multinomial(params.sampling_probs(logits), 1, generator=gen))
        rows = method_rows([config], [t], [4])
        h, step, _ = mix_step(logits[None], torch.tensor([y]), table, rows, state, WIDTH)
        draws = step.ids[0, :3] if ref.in_thinking else torch.tensor([y, y, y])
        assert int(draws[0]) == y
        h_ref, ref, token = multiplex_reference_step(logits, draws, ref, params, table)
        assert int(step.sampled) == token
        torch.testing.assert_close(h[0], h_ref, rtol=1e-5, atol=1e-6)
        assert bool(step.state.thinking) == ref.in_thinking
        state = step.state
    assert not ref.in_thinking


def test_multiplex_draws_follow_the_distribution_and_the_seed():
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1, 1e-9]]))
    config = MoIConfig(mode="multiplex", multiplex_width=4, region="all")
    counts = torch.zeros(4)
    for seed in range(500):
        rows = method_rows([config], [0], [seed])
        _, step, _ = mix_step(logits, torch.tensor([0]), torch.eye(4), rows, fresh_state(1), 3)
        counts += torch.bincount(step.ids[0, 1:4], minlength=4).float()
    freq = counts / counts.sum()
    assert torch.allclose(freq[:3], torch.tensor([0.6, 0.3, 0.1]), atol=0.04), freq
    again = method_rows([config], [0], [7])
    a = mix_step(logits, torch.tensor([0]), torch.eye(4), again, fresh_state(1), 3)[1].ids
    b = mix_step(logits, torch.tensor([0]), torch.eye(4), again, fresh_state(1), 3)[1].ids
    assert torch.equal(a, b)


def test_masks_over_the_vocabulary_keep_what_the_sampler_keeps():
    logits = torch.tensor([[4.0, 3.0, 3.0, 1.0, 0.0, -1.0]])
    cut = mask_top_k_top_p(logits, torch.tensor([2]), torch.tensor([1.0]))
    assert torch.isfinite(cut).tolist() == [[True, True, True, False, False, False]]  # ties kept
    probs = torch.softmax(logits, -1)[0]
    p = float(probs[0] + probs[1]) - 1e-4
    cut = mask_top_k_top_p(logits, torch.tensor([0]), torch.tensor([p]))
    assert torch.isfinite(cut).sum() == 3  # the token that crosses p stays (with its tie)


def test_top_p_after_a_top_k_wider_than_the_candidates(gen):
    """Soft Thinking's released recipe samples with top-k 30 on an engine whose candidates are
    20 wide: top-p then reads the top-30's own distribution (``top_k_normalizer``), as the
    sampler does, not the whole vocabulary's."""
    from mixinputs.mixing import sampling_prior_masks, top_k_normalizer

    logits = torch.randn(64, 500, generator=gen) * 1.5
    sampled = logits.argmax(-1)
    top_k, top_p = torch.full((64,), 30), torch.full((64,), 0.9)
    cands = candidates_from_logits(logits, sampled, 20)
    wide = top_k_normalizer(logits, top_k)
    want = torch.logsumexp(logits.topk(30).values, -1)
    torch.testing.assert_close(wide, want)
    sampling = torch.ones(64, dtype=torch.bool)
    got = sampling_prior_masks(cands.scores, logits, sampling, top_k, top_p, wide)
    exact = mask_top_k_top_p(logits, top_k, top_p)  # the sampler's cut over the vocabulary
    assert torch.equal(
        torch.isfinite(got[:, :20]), torch.isfinite(exact.gather(1, cands.ids[:, :20]))
    )
    without = sampling_prior_masks(cands.scores, logits, sampling, top_k, top_p)
    assert not torch.equal(torch.isfinite(without), torch.isfinite(got))  # the old normalizer


# -- every method side by side ---------------------------------------------------------------
def test_a_family_row_is_bit_identical_alone_and_in_a_mixed_batch(gen, table):
    configs = [
        SWIR,
        MoIConfig(mode="selar", plain_ids=(MATH,)),
        MoIConfig(mode="multiplex", think_end=THINK_END),
        MoIConfig(beta=1.0),
        MoIConfig(mode="soft", noise="gumbel", think_end=THINK_END),
    ]
    m = len(configs)
    logits = torch.stack([logits_at(gen, t) for t in range(m)])
    sampled = torch.randint(8, VOCAB, (m,), generator=gen)
    positions, seeds = [3, 1, 2, 5, 4], [10, 11, 12, 13, 14]
    state = fresh_state(m)._replace(
        swir_ref=torch.full((m,), 2.0),
        swir_stay=torch.full((m,), 3),
        thinking=torch.ones(m, dtype=torch.bool),
    )
    rows = method_rows(configs, positions, seeds)
    row_k = torch.tensor([c.top_k for c in configs])
    h, step, w = mix_step(logits, sampled, table, rows, state, WIDTH, row_k, plain_mask())
    for b in range(m):
        sl = slice(b, b + 1)
        alone = method_rows([configs[b]], [positions[b]], [seeds[b]])
        one_state = type(state)(*(x[sl] for x in state))
        h1, step1, w1 = mix_step(
            logits[sl], sampled[sl], table, alone, one_state, WIDTH, row_k[sl], plain_mask()
        )
        assert torch.equal(h1, h[sl]), configs[b].name
        assert torch.equal(w1, w[sl]), configs[b].name
        for ours, theirs in zip(step1.state, step.state, strict=True):
            assert torch.equal(ours, theirs[sl]), configs[b].name


def test_the_engines_per_method_rows_give_the_masked_step_bit_for_bit(gen, table):
    # Engines pass each family method's rows (MethodInputs.own_rows) so its
    # [rows, V] work runs on those rows only; the step must equal the every-row masked one.
    configs = [MoIConfig(beta=1.0), SWIR, MoIConfig(mode="multiplex", think_end=THINK_END)] * 2
    m = len(configs)
    logits = torch.stack([logits_at(gen, t) for t in range(m)])
    sampled = torch.randint(8, VOCAB, (m,), generator=gen)
    rows = method_rows(configs, [3, 1, 2, 5, 4, 0], [10, 11, 12, 13, 14, 15])
    state = fresh_state(m)._replace(swir_ref=torch.full((m,), 2.0), swir_stay=torch.full((m,), 3))
    cands = candidates_from_logits(logits, sampled, WIDTH)
    draws = int(rows.multiplex_width.max()) - 1
    masked = apply_methods(cands, rows, state, MethodInputs(logits, plain_mask(), draws))
    swir_rows, mux_rows = torch.tensor([1, 4]), torch.tensor([2, 5])
    family = MethodInputs(
        logits, plain_mask(), draws, own_rows={"swir": swir_rows, "multiplex": mux_rows}
    )
    picked = apply_methods(cands, rows, state, family)
    for name in ("ids", "weights", "dense", "sampled", "forced"):
        assert torch.equal(getattr(picked, name), getattr(masked, name)), name
    for ours, theirs in zip(picked.state, masked.state, strict=True):
        assert torch.equal(ours, theirs)
    assert torch.equal(picked.probs, masked.probs[swir_rows])  # [S, V]: just its rows


def test_dense_inputs_do_not_depend_on_the_number_of_rows(gen, table):
    logits = torch.randn(12, VOCAB, generator=gen)
    all_rows = dense_inputs(logits, table)
    for m in (1, 2, 5, 12):
        assert torch.equal(dense_inputs(logits[:m], table), all_rows[:m]), m


def test_greedy_sampling_methods_feed_the_sampled_token():
    """A greedy request's sampling distribution is a point mass: SeLaR and Multiplex feed E[y]."""
    for config in (MoIConfig(mode="selar"), MoIConfig(mode="multiplex", think_end=THINK_END)):
        row = row_settings(config, greedy=True)
        assert row.family == 0 and row.beta == float("inf")
    assert row_settings(SWIR, greedy=True).family == SWIR.method.family_code


# -- settings -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"mixinputs_mode": "swir", "mixinputs_swir_window": 0}, "mixinputs_swir_window"),
        ({"mixinputs_mode": "swir", "mixinputs_swir_alpha": 1.5}, "mixinputs_swir_alpha"),
        ({"mixinputs_mode": "swir", "mixinputs_swir_max_switches": -1}, "max_switches"),
        ({"mixinputs_mode": "swir", "mixinputs_swir_convergence": []}, "swir_convergence"),
        ({"mixinputs_mode": "swir", "mixinputs_think_start": -3}, "mixinputs_think_start"),
        ({"mixinputs_mode": "swir", "mixinputs_region": "thinking"}, "mixinputs_region"),
        ({"mixinputs_mode": "swir", "mixinputs_prior": "sampling"}, "mixinputs_prior"),
        ({"mixinputs_mode": "selar", "mixinputs_selar_threshold": 2}, "selar_threshold"),
        ({"mixinputs_mode": "selar", "mixinputs_selar_contrast": -1}, "selar_contrast"),
        ({"mixinputs_mode": "selar", "mixinputs_noise": "gumbel"}, "mixinputs_noise"),
        ({"mixinputs_mode": "multiplex", "mixinputs_multiplex_width": 0}, "multiplex_width"),
        ({"mixinputs_mode": "multiplex", "mixinputs_multiplex_weighted": 1}, "weighted"),
        ({"mixinputs_mode": "moi", "mixinputs_swir_window": 4}, "mixinputs_swir_window"),
        ({"mixinputs_mode": "multiplex", "mixinputs_plain_math": False}, "plain_math"),
    ],
)
def test_bad_family_settings_name_their_key(fields, key):
    with pytest.raises(MoIConfigError, match=key):
        MoIConfig.from_request(fields)


def test_family_defaults_are_the_authors_released_ones():
    swir = MoIConfig.from_request({"mixinputs_mode": "swir"})
    assert (swir.swir_alpha, swir.swir_beta, swir.swir_window) == (1.0, 0.7, 512)
    assert swir.swir_max_switches is None and swir.swir_answer_tokens == 32
    assert swir.swir_linebreak == "\\n" and swir.think_start == "<think>"
    selar = MoIConfig.from_request({"mixinputs_mode": "selar"})
    assert (selar.top_k, selar.selar_threshold, selar.selar_contrast) == (3, 0.5, 1.0)
    assert selar.prior == "sampling" and selar.region == "all"
    mux = MoIConfig.from_request({"mixinputs_mode": "multiplex"})
    assert (mux.multiplex_width, mux.multiplex_weighted, mux.region) == (3, True, "thinking")


# -- released behaviours as options (issue 24) ---------------------------------------------
def test_selar_always_latent_is_what_the_released_batched_loop_feeds(gen, table):
    """With any row of its batch gating, the released loop feeds every row its latent input
    (math tokens too): ``selar_gate="always"`` feeds that at every step."""
    from tests.reference import selar_batch_reference_step

    params = SelarParams(entropy_threshold=0.5, math_ids=frozenset({MATH}))
    config = MoIConfig(mode="selar", selar_gate="always", plain_ids=(MATH,))
    batches = 0
    for t in range(12):
        logits = torch.stack([logits_at(gen, 3 * t + b) for b in range(3)])  # peaked and flat
        logits[0, MATH] = 40.0  # row 0 samples a math token: its own gate is shut
        priors = torch.stack([authors_sampling_filter(row / 0.6, 20, 0.95) for row in logits])
        y = torch.multinomial(torch.softmax(priors, -1), 1, generator=gen)[:, 0]
        fed, tokens = selar_batch_reference_step(logits, params, table, y)
        if torch.equal(fed, table[tokens]):
            continue  # no row of the batch gated: the release feeds E[y] everywhere
        batches += 1
        rows = method_rows([config] * 3, [t] * 3, [0] * 3)
        h, step, _ = mix_step(
            priors, y, table, rows, fresh_state(3), WIDTH, torch.tensor([3] * 3), plain_mask()
        )
        assert torch.equal(step.sampled, tokens)
        torch.testing.assert_close(h, fed, rtol=1e-5, atol=1e-6)
    assert batches > 0


def test_greedy_selar_can_gate_as_released(gen, table):
    """``selar_greedy="released"``: a greedy request reads the recipe's distribution (T 0.6,
    top-k 20, top-p 0.95) and gates on it, as ``generate_selar`` with ``do_sample=False``."""
    from mixinputs.methods.selar import SELAR_RECIPE
    from tests.reference import selar_batch_reference_step

    config = MoIConfig(mode="selar", selar_greedy="released", plain_ids=(MATH,))
    params = SelarParams(math_ids=frozenset({MATH}))
    row = row_settings(config, greedy=True)
    assert row.family == method("selar").family_code and row.greedy_recipe
    assert row.temperature == SELAR_RECIPE[0]
    assert row_settings(MoIConfig(mode="selar"), greedy=True).family == 0  # the default
    gated = 0
    for t in range(30):
        logits = logits_at(gen, t)
        t_, k_, p_ = SELAR_RECIPE
        prior = mask_top_k_top_p((logits / t_)[None], torch.tensor([k_]), torch.tensor([p_]))
        y = logits.argmax()[None]  # the engine's greedy token
        fed, tokens = selar_batch_reference_step(logits[None], params, table)
        rows = method_rows([config], [t], [0], greedy=True)
        h, step, _ = mix_step(
            prior, y, table, rows, fresh_state(1), WIDTH, torch.tensor([3]), plain_mask()
        )
        assert int(step.sampled) == int(tokens[0])
        torch.testing.assert_close(h, fed, rtol=1e-5, atol=1e-6)
        gated += not torch.equal(fed[0], table[tokens[0]])
    assert 0 < gated < 30


def test_swir_ramps_over_the_requests_max_tokens_clamped_at_one(gen, table):
    """The blends ramp over the request's max_tokens (``generation_utils.py:341, 347``: step /
    max_new_tokens), and stop at 1 when a shorter ramp is asked for."""
    free = MoIConfig(mode="swir", think_end=THINK_END, think_start=THINK_START,
                     swir_linebreak=LINEBREAK)  # fmt: skip
    assert free.swir_ramp_tokens is None
    assert row_settings(free, max_tokens=500).swir_ramp_tokens == 500
    assert row_settings(free).swir_ramp_tokens == 38912  # no max_tokens: run.py's default
    assert row_settings(replace(free, swir_ramp_tokens=64), max_tokens=500).swir_ramp_tokens == 64
    short = replace(free, swir_ramp_tokens=4, swir_window=1, swir_beta=0.2, swir_alpha=0.3)
    state, weights = fresh_state(1), []
    for t in range(40):
        rows = method_rows([short], [t], [0])
        _, step, w = mix_step(logits_at(gen, t)[None], torch.tensor([9]), table, rows, state, WIDTH)
        weights.append(w)
        assert float(step.dense) <= 1.0 and (w >= 0).all(), t
        state = step.state
    late = torch.cat(weights[4:])
    assert (late[:, 1] == 0).all() and (late[:, 2] == 0).all()  # past the ramp: no blend left


def test_convergence_words_follow_the_model_family():
    """``run.py:458``: ``"</think>"`` for Qwen, ``"\\n\\n</think>\\n\\n"`` for any other."""
    from mixinputs.tokens import resolve_tokens

    class Chars:
        eos_token_id = 0
        name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"

        def encode(self, text, add_special_tokens=False):
            return [ord(c) for c in text]

    class Qwen(Chars):
        name_or_path = "Qwen/QwQ-32B"

    capped = MoIConfig(mode="swir", think_end=1, think_start=2, swir_linebreak=3,
                       swir_max_switches=2, swir_termination=(5,), plain_math=False)  # fmt: skip
    other = resolve_tokens(capped, Chars(), 200).swir_convergence
    qwen = resolve_tokens(capped, Qwen(), 200).swir_convergence
    assert other == tuple(ord(c) for c in "\n\n</think>\n\n")
    assert qwen == tuple(ord(c) for c in "</think>")
    named = resolve_tokens(replace(capped, swir_convergence="</think>"), Chars(), 200)
    assert named.swir_convergence == qwen  # a phrase named in the request is kept


@pytest.mark.parametrize(
    "settings, match",
    [
        ({"mode": "selar", "prior": "raw"}, "mode 'selar' mixes over the distribution"),
        ({"mode": "swir", "prior": "sampling"}, "mode 'swir' reads the raw"),
        ({"mode": "selar", "region": "thinking"}, "drop mixinputs_region|drop region"),
        ({"mode": "swir", "noise": "gumbel"}, "applies to mode"),
    ],
)
def test_one_rule_set_refuses_the_same_settings_on_every_path(settings, match):
    """``MoIConfig``, the server's validation of a request, ``mixinputs.hf`` and ``--method``
    read one rule set (``MoIConfig``'s): a setting one refuses, all refuse."""
    from types import SimpleNamespace

    from mixinputs.eval.methods import MethodSpecError, parse_method
    from mixinputs.hf import _config_of
    from mixinputs.vllm_plugin.patches.request_validation import check_request
    from mixinputs.vllm_plugin.settings import PluginSettings

    with pytest.raises(MoIConfigError, match=match):
        MoIConfig(**settings)
    request = {f"mixinputs_{key}": value for key, value in settings.items()}
    params = SimpleNamespace(extra_args=request)
    with pytest.raises(ValueError, match=match):
        check_request(params, PluginSettings(default=None, max_top_k=20), None)
    with pytest.raises(ValueError, match=match):
        _config_of(None, dict(settings))
    in_name = {"mode": "", "noise": "+", "region": "@"}  # MODE[+NOISE][@REGION][:key=value]
    spec = "".join(in_name[k] + str(v) for k, v in settings.items() if k in in_name)
    spec += "".join(f":{k}={v}" for k, v in settings.items() if k not in in_name)
    with pytest.raises(MethodSpecError, match=match):
        parse_method(spec)
