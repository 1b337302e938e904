"""The soft-input family: request keys (``mixinputs.config``) and the reference math
(``mixinputs.mixing``: soft thinking, the thinking region, Cold Stop, Dirichlet / Gumbel noise)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from mixinputs.config import KEY_RESOLVED, MoIConfig, MoIConfigError
from mixinputs.methods.noise import noisy_scores
from mixinputs.methods.soft import MEASURE_CODES, vocab_entropy
from mixinputs.mixing import (
    Candidates,
    apply_methods,
    candidate_entropy,
    candidates_from_logits,
    counter_log_gamma,
    counter_uniform,
    drop_sampled,
    fresh_state,
    kept_dirichlet,
    mask_top_k_top_p,
    method_rows,
    mix_step,
    mixture_weights,
    row_settings,
)

INF = float("inf")
NEVER = 10**6  # a think-end token id no test logits reach: the region stays open
THINK = {"mixinputs_region": "thinking"}
COLD = {**THINK, "mixinputs_cold_stop_entropy": 0.5}


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


# ------------------------------------------------------------------------------------ config
@pytest.mark.parametrize(
    "fields, attr, want",
    [
        ({"mixinputs_region": "all"}, "region", "all"),
        ({"mixinputs_region": "thinking"}, "region", "thinking"),
        ({**THINK, "mixinputs_think_end": "<end>"}, "think_end", "<end>"),
        ({**THINK, "mixinputs_think_end": 151668}, "think_end", 151668),
        ({**THINK, "mixinputs_think_end": 7.0}, "think_end", 7),  # JSON numbers arrive as float
        ({**THINK, "mixinputs_cold_stop_entropy": 2}, "cold_stop_entropy", 2.0),
        ({**COLD, "mixinputs_cold_stop_steps": 3}, "cold_stop_steps", 3),
        ({**COLD, "mixinputs_cold_stop_steps": 5.0}, "cold_stop_steps", 5),
        ({**COLD}, "cold_stop_steps", 256),
        ({"mixinputs_noise": "none"}, "noise", "none"),
        ({"mixinputs_noise": "dirichlet"}, "noise_temperature", 1.0),
        ({"mixinputs_noise": "gumbel"}, "noise_temperature", 0.5),
        ({"mixinputs_noise": "gumbel", "mixinputs_noise_temperature": 2}, "noise_temperature", 2.0),
        ({"mixinputs_mode": "soft", "mixinputs_noise": "dirichlet"}, "noise", "dirichlet"),
    ],
)
def test_valid_request_values(fields, attr, want):
    config = MoIConfig.from_request(fields)
    assert getattr(config, attr) == want
    assert type(getattr(config, attr)) is type(want)


@pytest.mark.parametrize(
    "fields, key",
    [
        ({"mixinputs_mode": "mixture"}, "mixinputs_mode"),
        ({"mixinputs_beta": -1}, "mixinputs_beta"),
        ({"mixinputs_top_k": 0}, "mixinputs_top_k"),
        ({"mixinputs_prior": "hot"}, "mixinputs_prior"),
        ({"mixinputs_region": "answer"}, "mixinputs_region"),
        ({"mixinputs_region": 1}, "mixinputs_region"),
        ({**THINK, "mixinputs_think_end": ""}, "mixinputs_think_end"),
        ({**THINK, "mixinputs_think_end": -1}, "mixinputs_think_end"),
        ({**THINK, "mixinputs_think_end": 1.5}, "mixinputs_think_end"),
        ({**THINK, "mixinputs_think_end": True}, "mixinputs_think_end"),
        ({**THINK, "mixinputs_think_end": [5]}, "mixinputs_think_end"),
        ({**THINK, "mixinputs_cold_stop_entropy": 0}, "mixinputs_cold_stop_entropy"),
        ({**THINK, "mixinputs_cold_stop_entropy": -0.5}, "mixinputs_cold_stop_entropy"),
        ({**THINK, "mixinputs_cold_stop_entropy": "low"}, "mixinputs_cold_stop_entropy"),
        ({**THINK, "mixinputs_cold_stop_entropy": True}, "mixinputs_cold_stop_entropy"),
        ({**THINK, "mixinputs_cold_stop_entropy": INF}, "mixinputs_cold_stop_entropy"),
        ({**THINK, "mixinputs_cold_stop_entropy": math.nan}, "mixinputs_cold_stop_entropy"),
        ({**COLD, "mixinputs_cold_stop_steps": 0}, "mixinputs_cold_stop_steps"),
        ({**COLD, "mixinputs_cold_stop_steps": -3}, "mixinputs_cold_stop_steps"),
        ({**COLD, "mixinputs_cold_stop_steps": 2.5}, "mixinputs_cold_stop_steps"),
        ({**COLD, "mixinputs_cold_stop_steps": "8"}, "mixinputs_cold_stop_steps"),
        ({**COLD, "mixinputs_cold_stop_steps": True}, "mixinputs_cold_stop_steps"),
        ({"mixinputs_noise": "uniform"}, "mixinputs_noise"),
        ({"mixinputs_noise": 1}, "mixinputs_noise"),
        ({"mixinputs_noise": "gumbel", "mixinputs_noise_temperature": 0}, "noise_temperature"),
        ({"mixinputs_noise": "gumbel", "mixinputs_noise_temperature": -1}, "noise_temperature"),
        ({"mixinputs_noise": "gumbel", "mixinputs_noise_temperature": "x"}, "noise_temperature"),
        ({"mixinputs_noise": "gumbel", "mixinputs_noise_temperature": INF}, "noise_temperature"),
        ({"mixinputs_noise_temp": 1.0}, "mixinputs_noise_temperature"),  # typo: lists known keys
    ],
)
def test_bad_request_values_name_their_key(fields, key):
    with pytest.raises(MoIConfigError, match=key):
        MoIConfig.from_request(fields)


def test_soft_defaults_to_its_own_k_and_the_sampling_prior():
    soft = MoIConfig(mode="soft")
    assert (soft.top_k, soft.prior, soft.direct, soft.soft) == (10, "sampling", True, True)
    assert MoIConfig().top_k == 20 and MoIConfig(mode="direct").top_k == 20
    assert MoIConfig(mode="soft", top_k=4).top_k == 4
    req = MoIConfig.from_request({"mixinputs_mode": "soft"})
    assert (req.top_k, req.prior) == (10, "sampling")
    # A default config with MoI's K: a soft request still gets soft's K unless it names one.
    default = MoIConfig(beta=2.0)
    assert MoIConfig.from_request({"mixinputs_mode": "soft"}, default=default).top_k == 10
    named = {"mixinputs_mode": "soft", "mixinputs_top_k": 3}
    assert MoIConfig.from_request(named, default=default).top_k == 3
    same = {"mixinputs_mode": "soft", "mixinputs_prior": "sampling"}
    assert MoIConfig.from_request(same).prior == "sampling"


def test_soft_with_an_explicit_raw_prior_is_an_error():
    with pytest.raises(MoIConfigError, match="mixinputs_prior"):
        MoIConfig.from_request({"mixinputs_mode": "soft", "mixinputs_prior": "raw"})


def test_cold_stop_needs_the_thinking_region():
    with pytest.raises(MoIConfigError, match="mixinputs_region='thinking'"):
        MoIConfig.from_request({"mixinputs_cold_stop_entropy": 0.5})
    with pytest.raises(MoIConfigError, match="mixinputs_region"):
        MoIConfig(cold_stop_entropy=0.5)
    assert MoIConfig(region="thinking", cold_stop_entropy=0.5).cold_stop_entropy == 0.5


def test_cold_stop_steps_without_entropy_is_an_error():
    with pytest.raises(MoIConfigError, match="mixinputs_cold_stop_entropy"):
        MoIConfig.from_request({**THINK, "mixinputs_cold_stop_steps": 5})


def test_noise_with_direct_mixture_is_an_error():
    with pytest.raises(MoIConfigError, match="mixinputs_noise"):
        MoIConfig.from_request({"mixinputs_mode": "direct", "mixinputs_noise": "gumbel"})
    with pytest.raises(MoIConfigError, match="mixinputs_noise"):
        MoIConfig(mode="direct", noise="dirichlet")


def test_noise_temperature_without_noise_is_an_error():
    with pytest.raises(MoIConfigError, match="mixinputs_noise_temperature"):
        MoIConfig.from_request({"mixinputs_noise_temperature": 0.5})
    with pytest.raises(MoIConfigError, match="mixinputs_noise_temperature"):
        MoIConfig(noise_temperature=0.5)


EVERY_METHOD = [
    MoIConfig(),
    MoIConfig(beta=INF, top_k=5),
    MoIConfig(beta=0.25, top_k=3, prior="sampling"),
    MoIConfig(mode="direct"),
    MoIConfig(mode="soft"),
    MoIConfig(mode="soft", top_k=16),
    MoIConfig(mode="soft", noise="gumbel"),
    MoIConfig(mode="soft", noise="dirichlet", noise_temperature=0.3),
    MoIConfig(mode="soft", region="thinking", cold_stop_entropy=0.1, cold_stop_steps=32),
    MoIConfig(mode="soft", region="thinking", think_end=151668, noise="gumbel"),
    MoIConfig(beta=2.0, noise="dirichlet"),
    MoIConfig(region="thinking", think_end="<end_think>"),
    MoIConfig(mode="direct", region="thinking", cold_stop_entropy=1.5),
]


@pytest.mark.parametrize("config", EVERY_METHOD, ids=lambda c: c.name)
def test_request_round_trip(config):
    fields = config.to_request()
    assert all(key.startswith("mixinputs_") for key in fields)
    assert MoIConfig.from_request(fields) == config
    # and under a default config that asks for something else
    other = MoIConfig(beta=7.0, mode="soft", noise="gumbel")
    assert MoIConfig.from_request(fields, default=other) == config


def test_names_and_which_configs_need_the_method_step():
    assert MoIConfig().name == "moi" and not MoIConfig().needs_method_step
    assert not MoIConfig(mode="direct").needs_method_step
    assert MoIConfig(mode="soft").name == "soft" and MoIConfig(mode="soft").needs_method_step
    assert MoIConfig(region="thinking").name == "moi@thinking"
    assert MoIConfig(region="thinking").needs_method_step
    assert MoIConfig(noise="dirichlet").name == "moi+dirichlet"
    assert MoIConfig(noise="dirichlet").needs_method_step


# ------------------------------------------------------------------------------------ mixing
def rows_of(configs, positions=None, seeds=None):
    n = len(configs)
    return method_rows(
        configs, positions if positions is not None else [0] * n, seeds or list(range(n))
    )


@pytest.mark.parametrize("y_inside", [True, False])
def test_soft_is_the_concept_token_over_the_top_k(gen, y_inside):
    batch, vocab, dim, k = 5, 300, 24, 10
    logits = torch.randn(batch, vocab, generator=gen) * 3
    emb = torch.randn(vocab, dim, generator=gen)
    order = logits.argsort(dim=-1, descending=True)
    sampled = order[:, 2] if y_inside else order[:, 50]  # inside / outside the top 10
    rows = rows_of([MoIConfig(mode="soft", think_end=NEVER)] * batch)
    h, step, weights = mix_step(logits, sampled, emb, rows, fresh_state(batch), top_k=k)
    assert torch.equal(weights[:, k], torch.zeros(batch))  # the y slot carries nothing
    # While thinking it emits the heaviest token it is fed (Soft Thinking's release), not y.
    assert torch.equal(step.sampled, order[:, 0]) and torch.equal(step.ids[:, k], order[:, 0])
    assert step.forced.all() and step.chosen.all()
    # Independent float64: p~ renormalized over the top-K, Σ p~_i E[i].
    top_vals, top_ids = torch.topk(logits.double(), k)
    p = torch.softmax(top_vals, dim=-1)
    want = torch.einsum("bk,bkd->bd", p, emb.double()[top_ids])
    torch.testing.assert_close(h.double(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weights[:, :k].double(), p, rtol=1e-5, atol=1e-7)
    # Soft rows mix the same whatever token was sampled.
    other = order[:, 0]
    h2, _, _ = mix_step(logits, other, emb, rows, fresh_state(batch), top_k=k)
    assert torch.equal(h, h2)


def test_rows_without_methods_get_plain_moi_and_direct_weights(gen):
    logits = torch.randn(4, 200, generator=gen) * 2
    sampled = torch.tensor([3, 17, 150, 42])
    cands = candidates_from_logits(logits, sampled, 20)
    configs = [MoIConfig(beta=0.5), MoIConfig(mode="direct"), MoIConfig(beta=INF), MoIConfig()]
    step = apply_methods(cands, rows_of(configs), fresh_state(4))
    got = mixture_weights(step.scores, step.beta, step.direct)
    beta = torch.tensor([0.5, 1.0, INF, 1.0])
    direct = torch.tensor([False, True, False, False])
    # Direct mixture weighs the top-K alone, y's slot never (issue 24: as the original release).
    assert torch.equal(got, mixture_weights(drop_sampled(cands.scores, direct), beta, direct))
    assert step.state.thinking.all() and not step.forced.any()


def test_region_feeds_the_think_end_token_and_every_later_token_plainly(gen):
    think_end, k = 5, 8
    config = MoIConfig(beta=0.0, region="thinking", think_end=think_end)
    rows = rows_of([config, config])
    logits = torch.randn(2, 64, generator=gen)
    logits[:, think_end] = 4.0  # inside the top-K
    # step 0: row 0 samples the think-end token, row 1 another token
    cands = candidates_from_logits(logits, torch.tensor([think_end, 9]), k)
    step = apply_methods(cands, rows, fresh_state(2))
    w = mixture_weights(step.scores, step.beta, step.direct)
    assert torch.equal(w[0], torch.eye(k + 1)[k])  # plain E[think_end]
    assert step.state.thinking.tolist() == [False, True]
    plain_moi = mixture_weights(cands.scores, torch.tensor([0.0]), None)[1]
    assert torch.equal(w[1], plain_moi) and w[1, k] < 1  # row 1 still mixes
    # step 1: row 0 is past its region, whatever it samples; row 1 now ends its own.
    cands = candidates_from_logits(logits, torch.tensor([11, think_end]), k)
    step = apply_methods(cands, rows, step.state)
    w = mixture_weights(step.scores, step.beta, step.direct)
    assert torch.equal(w, torch.eye(k + 1)[[k, k]])
    assert step.state.thinking.tolist() == [False, False]
    # step 2: both plain for good, the think-end token again included
    cands = candidates_from_logits(logits, torch.tensor([think_end, 30]), k)
    step = apply_methods(cands, rows, step.state)
    assert torch.equal(mixture_weights(step.scores, step.beta, step.direct), w)
    assert not step.state.thinking.any() and not step.forced.any()


def peaked(batch, vocab, sharp):
    """Logits whose top-K entropy is low (``sharp``) or high (flat)."""
    logits = torch.zeros(batch, vocab)
    if sharp:
        logits[:, 7] = 30.0
    return logits


def test_cold_stop_forces_the_think_end_token_at_the_lth_low_entropy_step():
    think_end, k, steps = 3, 6, 3
    config = MoIConfig(
        mode="soft",
        region="thinking",
        think_end=think_end,
        cold_stop_entropy=0.5,
        cold_stop_steps=steps,
        cold_stop_measure="candidates",
        top_k=k,
    )
    rows = rows_of([config])
    state = fresh_state(1)
    sampled = torch.tensor([7])
    for i in range(steps):
        cands = candidates_from_logits(peaked(1, 40, sharp=True), sampled, k)
        assert candidate_entropy(cands.scores[:, :k]).item() < 0.5
        step = apply_methods(cands, rows, state)
        state = step.state
        forced = i == steps - 1
        assert step.forced.tolist() == [forced]
        assert step.sampled.tolist() == [think_end if forced else 7]
        assert step.ids[0, k].item() == (think_end if forced else 7)
        assert state.thinking.tolist() == [not forced]
        assert state.low_entropy_steps.tolist() == [0 if forced else i + 1]
    w = mixture_weights(step.scores, step.beta, step.direct)
    assert torch.equal(w[0], torch.eye(k + 1)[k])  # the forced token is fed plainly
    # after the region: never forced again, always plain
    step = apply_methods(candidates_from_logits(peaked(1, 40, True), sampled, k), rows, state)
    assert not step.forced.any() and step.sampled.tolist() == [7]


def test_cold_stop_streak_resets_on_a_high_entropy_step():
    think_end, k = 3, 6
    config = MoIConfig(
        mode="soft",
        region="thinking",
        think_end=think_end,
        cold_stop_entropy=0.5,
        cold_stop_steps=3,
        cold_stop_measure="candidates",
        top_k=k,
    )
    rows, state = rows_of([config]), fresh_state(1)
    sampled = torch.tensor([7])
    pattern = [True, True, False, True, True, True]  # sharp / flat steps
    forced_at = []
    for i, sharp in enumerate(pattern):
        step = apply_methods(candidates_from_logits(peaked(1, 40, sharp), sampled, k), rows, state)
        state = step.state
        if step.sampled.item() == think_end:
            forced_at.append(i)
        if i == 2:
            assert state.low_entropy_steps.tolist() == [0] and state.thinking.item()
    assert forced_at == [5]


def test_cold_stop_does_not_depend_on_the_sampled_token(gen):
    k = 5
    config = MoIConfig(
        region="thinking",
        think_end=2,
        cold_stop_entropy=1.0,
        cold_stop_steps=1,
        cold_stop_measure="candidates",
    )
    logits = torch.randn(6, 50, generator=gen) * torch.tensor([0.1, 1, 3, 5, 8, 20])[:, None]
    rows, state = rows_of([config] * 6), fresh_state(6)
    a = apply_methods(
        candidates_from_logits(logits, torch.zeros(6, dtype=torch.long), k), rows, state
    )
    b = apply_methods(candidates_from_logits(logits, logits.argmin(-1), k), rows, state)
    assert torch.equal(a.forced, b.forced)
    assert 0 < int(a.forced.sum()) < 6  # the sharp rows only
    assert a.forced.tolist() == (candidate_entropy(logits.topk(k).values) < 1.0).tolist()


# ---------------------------------------------------------------------------------------- noise
NOISY = [
    MoIConfig(mode="soft", noise="dirichlet", think_end=NEVER),
    MoIConfig(mode="soft", noise="gumbel", think_end=NEVER),
    MoIConfig(beta=1.0, noise="dirichlet", noise_temperature=0.3),
    MoIConfig(beta=0.5, noise="gumbel", noise_temperature=2.0),
]


@pytest.mark.parametrize("config", NOISY, ids=lambda c: c.name)
def test_noise_is_reproducible_and_keyed_by_seed_and_position(gen, config):
    logits = torch.randn(3, 120, generator=gen) * 2
    emb = torch.randn(120, 16, generator=gen)
    sampled = torch.tensor([4, 60, 100])

    def run(seeds, positions):
        rows = method_rows([config] * 3, positions, seeds)
        return mix_step(logits, sampled, emb, rows, fresh_state(3), top_k=config.top_k)

    h, _, w = run([1, 2, 3], [0, 5, 9])
    h2, _, w2 = run([1, 2, 3], [0, 5, 9])
    assert torch.equal(h, h2) and torch.equal(w, w2)
    assert torch.allclose(w.sum(-1), torch.ones(3))
    cands = candidates_from_logits(logits, sampled, config.top_k)
    plain = mixture_weights(cands.scores, *_bd(config))
    assert not torch.allclose(w, plain, atol=1e-3)  # noise changed the weights
    for seeds, positions in (([4, 5, 6], [0, 5, 9]), ([1, 2, 3], [1, 6, 10])):
        _, _, w3 = run(seeds, positions)
        for b in range(3):
            assert not torch.allclose(w3[b], w[b], atol=1e-4)


def _bd(config):
    return torch.tensor([config.beta]).expand(3), torch.tensor([config.direct]).expand(3)


@pytest.mark.parametrize("noise", ["dirichlet", "gumbel"])
def test_zero_weights_stay_zero(noise):
    rows = rows_of([MoIConfig(noise=noise)] * 2, seeds=[3, 4])
    w = torch.tensor([[0.5, 0.0, 0.3, 0.2, 0.0], [0.0, 1.0, 0.0, 0.0, 0.0]])
    ids = torch.tensor([[4, 9, 11, 12, 13], [2, 3, 8, 1, 0]])
    scores = noisy_scores(w, ids, rows)
    noisy = torch.softmax(scores, dim=-1)
    assert torch.equal(noisy == 0, w == 0)
    assert torch.equal(noisy[1], w[1])  # a single candidate keeps all the mass


@pytest.mark.parametrize("noise", ["dirichlet", "gumbel"])
def test_noise_follows_the_token_not_its_column(gen, noise):
    rows = rows_of([MoIConfig(noise=noise)], seeds=[99])
    w = torch.softmax(torch.randn(1, 6, generator=gen), -1)
    ids = torch.tensor([[10, 20, 30, 40, 50, 60]])
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    a = noisy_scores(w, ids, rows)
    b = noisy_scores(w[:, perm], ids[:, perm], rows)
    assert torch.equal(a[:, perm], b)


def test_a_row_is_bit_identical_alone_and_in_a_mixed_batch(gen):
    vocab, dim, width = 400, 32, 20
    logits = torch.randn(7, vocab, generator=gen) * 3
    emb = torch.randn(vocab, dim, generator=gen)
    sampled = torch.randint(0, vocab, (7,), generator=gen)
    configs = [
        MoIConfig(mode="soft", noise="gumbel", think_end=NEVER),
        MoIConfig(beta=0.5),
        MoIConfig(mode="soft", noise="dirichlet", noise_temperature=0.7, think_end=NEVER),
        MoIConfig(mode="direct", top_k=7),
        MoIConfig(beta=2.0, noise="dirichlet", top_k=12),
        MoIConfig(mode="soft", region="thinking", think_end=int(sampled[5])),
        MoIConfig(region="thinking", think_end=1, cold_stop_entropy=9.0, cold_stop_steps=1),
    ]
    seeds, positions = [11, 12, 13, 14, 15, 16, 17], [0, 3, 3, 8, 1, 2, 4]
    row_k = torch.tensor([c.top_k for c in configs])
    rows = method_rows(configs, positions, seeds)
    h, step, w = mix_step(logits, sampled, emb, rows, fresh_state(7), width, row_k)
    # Soft rows choose their token while thinking (their top-1); Cold Stop forces row 6's.
    assert step.chosen.tolist() == [True, False, True, False, False, True, True]
    assert step.sampled[6] == 1 and step.forced[6]
    for b in range(7):
        alone_rows = method_rows([configs[b]], [positions[b]], [seeds[b]])
        sl = slice(b, b + 1)
        h1, step1, w1 = mix_step(
            logits[sl], sampled[sl], emb, alone_rows, fresh_state(1), width, row_k[sl]
        )
        assert torch.equal(h1, h[sl]), configs[b].name
        assert torch.equal(w1, w[sl])
        assert torch.equal(step1.state.thinking, step.state.thinking[sl])
        # and at the row's own width instead of the batch's: the same mixture, but not always
        # bit for bit (softmax over 11 or 21 columns, with exact zeros in the extra ones, sums in
        # another order on some CPUs: AVX-512 here). Engines never change width (one per engine).
        h2, _, _ = mix_step(logits[sl], sampled[sl], emb, alone_rows, fresh_state(1), int(row_k[b]))
        torch.testing.assert_close(h2, h1, rtol=1e-6, atol=1e-6, msg=configs[b].name)


def noised_many(noise, w, tau, n):
    """n samples of the noised weights ``w`` [C], one per seed."""
    config = MoIConfig(noise=noise, noise_temperature=tau)
    rows = method_rows([config] * n, [5] * n, list(range(n)))
    ids = torch.arange(10, 10 + w.shape[0]).expand(n, -1)
    return torch.softmax(noisy_scores(w.expand(n, -1), ids, rows), dim=-1)


@pytest.mark.parametrize("tau", [1.0, 0.25, 4.0])
def test_dirichlet_mean_and_variance_match_theory(tau):
    w = torch.tensor([0.5, 0.25, 0.15, 0.07, 0.03])
    n = 40000
    x = noised_many("dirichlet", w, tau, n).double()
    # Dirichlet(alpha = w / tau): mean w, variance w (1 - w) / (sum(alpha) + 1), sum(alpha) = 1/tau.
    var = (w * (1 - w) / (1 / tau + 1)).double()
    se = (var / n).sqrt()
    assert ((x.mean(0) - w.double()).abs() < 5 * se).all(), (x.mean(0), w)
    torch.testing.assert_close(x.var(0), var, rtol=0.08, atol=0)
    # Cov(x_i, x_j) = -w_i w_j / (sum(alpha) + 1): the draws are one Dirichlet, not independent.
    cov01 = ((x[:, 0] - x[:, 0].mean()) * (x[:, 1] - x[:, 1].mean())).mean()
    want = -w[0] * w[1] / (1 / tau + 1)
    assert abs(cov01.item() - want.item()) < 0.12 * abs(want.item())


@pytest.mark.parametrize("tau", [0.5, 1.0, 3.0])
def test_gumbel_argmax_frequency_matches_the_weights(tau):
    w = torch.tensor([0.45, 0.3, 0.15, 0.1])
    n = 40000
    x = noised_many("gumbel", w, tau, n)
    freq = torch.bincount(x.argmax(-1), minlength=4).double() / n
    se = (w.double() * (1 - w.double()) / n).sqrt()
    assert ((freq - w.double()).abs() < 5 * se).all(), (freq, w)
    # A smaller tau makes the noised weights sharper.
    assert x.max(-1).values.mean() > noised_many("gumbel", w, tau * 4, 2000).max(-1).values.mean()


def test_counter_uniform_is_in_the_open_interval_stateless_and_uniform():
    seed = torch.tensor([0, 1, 2**40 + 3, 2**62 - 1])[:, None, None]
    pos = torch.arange(50)[None, :, None]
    tok = torch.tensor([0, 1, 151668, 2**31 - 1])[None, None, :]
    draw = torch.tensor(0)
    state_before = torch.get_rng_state()
    u = counter_uniform(seed, pos, tok, draw)
    assert torch.equal(torch.get_rng_state(), state_before)  # no generator touched
    assert u.shape == (4, 50, 4) and u.dtype == torch.float32
    assert ((u > 0) & (u < 1)).all()
    assert torch.equal(u, counter_uniform(seed, pos, tok, draw))
    assert torch.unique(u).numel() == u.numel()  # every key its own number
    assert not torch.equal(u, counter_uniform(seed, pos, tok, torch.tensor(1)))
    many = counter_uniform(torch.tensor(7), torch.arange(200_000), torch.tensor(3), draw).double()
    assert abs(many.mean().item() - 0.5) < 0.005
    assert abs(many.var().item() - 1 / 12) < 0.002
    hist = torch.histc(many, bins=10, min=0, max=1) / many.numel()
    assert (hist - 0.1).abs().max() < 0.005


def test_shapes_depend_only_on_batch_and_width(gen):
    think_end, k, dim = 2, 6, 8
    emb = torch.randn(60, dim, generator=gen)
    configs = [
        MoIConfig(
            mode="soft",
            region="thinking",
            think_end=think_end,
            cold_stop_entropy=1e-3,
            cold_stop_steps=1,
            noise="dirichlet",
        ),
        MoIConfig(
            mode="soft",
            region="thinking",
            think_end=think_end,
            cold_stop_entropy=50.0,
            cold_stop_steps=1,
            noise="gumbel",
        ),
    ]
    shapes = set()
    for config in configs:
        for logits in (peaked(3, 60, True), torch.randn(3, 60, generator=gen)):
            for sampled in (torch.tensor([think_end] * 3), torch.tensor([1, 7, 9])):
                rows = method_rows([config] * 3, [0, 1, 2], [1, 2, 3])
                h, step, w = mix_step(logits, sampled, emb, rows, fresh_state(3), top_k=k)
                tensors = [h, w, step.ids, step.scores, step.sampled, step.forced, *step.state]
                shapes.add(tuple(t.shape for t in tensors))
                assert w.dtype == torch.float32 and step.ids.dtype == torch.long
    assert len(shapes) == 1


def test_apply_methods_does_not_modify_its_inputs(gen):
    logits = torch.randn(2, 50, generator=gen)
    cands = candidates_from_logits(logits, torch.tensor([1, 2]), 5)
    before = Candidates(cands.ids.clone(), cands.scores.clone())
    config = MoIConfig(
        mode="soft",
        region="thinking",
        think_end=1,
        noise="gumbel",
        cold_stop_entropy=9.0,
        cold_stop_steps=1,
    )
    rows, state = rows_of([config] * 2), fresh_state(2)
    apply_methods(cands, rows, state)
    assert torch.equal(cands.ids, before.ids) and torch.equal(cands.scores, before.scores)
    assert state.thinking.all() and not state.low_entropy_steps.any()


def test_counter_uniform_never_reaches_one_and_gumbel_stays_finite():
    # A key found by search (SmolLM2's vocabulary, small seeds and positions) that hits the top.
    seed, position, token = 62, 6, 14945
    u = counter_uniform(
        torch.tensor(seed), torch.tensor(position), torch.tensor([token]), torch.tensor(0)
    )
    rows = method_rows(
        [MoIConfig(mode="soft", noise="gumbel", think_end=NEVER)], [position], [seed]
    )
    weights = torch.softmax(
        noisy_scores(torch.tensor([[0.6, 0.4]]), torch.tensor([[token, 5]]), rows), dim=-1
    )
    assert (u < 1).all() and torch.isfinite(weights).all()


@pytest.mark.parametrize("noise, tau", [("dirichlet", 1.0), ("gumbel", 0.5)])
def test_noise_treats_the_sampled_token_as_one_candidate(noise, tau):
    """MoI with y inside the top-K: the noised weights per token are Dirichlet(w / tau) (mean w)
    and Gumbel-softmax (argmax distributed as w) of the token distribution w."""
    n = 40000
    rows = method_rows(
        [MoIConfig(beta=1.0, noise=noise, noise_temperature=tau)] * n, [0] * n, list(range(n))
    )
    scores = torch.tensor([0.4, 0.3, 0.2, 0.1, 0.0]).log().expand(n, -1)  # y slot: -inf
    ids = torch.tensor([10, 11, 12, 13, 11]).expand(n, -1)  # y = 11, the top-K's column 1
    step = apply_methods(Candidates(ids, scores), rows, fresh_state(n))
    w = mixture_weights(step.scores, step.beta, step.direct)
    clean = mixture_weights(scores[:1], torch.tensor([1.0]))[0]

    def per_token(x):  # [..., 5] columns -> [..., 4] tokens 10..13
        return torch.stack([x[..., 0], x[..., 1] + x[..., 4], x[..., 2], x[..., 3]], dim=-1)

    want = per_token(clean).double()
    got = per_token(w).double()
    if noise == "dirichlet":
        observed = got.mean(0)
        se = (want * (1 - want) / (1 / tau + 1) / n).sqrt()
    else:
        observed = torch.bincount(got.argmax(-1), minlength=4).double() / n
        se = (want * (1 - want) / n).sqrt()
    assert ((observed - want).abs() < 5 * se).all(), (observed, want)


# -- prefix-cache keys ----------------------------------------------------------------------------
def test_prefix_cache_keys_tell_every_method_apart():
    """KV built from one method's inputs is never served to another: each method, K, region,
    think-end token, Cold Stop setting and noise (per seed) has its own key."""
    from types import SimpleNamespace

    from mixinputs.vllm_plugin.patches.prefix_cache import moi_cache_key

    def key(extra, seed=None, request_id="r"):
        config = MoIConfig.from_request(extra)  # what the front end resolves for the engine
        params = SimpleNamespace(
            extra_args={KEY_RESOLVED: config.to_resolved()} if config else extra, seed=seed,
            temperature=0.8, top_p=1.0, top_k=0, min_p=0.0,
            presence_penalty=0.0, frequency_penalty=0.0, repetition_penalty=1.0,
        )  # fmt: skip
        return moi_cache_key(SimpleNamespace(sampling_params=params, request_id=request_id))

    thinking = {"mixinputs_region": "thinking", "mixinputs_think_end": 7}
    extras = [
        {"mixinputs_beta": 1.0},
        {"mixinputs_mode": "direct"},
        {"mixinputs_mode": "soft"},
        {"mixinputs_mode": "soft", "mixinputs_top_k": 5},
        {"mixinputs_mode": "soft", **thinking},
        {"mixinputs_mode": "soft", **thinking, "mixinputs_think_end": 8},
        {"mixinputs_mode": "soft", **thinking, "mixinputs_cold_stop_entropy": 0.01},
        {"mixinputs_mode": "soft", "mixinputs_noise": "gumbel"},
        {"mixinputs_mode": "soft", "mixinputs_noise": "gumbel", "mixinputs_noise_temperature": 1},
        {"mixinputs_mode": "soft", "mixinputs_noise": "dirichlet"},
        {"mixinputs_beta": 1.0, "mixinputs_noise": "dirichlet"},
        {"mixinputs_mode": "swir"},
        {"mixinputs_mode": "swir", "mixinputs_swir_window": 64},
        {"mixinputs_mode": "swir", "mixinputs_swir_max_switches": 2},
        {"mixinputs_mode": "selar"},
        {"mixinputs_mode": "selar", "mixinputs_selar_threshold": 0.7},
        {"mixinputs_mode": "multiplex"},
        {"mixinputs_mode": "multiplex", "mixinputs_multiplex_width": 4},
        {"mixinputs_mode": "multiplex", "mixinputs_multiplex_weighted": False},
    ]
    keys = [key(e, seed=3) for e in extras]
    assert len(set(keys)) == len(extras)
    assert key(extras[0]) == key(dict(extras[0]))  # the same method shares its KV
    assert key({"mixinputs_mode": "off"}) is None and key(None) is None
    noisy = extras[7]
    assert key(noisy, seed=3) == key(noisy, seed=3, request_id="other")
    assert key(noisy, seed=3) != key(noisy, seed=4)
    # Unseeded noise draws a fresh seed in the worker: its KV is never shared.
    assert key(noisy, request_id="a") != key(noisy, request_id="b")
    multiplex = {"mixinputs_mode": "multiplex"}  # its K draws follow the seed too
    assert key(multiplex, seed=3) != key(multiplex, seed=4)
    assert key(multiplex, request_id="a") != key(multiplex, request_id="b")
    selar = {"mixinputs_mode": "selar"}  # deterministic given its inputs: shared across seeds
    assert key(selar, seed=3) == key(selar, seed=4)


def test_a_think_end_token_without_a_thinking_region_is_refused():
    with pytest.raises(MoIConfigError, match=r"mixinputs_think_end.*mixinputs_region"):
        MoIConfig.from_request({"mixinputs_beta": 1.0, "mixinputs_think_end": 5})
    soft_all = {"mixinputs_mode": "soft", "mixinputs_region": "all", "mixinputs_think_end": 5}
    with pytest.raises(MoIConfigError, match=r"mixinputs_think_end.*mixinputs_region"):
        MoIConfig.from_request(soft_all)
    config = MoIConfig.from_request({"mixinputs_region": "thinking", "mixinputs_think_end": 5})
    assert config.think_end == 5


# -- Soft Thinking as released (issue 24) ------------------------------------------------------
def release_run(config, gen, steps=40, temperature=0.6, top_k=30, top_p=0.95, seed=3, greedy=False):
    """``steps`` of ``mixing.mix_step`` for one row on random logits (peaked runs and flat
    steps; the think-end token 7 leads at step 30), recorded as ``tests.faithfulness`` reads
    them: the sampler's distribution is cut by its top-k / top-p, the entropy read from the raw
    logits at the request's temperature. Returns the records."""
    from tests import faithfulness

    vocab, dim = 300, 16
    table = torch.randn(vocab, dim, generator=gen)
    state, records = fresh_state(1), []
    for t in range(steps):
        raw = torch.randn(1, vocab, generator=gen) * (8.0 if t % 7 < 4 else 1.5)
        if t == 30:
            raw[0, 7] = 80.0
        at = raw / (1.0 if greedy else temperature)
        prior = mask_top_k_top_p(at, torch.tensor([1 if greedy else top_k]), torch.tensor([top_p]))
        if greedy:
            y = at.argmax(-1)
        else:
            y = torch.multinomial(torch.softmax(prior, -1), 1, generator=gen)[:, 0]
        rows = method_rows([config], [t], [seed], greedy=greedy, temperature=temperature)
        h, step, _ = mix_step(prior, y, table, rows, state, config.top_k, vocab_logits=raw)
        records.append(faithfulness.Step(t, prior[0], int(y), int(step.sampled), h[0], at[0]))
        state = step.state
    return records, table


RELEASED = {
    "soft": MoIConfig(mode="soft", think_end=7),
    "soft+gumbel": MoIConfig(mode="soft", think_end=7, noise="gumbel"),
    "soft+dirichlet": MoIConfig(mode="soft", think_end=7, noise="dirichlet"),
    "soft cold stop": MoIConfig(
        mode="soft", think_end=7, cold_stop_entropy=0.5, cold_stop_steps=2, eos=0
    ),
    "soft+gumbel cold stop": MoIConfig(
        mode="soft", think_end=7, noise="gumbel", cold_stop_entropy=0.1, cold_stop_steps=2
    ),
    "soft+dirichlet cold stop": MoIConfig(
        mode="soft", think_end=7, noise="dirichlet", cold_stop_entropy=0.1, cold_stop_steps=3
    ),
}


@pytest.mark.parametrize("greedy", [False, True], ids=["seeded", "greedy"])
@pytest.mark.parametrize("name", list(RELEASED))
def test_soft_thinking_follows_its_release_step_by_step(gen, name, greedy):
    """The reference step against the transcription of Soft Thinking's sampler step and
    ``update_topk_info`` (Randomized Soft Thinking's with noise): the same token at every step,
    the same input, across the think-end token, Cold Stop and the after-thinking abort."""
    from tests import faithfulness

    config = RELEASED[name]
    records, table = release_run(config, gen, greedy=greedy)
    counts = faithfulness.soft_thinking(records, config, table, 3, 30, 0.95, greedy=greedy)
    assert counts["switches"] == 1, counts  # it left thinking once, at </think>
    if "cold" in name and not greedy:
        assert counts["cold_stops"] == 1, counts
        assert counts["aborts"] == (config.noise == "none"), counts  # Soft Thinking's only


def test_without_noise_the_thinking_tokens_do_not_depend_on_the_seed():
    """Soft Thinking's trace while thinking is its top-1: no seed, no sample enters it."""
    tokens = []
    for seed in (1, 2):
        records, _ = release_run(RELEASED["soft"], torch.Generator().manual_seed(0), seed=seed)
        tokens.append([r.emitted for r in records])
    same_logits = torch.Generator().manual_seed(0)
    records, _ = release_run(
        replace(RELEASED["soft"], soft_emit="sample"), same_logits, temperature=2.0
    )
    assert tokens[0] == tokens[1]
    assert tokens[0] != [r.emitted for r in records]  # emitting the sample differs


def test_soft_emit_sample_keeps_the_sampled_token():
    """Today's behaviour stays a named option: ``soft_emit="sample"`` emits the sampled y."""
    sample = MoIConfig(mode="soft", think_end=NEVER, soft_emit="sample")
    top1 = MoIConfig(mode="soft", think_end=NEVER)
    logits = torch.randn(3, 80, generator=torch.Generator().manual_seed(5))
    sampled = torch.tensor([4, 50, 79])
    for config, want in ((sample, sampled), (top1, logits.argmax(-1))):
        rows = method_rows([config] * 3, [0] * 3, [1, 2, 3])
        _, step, _ = mix_step(logits, sampled, torch.eye(80), rows, fresh_state(3), top_k=10)
        assert torch.equal(step.sampled, want), config.soft_emit
        assert step.forced.tolist() == (want != sampled).tolist()
    assert row_settings(top1).soft_top1 and not row_settings(sample).soft_top1


def test_cold_stop_reads_the_whole_vocabulary_before_the_sampler_cuts():
    """Top-p keeps one token: the candidates' entropy is exactly 0, the vocabulary's is not
    (Soft Thinking's ``sampler.py:141``); Cold Stop compares the latter with τ."""
    logits = torch.zeros(1, 1000)
    logits[0, 3] = 8.0  # p1 ≈ 0.75 at T 1: top-p 0.5 keeps token 3 alone
    config = MoIConfig(mode="soft", think_end=9, cold_stop_entropy=0.5, cold_stop_steps=1, eos=0)
    prior = mask_top_k_top_p(logits, torch.tensor([0]), torch.tensor([0.5]))
    cands = candidates_from_logits(prior, torch.tensor([3]), 10)
    assert candidate_entropy(cands.scores[:, :10]).item() == 0.0
    rows = method_rows([config], [0], [0], temperature=1.0)
    full = vocab_entropy(logits, rows.temperature, torch.tensor([False]))
    p = torch.softmax(logits.double(), -1)
    assert full.item() == pytest.approx(float(-(p * p.log()).sum()), rel=1e-5) and full > 0.5
    step = apply_methods(cands, rows._replace(vocab_entropy=full), fresh_state(1))
    assert step.sampled.item() == 3  # 2.3 nats: not low, no Cold Stop
    candidates = rows._replace(cold_stop_measure=torch.tensor([MEASURE_CODES["candidates"]]))
    assert apply_methods(cands, candidates, fresh_state(1)).sampled.item() == 9  # 0 < 0.5
    normalized = vocab_entropy(logits, rows.temperature, torch.tensor([True]))
    assert normalized.item() == pytest.approx(full.item() / math.log(1000), rel=1e-6)


def test_after_thinking_cold_stop_ends_the_request_with_eos():
    """Soft Thinking's release keeps counting after ``</think>`` and aborts at L
    (``schedule_batch.py:761-769``); an engine emits EOS at the next step instead, and from then
    on. Randomized Soft Thinking (noise) does not count after thinking."""
    eos, think_end, k = 0, 9, 5
    config = MoIConfig(mode="soft", think_end=think_end, cold_stop_entropy=0.5, cold_stop_steps=2)
    config = replace(config, eos=eos)
    assert (
        config.stop_abort
        and not MoIConfig(mode="soft", noise="gumbel", cold_stop_entropy=0.5).stop_abort
    )
    rows = method_rows([config], [0], [0])
    state = fresh_state(1)._replace(thinking=torch.tensor([False]))  # past its region
    emitted = []
    for entropy in (0.1, 0.9, 0.1, 0.1, 0.9, 0.1):
        step_rows = rows._replace(vocab_entropy=torch.tensor([entropy]))
        cands = candidates_from_logits(peaked(1, 40, True), torch.tensor([7]), k)
        step = apply_methods(cands, step_rows, state)
        emitted.append(step.sampled.item())
        state = step.state
    assert emitted == [7, 7, 7, 7, eos, eos]  # L = 2 at step 3: EOS from step 4, whatever follows
    off = rows._replace(cold_stop_abort=torch.tensor([False]), vocab_entropy=torch.tensor([0.1]))
    state = fresh_state(1)._replace(thinking=torch.tensor([False]))
    for _ in range(4):
        step = apply_methods(
            candidates_from_logits(peaked(1, 40, True), torch.tensor([7]), k), off, state
        )
        state = step.state
        assert step.sampled.item() == 7 and state.low_entropy_steps.item() == 0


def test_dirichlet_over_every_kept_token_then_the_top_k():
    """The releases draw Gamma(α·p) for every kept token and take the top-K of the draws; the
    top-K-first order (``dirichlet_support="top_k"``) only ever mixes the prior's top-K."""
    gen = torch.Generator().manual_seed(11)
    logits = torch.randn(1, 400, generator=gen)  # a flat prior: tail tokens matter
    kept_cfg = MoIConfig(mode="soft", think_end=NEVER, noise="dirichlet")
    topk_cfg = replace(kept_cfg, dirichlet_support="top_k")
    assert kept_cfg.dirichlet_kept and not topk_cfg.dirichlet_kept
    assert (kept_cfg.top_k, kept_cfg.noise_temperature) == (15, 0.25)  # Randomized: K 15, α 4
    outside = 0
    for position in range(30):
        rows = method_rows([kept_cfg], [position], [4])
        draws = kept_dirichlet(logits, rows, 15)
        p = torch.softmax(logits, -1)
        g = torch.exp(
            counter_log_gamma(p / 0.25, rows.seed, rows.position, torch.arange(400)[None])
        )
        assert torch.equal(draws.ids[0], g[0].topk(15).indices)
        outside += int((~torch.isin(draws.ids[0], logits[0].topk(15).indices)).sum())
        rows_k = method_rows([topk_cfg], [position], [4])
        _, step, _ = mix_step(logits, torch.tensor([0]), torch.eye(400), rows_k, fresh_state(1), 15)
        assert torch.isin(step.ids[0, :15], logits[0].topk(15).indices).all()
    assert outside > 0  # draws of tokens beyond the prior's top-K win places


# -- config rules of issue 24 ------------------------------------------------------------------
def test_each_preset_follows_the_release_it_cites():
    soft = MoIConfig(mode="soft")
    assert (soft.region, soft.top_k, soft.soft_emit) == ("thinking", 10, "top1")
    cold = replace(soft, cold_stop_entropy=0.01)
    assert (cold.stop_measure, cold.stop_abort) == ("vocab", True)
    for noise, tau in (("dirichlet", 0.25), ("gumbel", 0.5)):
        noisy = MoIConfig(mode="soft", noise=noise, cold_stop_entropy=0.1)
        assert (noisy.top_k, noisy.noise_temperature) == (15, tau)
        assert (noisy.stop_measure, noisy.stop_abort) == ("vocab_normalized", False)
        assert MoIConfig(noise=noise).noise_temperature == {"dirichlet": 1.0, "gumbel": 0.5}[noise]
    req = MoIConfig.from_request({"mixinputs_mode": "soft", "mixinputs_noise": "gumbel"})
    assert (req.top_k, req.region) == (15, "thinking")
    assert MoIConfig.from_request({"mixinputs_mode": "soft", "mixinputs_region": "all"}).name == (
        "soft@all"
    )


@pytest.mark.parametrize(
    "fields, key",
    [
        ({"mixinputs_mode": "soft", "mixinputs_soft_emit": "argmax"}, "mixinputs_soft_emit"),
        ({"mixinputs_mode": "moi", "mixinputs_soft_emit": "top1"}, "mixinputs_soft_emit"),
        ({"mixinputs_mode": "soft", "mixinputs_cold_stop_measure": "vocab"}, "cold_stop_measure"),
        (
            {
                "mixinputs_mode": "soft",
                "mixinputs_cold_stop_entropy": 0.1,
                "mixinputs_cold_stop_measure": "nats",
            },
            "mixinputs_cold_stop_measure",
        ),
        ({"mixinputs_mode": "soft", "mixinputs_cold_stop_abort": True}, "cold_stop_abort"),
        (
            {
                "mixinputs_mode": "soft",
                "mixinputs_cold_stop_entropy": 0.1,
                "mixinputs_cold_stop_abort": "yes",
            },
            "mixinputs_cold_stop_abort",
        ),
        ({"mixinputs_mode": "soft", "mixinputs_dirichlet_support": "kept"}, "dirichlet_support"),
        (
            {
                "mixinputs_mode": "soft",
                "mixinputs_noise": "dirichlet",
                "mixinputs_dirichlet_support": "all",
            },
            "mixinputs_dirichlet_support",
        ),
        ({"mixinputs_mode": "selar", "mixinputs_prior": "raw"}, "mixinputs_prior"),
        ({"mixinputs_mode": "multiplex", "mixinputs_prior": "raw"}, "mixinputs_prior"),
    ],
)
def test_bad_release_options_name_their_key(fields, key):
    with pytest.raises(MoIConfigError, match=key):
        MoIConfig.from_request(fields)


def test_one_rule_for_mode_and_prior_everywhere():
    """A mode that reads the sampled distribution refuses the raw prior however it is asked:
    as a request key, as a ``MoIConfig`` field, and so in ``mixinputs.hf`` (never silently
    swapped)."""
    for mode in ("soft", "selar", "multiplex"):
        with pytest.raises(MoIConfigError, match="mixinputs_prior"):
            MoIConfig(mode=mode, prior="raw")
        with pytest.raises(MoIConfigError, match="mixinputs_prior"):
            MoIConfig.from_request({"mixinputs_mode": mode, "mixinputs_prior": "raw"})
        assert MoIConfig(mode=mode).prior == "sampling"
        assert MoIConfig(mode=mode, prior="sampling").prior == "sampling"
    with pytest.raises(MoIConfigError, match="mixinputs_prior"):
        MoIConfig(mode="swir", prior="sampling")
    assert MoIConfig(mode="swir").prior == "raw" and MoIConfig().prior == "raw"


@pytest.mark.parametrize(
    "config",
    [
        MoIConfig(mode="soft", soft_emit="sample"),
        MoIConfig(mode="soft", region="all"),
        MoIConfig(mode="soft", cold_stop_entropy=0.01, cold_stop_abort=False),
        MoIConfig(mode="soft", cold_stop_entropy=0.3, cold_stop_measure="candidates"),
        MoIConfig(mode="soft", noise="dirichlet", dirichlet_support="top_k"),
        MoIConfig(mode="selar", selar_gate="always", selar_greedy="released"),
        MoIConfig(mode="swir", swir_ramp_tokens=4096),
    ],
    ids=lambda c: c.name,
)
def test_release_options_round_trip(config):
    assert MoIConfig.from_request(config.to_request()) == config
    assert MoIConfig.from_resolved(config.to_resolved()) == config


def test_soft_resolves_its_think_end_and_eos_as_released(caplog):
    """Soft thinking takes the last token of the think-end text (Soft Thinking's
    ``schedule_batch.py:735``), said in the log; other methods refuse text that is not one
    token. Cold Stop's after-thinking end resolves the EOS it emits."""
    from mixinputs.tokens import resolve_tokens

    class Chars:
        eos_token_id = 0

        def encode(self, text, add_special_tokens=False):
            return [ord(c) for c in text]

    with caplog.at_level("WARNING"):
        soft = resolve_tokens(MoIConfig(mode="soft"), Chars(), 200)
    assert soft.think_end == ord(">") and "last token" in caplog.text
    assert soft.eos is None  # no Cold Stop: no EOS to emit
    with pytest.raises(MoIConfigError, match="mixinputs_think_end"):
        resolve_tokens(MoIConfig(region="thinking"), Chars(), 200)
    cold = resolve_tokens(MoIConfig(mode="soft", cold_stop_entropy=0.1), Chars(), 200)
    assert cold.eos == 0
    noisy = MoIConfig(mode="soft", noise="gumbel", cold_stop_entropy=0.1)
    assert resolve_tokens(noisy, Chars(), 200).eos is None  # Randomized: no abort

    class NoEos(Chars):
        eos_token_id = None

    with pytest.raises(MoIConfigError, match="mixinputs_cold_stop_abort"):
        resolve_tokens(MoIConfig(mode="soft", cold_stop_entropy=0.1), NoEos(), 200)
