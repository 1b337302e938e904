"""The soft-input family: request keys (``mixinputs.config``) and the reference math
(``mixinputs.mixing``: soft thinking, the thinking region, Cold Stop, Dirichlet / Gumbel noise)."""

from __future__ import annotations

import math

import pytest
import torch

from mixinputs.config import KEY_RESOLVED, MoIConfig, MoIConfigError
from mixinputs.mixing import (
    Candidates,
    apply_methods,
    candidate_entropy,
    candidates_from_logits,
    counter_uniform,
    fresh_state,
    method_rows,
    mix_step,
    mixture_weights,
    noisy_scores,
)

INF = float("inf")
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
    rows = rows_of([MoIConfig(mode="soft")] * batch)
    h, step, weights = mix_step(logits, sampled, emb, rows, fresh_state(batch), top_k=k)
    assert torch.equal(weights[:, k], torch.zeros(batch))  # the y slot carries nothing
    assert torch.equal(step.ids[:, k], sampled)
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
    assert torch.equal(got, mixture_weights(cands.scores, beta, direct))
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
        top_k=k,
    )
    rows, state = rows_of([config]), fresh_state(1)
    sampled = torch.tensor([7])
    pattern = [True, True, False, True, True, True]  # sharp / flat steps
    forced_at = []
    for i, sharp in enumerate(pattern):
        step = apply_methods(candidates_from_logits(peaked(1, 40, sharp), sampled, k), rows, state)
        state = step.state
        if step.forced.item():
            forced_at.append(i)
        if i == 2:
            assert state.low_entropy_steps.tolist() == [0] and state.thinking.item()
    assert forced_at == [5]


def test_cold_stop_does_not_depend_on_the_sampled_token(gen):
    k = 5
    config = MoIConfig(region="thinking", think_end=2, cold_stop_entropy=1.0, cold_stop_steps=1)
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
    MoIConfig(mode="soft", noise="dirichlet"),
    MoIConfig(mode="soft", noise="gumbel"),
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
        MoIConfig(mode="soft", noise="gumbel"),
        MoIConfig(beta=0.5),
        MoIConfig(mode="soft", noise="dirichlet", noise_temperature=0.7),
        MoIConfig(mode="direct", top_k=7),
        MoIConfig(beta=2.0, noise="dirichlet", top_k=12),
        MoIConfig(mode="soft", region="thinking", think_end=int(sampled[5])),
        MoIConfig(region="thinking", think_end=1, cold_stop_entropy=9.0, cold_stop_steps=1),
    ]
    seeds, positions = [11, 12, 13, 14, 15, 16, 17], [0, 3, 3, 8, 1, 2, 4]
    row_k = torch.tensor([c.top_k for c in configs])
    rows = method_rows(configs, positions, seeds)
    h, step, w = mix_step(logits, sampled, emb, rows, fresh_state(7), width, row_k)
    assert step.forced.tolist() == [False] * 6 + [True]
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
    rows = method_rows([MoIConfig(mode="soft", noise="gumbel")], [position], [seed])
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
        MoIConfig.from_request({"mixinputs_mode": "soft", "mixinputs_think_end": 5})
    config = MoIConfig.from_request({"mixinputs_region": "thinking", "mixinputs_think_end": 5})
    assert config.think_end == 5
