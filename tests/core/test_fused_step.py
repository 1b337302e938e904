"""The fused Triton MoI step (``mixinputs.fused_step``) against the PyTorch reference (``mixing``).

CI has no GPU, so the kernels run on CPU tensors under Triton's interpreter. Triton decides
whether a kernel is interpreted when it is decorated, from ``TRITON_INTERPRET``, and other test
modules of this pytest process import Triton through vLLM without it; so
``test_kernels_under_triton_interpreter`` runs this file again in a child pytest with
``TRITON_INTERPRET=1``, collecting the ``case_*`` functions below (the parent collects only
``test_*``). To run the cases directly::

    TRITON_INTERPRET=1 pytest tests/core/test_fused_step.py -o python_functions=case_*

The GPU versions live in tests/core/test_gpu.py.
"""

from __future__ import annotations

import doctest
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mixinputs import mixing

pytest.importorskip("triton")

from mixinputs import fused_step  # after the skip: it imports Triton

INF = float("inf")
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


def test_kernels_under_triton_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1", TRITON_DEFAULT_FP_FUSION="1")
    cmd = [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider"]
    cmd += ["-o", "python_functions=case_*", "-o", "addopts="]
    proc = subprocess.run(
        cmd, env=env, cwd=Path(__file__).parents[2], capture_output=True, text=True, timeout=900
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-8000:]
    summary = out.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= 25 and "skipped" not in summary, summary


def test_imports_and_reports_unavailable_without_triton():
    code = (
        "import sys; sys.modules['triton'] = sys.modules['triton.language'] = None\n"
        "import mixinputs.fused_step as fs\n"
        "assert not fs.fused_step_available('cpu') and not fs.fused_step_available('cuda')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_argument_errors_are_clear():
    logits = torch.zeros(2, 100)
    two = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"\[M, V\]"):
        fused_step.fused_candidates(logits[0], two, two, 5)
    with pytest.raises(ValueError, match="row_top_k must be"):
        fused_step.fused_candidates(logits, two, two[:1], 5)
    with pytest.raises(ValueError, match="width_k must be in"):
        fused_step.fused_candidates(logits, two, two, 101)
    with pytest.raises(ValueError, match=r"min\(V, 128\)"):
        fused_step.fused_candidates(torch.zeros(2, 1000), two, two, 129)
    ids, scores = torch.zeros(2, 6, dtype=torch.long), torch.zeros(2, 6)
    emb, beta, direct = torch.zeros(100, 8), torch.ones(2), torch.zeros(2, dtype=torch.bool)
    with pytest.raises(ValueError, match="beta and direct"):
        fused_step.fused_mix(ids, scores, beta[:1], direct, emb)
    with pytest.raises(ValueError, match="out_rows needs out"):
        fused_step.fused_mix(ids, scores, beta, direct, emb, out_rows=two)
    with pytest.raises(ValueError, match="out must be"):
        fused_step.fused_mix(ids, scores, beta, direct, emb, out=torch.zeros(2, 9))


def test_available_only_on_cuda_or_under_the_interpreter():
    assert fused_step.fused_step_available("cpu") is INTERPRETED
    assert fused_step.fused_step_available("cuda") is torch.cuda.is_available()


# ----------------------------------------------------------------------------- reference helpers
def expected_candidates(logits, sampled, row_k, width_k):
    """The reference candidates with the kernel's tie rule (equal logits: lowest id first)."""
    ids = torch.argsort(logits.float(), dim=-1, descending=True, stable=True)[:, :width_k]
    y_scores = logits.gather(1, sampled[:, None]).squeeze(1)
    return mixing.candidates_from_topk(logits.gather(1, ids), ids, sampled, y_scores, row_k)


def check_candidates(got, logits, sampled, row_k, width_k):
    want = expected_candidates(logits, sampled, row_k, width_k)
    assert torch.equal(got.ids, want.ids)
    assert torch.equal(got.scores, want.scores)
    # And the reference itself (torch.topk may order equal logits differently): the top-K
    # scores always agree exactly; so does the y slot wherever y is not tied with the K-th logit.
    ref = mixing.candidates_from_logits(logits, sampled, width_k, row_k)
    assert torch.equal(got.scores[:, :width_k], ref.scores[:, :width_k])
    own_kth = want.ids.gather(1, (row_k - 1).clamp(0, width_k - 1)[:, None])  # [M, 1]
    kth = logits.float().gather(1, own_kth)
    clear = logits.float().gather(1, sampled[:, None]) != kth
    assert torch.equal(got.scores[:, -1:][clear], ref.scores[:, -1:][clear])


def check_mix(weights, mixed, ids, scores, beta, direct, emb):
    want_w = mixing.mixture_weights(scores, beta, direct)
    # fp32 rounding: softmax, log and the division differ by an ulp or two between libraries.
    torch.testing.assert_close(weights, want_w, rtol=4e-6, atol=4e-7)
    assert torch.equal(weights == 0, want_w == 0)  # masked candidates: weight exactly 0
    exact = (want_w.double()[:, :, None] * emb.double()[ids]).sum(1)  # [M, D] float64
    if emb.dtype == torch.float32:
        torch.testing.assert_close(mixed.double(), exact, rtol=2e-5, atol=1e-6)
    else:  # one rounding to the embedding's dtype (half an ulp, 2^-9 relative in bf16)
        rel = 2.0**-8 if emb.dtype == torch.bfloat16 else 2.0**-10
        err = (mixed.double() - exact).abs()
        assert bool((err <= rel * exact.abs() + 1e-6).all()), float(err.max())


def make_inputs(m, vocab, hidden, width_k, dtype, seed, emb_dtype=torch.bfloat16):
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(m, vocab, generator=gen) * 3).to(dtype)
    emb = (torch.randn(vocab, hidden, generator=gen) * 0.05).to(emb_dtype)
    row_k = torch.randint(1, width_k + 1, (m,), generator=gen)
    row_k[0], row_k[-1] = 1, width_k  # K = 1 and K = width_k
    order = torch.argsort(logits.float(), dim=-1, descending=True, stable=True)
    sampled = torch.randint(0, vocab, (m,), generator=gen)  # mostly outside the top-K
    sampled[::3] = order[::3, 0]  # the top token: inside every K
    # Just past the row's own K but inside the width: outside, judged on the row's own K.
    past = (row_k[1::3]).clamp(max=width_k - 1)
    sampled[1::3] = order[1::3].gather(1, past[:, None]).squeeze(1)
    beta = torch.rand(m, generator=gen) * 4
    beta[1::4], beta[2::4] = 0.0, INF
    direct = torch.rand(m, generator=gen) < 0.25
    return logits, sampled, row_k, beta, direct, emb


# ----------------------------------------------------------------------------- the cases
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("width_k", [1, 5, 20])
def case_candidates_equal_reference(dtype, width_k):
    logits, sampled, row_k, *_ = make_inputs(9, 5003, 8, width_k, dtype, seed=width_k)
    got = fused_step.fused_candidates(logits, sampled, row_k, width_k)
    check_candidates(got, logits, sampled, row_k, width_k)
    if dtype == torch.float32:  # no equal logits: exactly the reference, ids included
        ref = mixing.candidates_from_logits(logits, sampled, width_k, row_k)
        assert torch.equal(got.ids, ref.ids) and torch.equal(got.scores, ref.scores)


@pytest.mark.parametrize("vocab", [64, 65, 8192, 8193, 20011, 300007])
def case_candidates_vocab_not_a_multiple_of_the_blocks(vocab):
    """Groups of 64 logits, 8,192 per program; above V = 262,144 the groups grow to 128."""
    width_k = min(20, vocab)
    m = 2 if vocab > 100000 else 5
    logits, sampled, row_k, *_ = make_inputs(m, vocab, 8, width_k, torch.float32, seed=vocab)
    got = fused_step.fused_candidates(logits, sampled, row_k, width_k)
    check_candidates(got, logits, sampled, row_k, width_k)


def case_candidates_from_strided_rows():
    logits, sampled, row_k, *_ = make_inputs(4, 3000, 8, 20, torch.bfloat16, seed=7)
    wide = torch.full((4, 3000 + 77), 99.0, dtype=torch.bfloat16)
    wide[:, 13 : 13 + 3000] = logits
    view = wide[:, 13 : 13 + 3000]  # row stride 3077, the 99s must never be read
    assert view.stride(0) == 3077
    got = fused_step.fused_candidates(view, sampled, row_k, 20)
    check_candidates(got, logits, sampled, row_k, 20)
    every_other = torch.zeros(4, 6000, dtype=torch.bfloat16)
    every_other[:, ::2] = logits
    every_other[:, 1::2] = 99.0
    got = fused_step.fused_candidates(every_other[:, ::2], sampled, row_k, 20)  # column stride 2
    check_candidates(got, logits, sampled, row_k, 20)


def case_candidates_with_ties_take_the_lowest_ids():
    gen = torch.Generator().manual_seed(3)
    logits = (torch.randn(8, 700, generator=gen) * 1.5).round()  # a few values, many ties
    logits[2] = 0.0  # one big tie
    logits[3, 300] = -0.0  # -0.0 ties with 0.0
    row_k = torch.tensor([1, 3, 20, 20, 7, 19, 4, 11])
    order = torch.argsort(logits, dim=-1, descending=True, stable=True)
    # y tied with the K-th logit, on either side of the row's own K.
    sampled = order.gather(1, (row_k - 1)[:, None]).squeeze(1)
    sampled[4:] = order[4:].gather(1, row_k[4:, None].clamp(max=19)).squeeze(1)
    got = fused_step.fused_candidates(logits, sampled, row_k, 20)
    check_candidates(got, logits, sampled, row_k, 20)
    assert got.ids[2, :20].tolist() == list(range(20))


def case_candidates_with_minus_inf_logits():
    logits, sampled, row_k, *_ = make_inputs(6, 2000, 8, 20, torch.bfloat16, seed=11)
    gen = torch.Generator().manual_seed(11)
    grammar = torch.rand(6, 2000, generator=gen) < 0.9
    logits[grammar] = -INF  # a grammar mask
    logits[0, 3:] = -INF  # fewer finite logits than K
    logits[1, :] = -INF
    logits[1, 1234] = 2.0  # a single allowed token
    finite = torch.isfinite(logits)
    sampled = torch.multinomial(finite.float(), 1, generator=gen).squeeze(1)  # allowed tokens
    row_k[:] = 20
    got = fused_step.fused_candidates(logits, sampled, row_k, 20)
    check_candidates(got, logits, sampled, row_k, 20)
    assert bool((got.ids >= 0).all() and (got.ids < 2000).all())  # -inf slots: valid ids


@pytest.mark.parametrize("emb_dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("width_k", [1, 5, 20])
def case_mix_equals_reference(emb_dtype, width_k):
    logits, sampled, row_k, beta, direct, emb = make_inputs(
        8, 3000, 96, width_k, torch.float32, seed=100 + width_k, emb_dtype=emb_dtype
    )
    cands = mixing.candidates_from_logits(logits, sampled, width_k, row_k)
    weights, mixed = fused_step.fused_mix(cands.ids, cands.scores, beta, direct, emb)
    assert weights.dtype == torch.float32 and mixed.dtype == emb_dtype
    check_mix(weights, mixed, cands.ids, cands.scores, beta, direct, emb)


def case_mix_limits():
    """beta = inf gives exactly E[y]; a single candidate has H = 0; direct uses p alone."""
    gen = torch.Generator().manual_seed(5)
    emb = torch.randn(50, 32, generator=gen).to(torch.bfloat16)
    ids = torch.randint(0, 50, (4, 6), generator=gen)
    scores = torch.randn(4, 6, generator=gen)
    scores[1, 1:] = -INF  # one live candidate (y is the top token, its own slot is -inf)
    scores[3, :5] = -INF  # only the y slot is live
    beta = torch.tensor([INF, 0.5, 0.0, 2.0])
    direct = torch.tensor([False, False, True, False])
    weights, mixed = fused_step.fused_mix(ids, scores, beta, direct, emb)
    check_mix(weights, mixed, ids, scores, beta, direct, emb)
    assert torch.equal(weights[0], torch.tensor([0.0] * 5 + [1.0]))  # beta = inf
    assert torch.equal(mixed[0], emb[ids[0, -1]])
    assert torch.equal(weights[1], torch.tensor([0.0] * 5 + [1.0]))  # H = 0: E[y]
    assert torch.equal(weights[3], torch.tensor([0.0] * 5 + [1.0]))
    assert torch.equal(mixed[3], emb[ids[3, -1]])


def case_mix_writes_rows_into_a_table():
    logits, sampled, row_k, beta, direct, emb = make_inputs(3, 500, 40, 20, torch.float32, seed=9)
    cands = mixing.candidates_from_logits(logits, sampled, 20, row_k)
    table = torch.full((10, 40), 7.0, dtype=torch.bfloat16)
    slots = torch.tensor([7, 2, 5])
    _, out = fused_step.fused_mix(
        cands.ids, cands.scores, beta, direct, emb, out=table, out_rows=slots
    )
    assert out is table
    alone = fused_step.fused_mix(cands.ids, cands.scores, beta, direct, emb)[1]
    assert torch.equal(table[slots], alone)
    others = torch.ones(10, dtype=torch.bool)
    others[slots] = False
    assert bool((table[others] == 7.0).all())


def case_mix_skips_rows_with_a_negative_out_row():
    # An engine's family rows are written by their own step: the kernel gives them weights but
    # reads no embedding row and writes nothing for them; the other rows keep their bits.
    logits, sampled, row_k, beta, direct, emb = make_inputs(3, 500, 40, 20, torch.float32, seed=9)
    cands = mixing.candidates_from_logits(logits, sampled, 20, row_k)
    table = torch.full((10, 40), 7.0, dtype=torch.bfloat16)
    weights, _ = fused_step.fused_mix(
        cands.ids, cands.scores, beta, direct, emb, out=table, out_rows=torch.tensor([7, -1, 5])
    )
    alone_w, alone = fused_step.fused_mix(cands.ids, cands.scores, beta, direct, emb)
    assert torch.equal(weights, alone_w)
    assert torch.equal(table[[7, 5]], alone[[0, 2]])
    untouched = torch.ones(10, dtype=torch.bool)
    untouched[[7, 5]] = False
    assert bool((table[untouched] == 7.0).all())


def case_engine_step_mixes_each_row_once(monkeypatch):
    """A batch of MoI, noisy soft thinking, SwiReasoning and Multiplex on the fused path: the
    kernel mixes the rows of the core's rule, the family rows (SwiReasoning, Multiplex) are
    mixed once in PyTorch -- with the same bits as the reference path gives them."""
    from mixinputs.vllm_plugin import mix_step
    from tests.engine.test_step_state import batch_scenario

    mixed_rows = []
    real_mix = mix_step.MixStep._mix

    def counting_mix(self, ids, *args):
        mixed_rows.append(ids.shape[0])
        return real_mix(self, ids, *args)

    monkeypatch.setattr(mix_step.MixStep, "_mix", counting_mix)
    fused, _ = batch_scenario("cpu")
    assert fused.state.step.fused
    assert mixed_rows and max(mixed_rows) <= 2, mixed_rows  # the two family rows at most
    mixed_rows.clear()
    monkeypatch.setattr(mix_step, "fused_weight_of", lambda *a: None)
    reference, _ = batch_scenario("cpu")
    assert not reference.state.step.fused and set(mixed_rows) == {4}  # every row, in PyTorch
    a, b = fused.state.embed.slots, reference.state.embed.slots
    assert torch.equal(a[2:4], b[2:4])  # the family rows: one code path, the same bits
    torch.testing.assert_close(a[:2], b[:2], rtol=2e-2, atol=2e-2)  # kernel vs PyTorch sums
    for name in ("swir", "multiplex"):
        fused_h, ref_h = (x.state.requests[name].history for x in (fused, reference))
        assert np.array_equal(fused_h.w[: fused_h.length], ref_h.w[: ref_h.length])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def case_fused_mix_step_equals_reference(dtype):
    logits, sampled, row_k, beta, direct, emb = make_inputs(6, 9000, 160, 20, dtype, seed=21)
    logits[2, ::3] = -INF
    ids, weights, mixed = fused_step.fused_mix_step(logits, sampled, row_k, 20, beta, direct, emb)
    # vLLM's sampled ids are int32: same result.
    as_int32 = fused_step.fused_mix_step(logits, sampled.int(), row_k.int(), 20, beta, direct, emb)
    for a, b in zip((ids, weights, mixed), as_int32, strict=True):
        assert torch.equal(a, b)
    want = expected_candidates(logits, sampled, row_k, 20)
    assert torch.equal(ids, want.ids)
    check_mix(weights, mixed, want.ids, want.scores, beta, direct, emb)
    # The reference end to end (its own ids may order equal logits differently).
    ref = mixing.candidates_from_logits(logits, sampled, 20, row_k)
    ref_w = mixing.mixture_weights(ref.scores, beta, direct)
    torch.testing.assert_close(weights, ref_w, rtol=4e-6, atol=4e-7)


def case_batch_invariance():
    """A row's ids, weights and mixture are bit-identical alone, in any batch, at any place."""
    logits, sampled, row_k, beta, direct, emb = make_inputs(8, 3000, 300, 20, torch.bfloat16, 31)

    def step(rows):
        return fused_step.fused_mix_step(
            logits[rows], sampled[rows], row_k[rows], 20, beta[rows], direct[rows], emb
        )

    full = step(torch.arange(8))
    shuffled = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    mixed_batch = step(shuffled)
    for i, row in enumerate(shuffled.tolist()):
        for a, b in zip(full, mixed_batch, strict=True):
            assert torch.equal(a[row], b[i])
    for row in (0, 7):
        alone = step(torch.tensor([row]))
        pair = step(torch.tensor([row, (row + 1) % 8]))
        for a, b, c in zip(full, alone, pair, strict=True):
            assert torch.equal(a[row], b[0]) and torch.equal(a[row], c[0])


def case_doctests():
    result = doctest.testmod(fused_step, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted >= 3
