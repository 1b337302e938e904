"""The MoI math against an independent float64 reference of the original release's formula."""

from __future__ import annotations

import doctest
import math

import pytest
import torch

import mixinputs
from mixinputs.mixing import (
    candidates_from_logits,
    candidates_from_topk,
    mix_candidates,
    mix_embeddings,
    mixture_weights,
    normalized_entropy,
)

INF = float("inf")


def original_release_mixture(logits, y, emb, beta, k=20, direct=False):
    """The original release's formula (EvanZhuang/mixinputs @ 7aef34b, ``gpu_model_runner.py``
    1201-1236), one row at a time in float64 (MoI: y must be in the top-K; direct mixture
    ignores y)."""
    out = []
    for row, tok in zip(logits.double(), y.tolist(), strict=True):
        vals, ids = torch.topk(row, k)
        p = torch.softmax(vals, -1)
        e = emb.double()[ids]  # [K, D]
        if direct:
            out.append((p[:, None] * e).sum(0))
            continue
        h = float(-(p * p.log()).sum() / math.log(k))
        onehot = (ids == tok).double()
        assert onehot.sum() == 1, "the reference only covers y in the top-K"
        mixed = ((p + beta * onehot) / (1 + beta))[:, None] * e
        out.append(h * mixed.sum(0) + (1 - h) * emb.double()[tok])
    return torch.stack(out)


def sample_from_topk(logits, k, generator):
    vals, ids = torch.topk(logits, k)
    pick = torch.multinomial(torch.softmax(vals, -1), 1, generator=generator).squeeze(-1)
    return ids.gather(-1, pick.unsqueeze(-1)).squeeze(-1)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


@pytest.mark.parametrize("beta", [0.0, 0.25, 1.0, 4.0, 100.0])
@pytest.mark.parametrize("k", [1, 5, 20])
def test_equals_original_formula_when_y_in_topk(gen, beta, k):
    logits = torch.randn(16, 300, generator=gen) * 3
    emb = torch.randn(300, 24, generator=gen)
    y = sample_from_topk(logits, k, gen)
    got = mix_embeddings(logits, y, emb, beta, top_k=k)
    # One candidate: H = 0 by definition, so h = E[y] (the original divides by log 1 = 0).
    expected = emb[y].double() if k == 1 else original_release_mixture(logits, y, emb, beta, k=k)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


def test_direct_mode_equals_original_direct_mixture(gen):
    logits = torch.randn(8, 100, generator=gen)
    emb = torch.randn(100, 16, generator=gen)
    y = sample_from_topk(logits, 20, gen)
    got = mix_embeddings(logits, y, emb, 1.0, mode="direct")
    expected = original_release_mixture(logits, y, emb, 1.0, direct=True)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


def test_direct_mode_ignores_y_outside_the_top_k(gen):
    """Issue 24: direct mixture is Σ p_i E[i] over the top-K whatever was sampled, as released."""
    logits = torch.randn(8, 300, generator=gen)
    emb = torch.randn(300, 16, generator=gen)
    y = logits.argmin(-1)  # outside every row's top-20
    got = mix_embeddings(logits, y, emb, 1.0, mode="direct")
    expected = original_release_mixture(logits, y, emb, 1.0, direct=True)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)
    inside = mix_embeddings(logits, logits.argmax(-1), emb, 1.0, mode="direct")
    assert torch.equal(got, inside)  # y plays no part


def test_y_outside_topk_stays_convex_and_sums_to_one(gen):
    logits = torch.randn(32, 500, generator=gen)
    k = 10
    topk_ids = torch.topk(logits, k).indices
    # Pick y outside the top-K for every row: the lowest-logit token.
    y = logits.argmin(-1)
    assert not (topk_ids == y[:, None]).any()
    cands = candidates_from_logits(logits, y, k)
    for beta in (0.0, 0.5, 1.0, 8.0, INF):
        w = mixture_weights(cands.scores, torch.full((32,), beta))
        assert (w >= 0).all()
        torch.testing.assert_close(w.sum(-1), torch.ones(32))
        # y carries at least the observation's share (β+1−H)/(β+1) >= β/(β+1).
        share = 1.0 if beta == INF else beta / (beta + 1)
        assert (w[:, -1] >= share - 1e-6).all()
    # The exact rule: p over top-K ∪ {y}, H normalized by log(K+1).
    beta = 1.0
    cand_logits = torch.cat([torch.topk(logits, k).values, logits.gather(-1, y[:, None])], -1)
    p = torch.softmax(cand_logits.double(), -1)
    h = -(p * p.log()).sum(-1) / math.log(k + 1)
    onehot = torch.zeros_like(p)
    onehot[:, -1] = 1
    expected_w = (h[:, None] * p + (beta + 1 - h[:, None]) * onehot) / (beta + 1)
    w = mixture_weights(cands.scores, torch.full((32,), beta))
    torch.testing.assert_close(w.double(), expected_w, rtol=1e-5, atol=1e-6)
    emb = torch.randn(500, 8, generator=gen)
    h_vec = mix_embeddings(logits, y, emb, beta, top_k=k)
    expected_h = (expected_w[:, :, None] * emb.double()[cands.ids]).sum(1)
    torch.testing.assert_close(h_vec.double(), expected_h, rtol=1e-5, atol=1e-5)


def test_original_formula_is_not_convex_outside_topk_but_ours_is(gen):
    """Documents why the rule exists: the original weights do not sum to one there."""
    logits = torch.randn(1, 50, generator=gen)
    y = logits.argmin(-1)
    vals = torch.topk(logits[0], 20).values
    p = torch.softmax(vals.double(), -1)
    h = float(-(p * p.log()).sum() / math.log(20))
    beta = 1.0
    original_total = h * float(((p + 0.0) / (1 + beta)).sum()) + (1 - h)
    assert abs(original_total - 1.0) > 1e-3
    assert original_total == pytest.approx(1 - h * beta / (beta + 1))  # the module docstring
    cands = candidates_from_logits(logits, y, 20)
    assert float(mixture_weights(cands.scores, torch.tensor([beta])).sum()) == pytest.approx(1.0)


def test_entropy_in_unit_interval(gen):
    for scale in (0.0, 0.1, 1.0, 10.0, 1000.0):
        p = torch.softmax(torch.randn(64, 21, generator=gen) * scale, -1)
        h = normalized_entropy(p)
        assert ((h >= 0) & (h <= 1)).all()
    uniform = torch.full((2, 8), 1 / 8)
    torch.testing.assert_close(normalized_entropy(uniform), torch.ones(2))
    one_hot = torch.zeros(1, 8)
    one_hot[0, 3] = 1
    assert normalized_entropy(one_hot).item() == 0.0


def test_limits_beta_zero_inf_and_direct(gen):
    logits = torch.randn(6, 80, generator=gen)
    emb = torch.randn(80, 12, generator=gen).to(torch.bfloat16)
    y = sample_from_topk(logits, 20, gen)
    # β = inf gives exactly E[y], bit for bit, in the embedding's dtype.
    assert torch.equal(mix_embeddings(logits, y, emb, INF), emb[y])
    # β = 0: w = H·p + (1−H)·onehot(y).
    cands = candidates_from_logits(logits, y, 20)
    w0 = mixture_weights(cands.scores, torch.zeros(6))
    p = torch.softmax(cands.scores, -1)
    h = normalized_entropy(p)[:, None]
    onehot = torch.zeros_like(p)
    onehot[:, -1] = 1
    torch.testing.assert_close(w0, h * p + (1 - h) * onehot)
    # A huge β approaches E[y]; direct mixture is Σ p_i E[i] whatever y is.
    big = mix_embeddings(logits, y, emb.float(), 1e9)
    torch.testing.assert_close(big, emb.float()[y], rtol=1e-4, atol=1e-4)
    d1 = mix_embeddings(logits, y, emb.float(), 1.0, mode="direct")
    d2 = mix_embeddings(logits, y, emb.float(), 7.0, mode="direct")
    torch.testing.assert_close(d1, d2)


def test_per_row_beta_and_per_row_mode(gen):
    logits = torch.randn(4, 60, generator=gen)
    emb = torch.randn(60, 10, generator=gen)
    y = sample_from_topk(logits, 20, gen)
    betas = torch.tensor([0.0, 1.0, 4.0, INF])
    rows = mix_embeddings(logits, y, emb, betas)
    for i, b in enumerate(betas.tolist()):
        one = mix_embeddings(logits[i : i + 1], y[i : i + 1], emb, b)
        torch.testing.assert_close(rows[i : i + 1], one)
    direct = torch.tensor([True, False, True, False])
    mixed = mix_embeddings(logits, y, emb, betas, mode=direct)
    all_direct = mix_embeddings(logits, y, emb, betas, mode="direct")
    torch.testing.assert_close(mixed[direct], all_direct[direct])
    torch.testing.assert_close(mixed[~direct], rows[~direct])


def test_bfloat16_inputs_match_float32(gen):
    logits = torch.randn(8, 200, generator=gen) * 2
    emb = torch.randn(200, 32, generator=gen)
    y = sample_from_topk(logits, 20, gen)
    ref = mix_embeddings(logits, y, emb, 1.0)
    got = mix_embeddings(logits.bfloat16(), y, emb.bfloat16(), 1.0)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), ref, rtol=0.05, atol=0.05)
    # float32 accumulation: the bf16 result is the float32 mixture of the bf16 inputs, rounded once.
    exact = mix_embeddings(logits.bfloat16().float(), y, emb.bfloat16().float(), 1.0)
    torch.testing.assert_close(got, exact.bfloat16(), rtol=0, atol=0)


def test_top_k_at_least_vocab_is_full_distribution(gen):
    logits = torch.randn(5, 30, generator=gen)
    emb = torch.randn(30, 6, generator=gen)
    y = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen).squeeze(-1)
    full = mix_embeddings(logits, y, emb, 2.0, top_k=None)
    big_k = mix_embeddings(logits, y, emb, 2.0, top_k=1000)
    torch.testing.assert_close(full, big_k)
    torch.testing.assert_close(full.double(), original_release_mixture(logits, y, emb, 2.0, k=30))


def test_inputs_are_not_modified(gen):
    logits = torch.randn(4, 40, generator=gen)
    emb = torch.randn(40, 8, generator=gen)
    y = torch.tensor([0, 5, 39, 7])
    betas = torch.tensor([0.5, 1.0, 2.0, INF])
    copies = [t.clone() for t in (logits, emb, y, betas)]
    mix_embeddings(logits, y, emb, betas)
    mix_embeddings(logits, y, emb, betas, mode="direct", top_k=3)
    for before, after in zip(copies, (logits, emb, y, betas), strict=True):
        assert torch.equal(before, after)


def test_masked_logits_count_only_live_candidates():
    """A grammar can leave fewer than K finite logits: H is normalized by the live ones."""
    logits = torch.full((1, 50), float("-inf"))
    logits[0, [3, 9]] = 0.0  # two equally likely tokens
    cands = candidates_from_logits(logits, torch.tensor([3]), 20)
    w = mixture_weights(cands.scores, torch.tensor([1.0]))
    assert torch.isfinite(w).all()
    # H = 1 over two live candidates: y gets (p_y + β)/(β+1) = 0.75 in total, the other 0.25.
    emb = torch.eye(50)
    h = mix_candidates(cands.ids, w, emb)
    assert h[0, 3].item() == pytest.approx(0.75)
    assert h[0, 9].item() == pytest.approx(0.25)


def test_candidates_from_topk_matches_candidates_from_logits(gen):
    """An engine that already has the top-K log-probs gets the same mixture, no softmax over V."""
    logits = torch.randn(10, 120, generator=gen)
    y = torch.randint(0, 120, (10,), generator=gen)
    logprobs = torch.log_softmax(logits, -1)
    vals, ids = torch.topk(logprobs, 20)
    a = candidates_from_topk(vals, ids, y, logprobs.gather(-1, y[:, None]).squeeze(-1))
    b = candidates_from_logits(logits, y, 20)
    assert torch.equal(a.ids, b.ids)
    beta = torch.full((10,), 1.5)
    torch.testing.assert_close(mixture_weights(a.scores, beta), mixture_weights(b.scores, beta))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"beta": -0.5}, ValueError, "beta must be >= 0"),
        ({"beta": float("nan")}, ValueError, "beta must be >= 0"),
        ({"beta": "1"}, ValueError, "beta must be a number"),
        ({"beta": torch.tensor([1.0, -1.0, 0.0])}, ValueError, r"bad rows: \[1\]"),
        ({"beta": torch.tensor([1.0, 2.0])}, ValueError, r"\[B\] = \[3\]"),
        ({"beta": 1.0, "mode": "mix"}, ValueError, "mode must be 'moi' or 'direct'"),
        ({"beta": 1.0, "mode": torch.tensor([1, 0, 1])}, ValueError, "bool tensor"),
        ({"beta": 1.0, "top_k": 0}, ValueError, "top_k must be an int >= 1"),
        ({"beta": 1.0, "top_k": 2.5}, ValueError, "top_k must be an int >= 1"),
    ],
)
def test_errors(kwargs, error, match):
    logits = torch.randn(3, 10)
    with pytest.raises(error, match=match):
        mix_embeddings(logits, torch.tensor([1, 2, 3]), torch.randn(10, 4), **kwargs)


def test_shape_errors():
    with pytest.raises(ValueError, match=r"logits must be \[B, V\]"):
        mix_embeddings(torch.randn(10), torch.tensor([1]), torch.randn(10, 4), 1.0)
    with pytest.raises(ValueError, match=r"sampled_ids must be \[B\]"):
        mix_embeddings(torch.randn(2, 10), torch.tensor([1]), torch.randn(10, 4), 1.0)
    with pytest.raises(ValueError, match="embedding must be"):
        mix_embeddings(torch.randn(2, 10), torch.tensor([1, 2]), torch.randn(5, 4), 1.0)


def test_capturable_shapes_do_not_depend_on_values(gen):
    """Every intermediate has a shape fixed by (B, K, D): no data-dependent shapes."""
    logits = torch.randn(7, 90, generator=gen)
    emb = torch.randn(90, 5, generator=gen)
    for y in (torch.topk(logits, 1).indices[:, 0], logits.argmin(-1)):
        c = candidates_from_logits(logits, y, 20)
        assert c.ids.shape == c.scores.shape == (7, 21)
        assert mixture_weights(c.scores, torch.ones(7)).shape == (7, 21)
        assert mix_candidates(c.ids, torch.ones(7, 21) / 21, emb).shape == (7, 5)


def test_help_documents_the_rule_outside_topk():
    doc = mixinputs.mix_embeddings.__doc__
    assert "y outside the top-K" in doc and "convex" in doc


_CORE = ("candidates", "weights", "mix", "rng", "rows", "step")
_METHODS = ("base", "moi", "soft", "noise", "swir", "selar", "multiplex", "plain_math")


@pytest.mark.parametrize(
    "name",
    [
        "mixinputs.config",
        "mixinputs",
        "mixinputs.methods",
        *(f"mixinputs.core.{m}" for m in _CORE),
        *(f"mixinputs.methods.{m}" for m in _METHODS),
    ],
)
def test_doctests(name):
    import importlib

    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    if name not in (
        "mixinputs.methods.moi",
        "mixinputs.methods.plain_math",
        "mixinputs.core.select",
    ):
        assert result.attempted > 0, f"{name} has no example"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("vocab", [64 * 200, 49152, 5003])
def test_top_k_of_matches_torch_topk(gen, dtype, vocab):
    from mixinputs.mixing import top_k_of

    x = (torch.randn(9, vocab, generator=gen) * 4).to(dtype)
    x[0, :] = float("-inf")  # a fully masked row keeps working
    x[0, 7] = 1.0
    values, ids = top_k_of(x, 20)
    ref = torch.topk(x, 20)
    assert torch.equal(values, ref.values)
    assert torch.equal(x.gather(1, ids), values)  # ids point at those values
    assert ids[0, 0].item() == 7
    sliced = x[:, 64:]  # a strided view (the engine may pass one)
    assert torch.equal(top_k_of(sliced, 20)[0], torch.topk(sliced, 20).values)


def _mix_at_width(logits, y, emb, beta, direct, width, row_k):
    cands = candidates_from_logits(logits, y, width, row_k)
    weights = mixture_weights(cands.scores, beta, direct)
    return cands, weights, mix_candidates(cands.ids, weights, emb)


def test_row_top_k_equals_the_row_built_with_its_own_k(gen):
    """A row asking K inside a wider batch gets the weights of a row built with K alone."""
    logits = torch.randn(6, 300, generator=gen) * 3
    emb = torch.randn(300, 16, generator=gen)
    row_k = torch.tensor([1, 3, 5, 20, 7, 2])
    y = sample_from_topk(logits, 12, gen)  # some y beyond a row's own K, inside the width
    beta = torch.tensor([0.0, 0.5, 1.0, 4.0, INF, 2.0])
    direct = torch.tensor([False, False, True, False, False, True])
    cands, weights, mixed = _mix_at_width(logits, y, emb, beta, direct, 20, row_k)
    for b in range(6):
        k = int(row_k[b])
        own = candidates_from_logits(logits[b : b + 1], y[b : b + 1], k)
        own_w = mixture_weights(own.scores, beta[b : b + 1], direct[b : b + 1])
        # Same tokens with the same weights; the columns beyond K carry exactly nothing.
        assert torch.equal(weights[b, k:20], torch.zeros(20 - k))
        kept = torch.cat([weights[b, :k], weights[b, 20:]])
        kept_ids = torch.cat([cands.ids[b, :k], cands.ids[b, 20:]])
        assert torch.equal(kept_ids, own.ids[0])
        torch.testing.assert_close(kept, own_w[0], rtol=1e-6, atol=1e-7)
        assert math.isclose(float(weights[b].sum()), 1.0, rel_tol=1e-5)
        torch.testing.assert_close(
            mixed[b], mix_candidates(own.ids, own_w, emb)[0], rtol=1e-5, atol=1e-6
        )


def test_y_beyond_its_own_k_keeps_its_probability():
    logits = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0, 0.0]])
    y = torch.tensor([3])  # 4th most likely: inside a width of 5, outside the row's K = 2
    cands = candidates_from_logits(logits, y, 5, torch.tensor([2]))
    assert cands.ids[0].tolist() == [0, 1, 2, 3, 4, 3]
    assert cands.scores[0].tolist() == [5.0, 4.0, -INF, -INF, -INF, 2.0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_row_is_bit_identical_whatever_its_batch(gen, dtype):
    """The engine's width is fixed, so a row mixed alone equals the same row in any batch."""
    vocab, width = 64 * 160, 20
    logits = (torch.randn(9, vocab, generator=gen) * 3).to(dtype)
    emb = torch.randn(vocab, 32, generator=gen).to(dtype)
    y = sample_from_topk(logits.float(), 25, gen)  # some y outside every K
    row_k = torch.tensor([5, 20, 1, 12, 3, 20, 8, 2, 17])
    beta = torch.tensor([1.0, 0.5, INF, 0.0, 4.0, 1.0, 2.0, 0.25, 1.0])
    direct = torch.tensor([False, True, False, False, True, False, False, True, False])
    batch = _mix_at_width(logits, y, emb, beta, direct, width, row_k)
    for b in range(9):
        s = slice(b, b + 1)
        alone = _mix_at_width(logits[s], y[s], emb, beta[s], direct[s], width, row_k[s])
        assert torch.equal(alone[0].ids, batch[0].ids[s])
        assert torch.equal(alone[1], batch[1][s])
        assert torch.equal(alone[2], batch[2][s])
    # Another batch composition: the rows in reverse order.
    rev = torch.arange(8, -1, -1)
    flipped = _mix_at_width(logits[rev], y[rev], emb, beta[rev], direct[rev], width, row_k[rev])
    assert torch.equal(flipped[2], batch[2][rev])
