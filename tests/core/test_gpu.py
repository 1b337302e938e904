"""GPU checks of the mixing math and the transformers path (skipped without CUDA).

Run where a GPU is: ``pytest tests/core/test_gpu.py``. CI has none; docs/benchmarks.md records runs.
"""

from __future__ import annotations

import pytest
import torch

from mixinputs.mixing import (
    candidates_from_logits,
    candidates_from_topk,
    mix_candidates,
    mix_embeddings,
    mixture_weights,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def inputs(batch=16, vocab=5000, hidden=64, dtype=torch.bfloat16):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(batch, vocab, generator=g) * 3
    emb = torch.randn(vocab, hidden, generator=g) * 0.05
    y = torch.multinomial(torch.softmax(logits / 1.3, -1), 1, generator=g).squeeze(-1)
    beta = torch.rand(batch, generator=g) * 4
    return logits.to(dtype), y, emb.to(dtype), beta


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_equals_cpu(dtype):
    logits, y, emb, beta = inputs(dtype=dtype)
    cpu = mix_embeddings(logits, y, emb, beta)
    gpu = mix_embeddings(logits.cuda(), y.cuda(), emb.cuda(), beta.cuda())
    # bf16 outputs: both sum in float32, in different orders, then round once; allow ~1 ulp.
    atol = 1e-5 if dtype == torch.float32 else 2e-3
    torch.testing.assert_close(gpu.cpu().float(), cpu.float(), rtol=1e-5, atol=atol)


def test_cuda_graph_capture_and_replay_with_new_values():
    logits, y, emb, beta = (t.cuda() for t in inputs())

    def step():
        cands = candidates_from_logits(logits, y, 20)
        return mix_candidates(cands.ids, mixture_weights(cands.scores, beta), emb)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step()
    # New values in the same buffers: the replayed graph follows them (no baked-in host values).
    new_logits, new_y, _, new_beta = (t.cuda() for t in inputs())
    new_logits = new_logits.flip(-1)
    logits.copy_(new_logits)
    y.copy_((new_y + 7) % logits.shape[1])
    beta.copy_(new_beta.flip(0))
    graph.replay()
    torch.testing.assert_close(out, mix_embeddings(logits, y, emb, beta), rtol=0, atol=0)


def test_transformers_path_on_gpu():
    transformers = pytest.importorskip("transformers")
    from mixinputs.hf import enable_moi

    config = transformers.LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).cuda().eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(8)
    ids = torch.randint(3, 256, (4, 8), device="cuda")
    kw = {"max_new_tokens": 10, "do_sample": False, "pad_token_id": 0, "eos_token_id": None}
    plain = model.generate(ids, **kw)
    with enable_moi(model, beta=float("inf")):
        assert torch.equal(model.generate(ids, **kw), plain)
    seen = []
    with enable_moi(model, beta=0.5) as handle:
        hook = model.get_input_embeddings().register_forward_hook(
            lambda m, a, o: seen.append(o.detach().clone())
        )
        out = model.generate(ids, **kw)
        hook.remove()
    assert not torch.equal(out, plain)
    # Re-derive step 1's input from the model's own logits after the prompt.
    with torch.no_grad():
        logits = model(ids).logits[:, -1].float()
    y = out[:, ids.shape[1]]
    want = mix_embeddings(logits, y, model.get_input_embeddings().weight, 0.5)
    torch.testing.assert_close(seen[1][:, 0], want, rtol=1e-4, atol=1e-5)
    assert not handle.enabled


# ----------------------------------------------------------------------------- the fused step
def fused():
    pytest.importorskip("triton")
    from mixinputs import fused_step

    assert fused_step.fused_step_available("cuda")
    return fused_step


def fused_inputs(m=64, vocab=50021, hidden=512, width_k=20, dtype=torch.bfloat16, seed=0):
    """Rows with K = 1 .. width_k, y inside / just past its own K / anywhere, beta 0 and inf,
    direct rows, a grammar-masked row; logits a strided view of a wider buffer."""
    g = torch.Generator().manual_seed(seed)
    wide = torch.randn(m, vocab + 64, generator=g) * 3
    wide[3, ::2] = float("-inf")
    logits = wide.to(dtype).cuda()[:, 32 : 32 + vocab]
    emb = (torch.randn(vocab, hidden, generator=g) * 0.05).to(dtype).cuda()
    row_k = torch.randint(1, width_k + 1, (m,), generator=g)
    row_k[0], row_k[-1] = 1, width_k
    order = torch.argsort(logits.float().cpu(), dim=-1, descending=True, stable=True)
    y = torch.randint(0, vocab, (m,), generator=g)
    y[::3] = order[::3, 0]
    y[1::3] = order[1::3].gather(1, row_k[1::3, None].clamp(max=width_k - 1)).squeeze(1)
    beta = torch.rand(m, generator=g) * 4
    beta[1::4], beta[2::4] = 0.0, float("inf")
    direct = torch.rand(m, generator=g) < 0.25
    return logits, y.cuda(), row_k.cuda(), beta.cuda(), direct.cuda(), emb


def expected_candidates(logits, y, row_k, width_k):
    ids = torch.argsort(logits.float(), dim=-1, descending=True, stable=True)[:, :width_k]
    y_scores = logits.gather(1, y[:, None]).squeeze(1)
    return candidates_from_topk(logits.gather(1, ids), ids, y, y_scores, row_k)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_fused_step_equals_reference(dtype):
    fs = fused()
    logits, y, row_k, beta, direct, emb = fused_inputs(dtype=dtype)
    cands = fs.fused_candidates(logits, y, row_k, 20)
    want = expected_candidates(logits, y, row_k, 20)  # the kernel's tie rule: lowest id first
    assert torch.equal(cands.ids, want.ids) and torch.equal(cands.scores, want.scores)
    ref = candidates_from_logits(logits, y, 20, row_k)
    assert torch.equal(cands.scores[:, :20], ref.scores[:, :20])
    ids, weights, mixed = fs.fused_mix_step(logits, y, row_k, 20, beta, direct, emb)
    assert torch.equal(ids, cands.ids)
    want_w = mixture_weights(want.scores, beta, direct)
    torch.testing.assert_close(weights, want_w, rtol=1e-5, atol=1e-6)  # GPU exp/log: ~2 ulp
    assert torch.equal(weights == 0, want_w == 0)
    exact = (want_w.double()[:, :, None] * emb.double()[ids]).sum(1)
    err = (mixed.double() - exact).abs()
    rel = 2.0**-8 if dtype == torch.bfloat16 else 1e-5
    assert bool((err <= rel * exact.abs() + 1e-5).all()), float(err.max())


def test_fused_step_is_batch_invariant():
    fs = fused()
    logits, y, row_k, beta, direct, emb = fused_inputs(m=32)

    def step(rows):
        return fs.fused_mix_step(
            logits[rows], y[rows], row_k[rows], 20, beta[rows], direct[rows], emb
        )

    full = step(torch.arange(32, device="cuda"))
    perm = torch.randperm(32, device="cuda")
    shuffled = step(perm)
    for a, b in zip(full, shuffled, strict=True):
        assert torch.equal(a[perm], b)
    for row in (0, 17, 31):
        alone = step(torch.tensor([row], device="cuda"))
        for a, b in zip(full, alone, strict=True):
            assert torch.equal(a[row], b[0])


def test_fused_step_cuda_graph_capture_and_replay_with_new_values():
    fs = fused()
    logits, y, row_k, beta, direct, emb = fused_inputs(m=16)
    logits = logits.contiguous()
    table = torch.zeros(40, emb.shape[1], dtype=emb.dtype, device="cuda")
    slots = torch.arange(16, device="cuda") * 2 + 3

    def step():
        return fs.fused_mix_step(logits, y, row_k, 20, beta, direct, emb, out=table, out_rows=slots)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()  # compiles the kernels outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        ids, weights, _ = step()
    new = fused_inputs(m=16, seed=1)
    for buf, val in zip((logits, y, row_k, beta, direct), new[:5], strict=True):
        buf.copy_(val)
    graph.replay()
    got = (ids.clone(), weights.clone(), table[slots].clone())
    eager = fs.fused_mix_step(logits, y, row_k, 20, beta, direct, emb)
    for a, b in zip(got, eager, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("m", [1, 64])
def test_fused_step_speed_report(m):
    """Prints the fused step's time next to the PyTorch step's at a QwQ-32B shape (no timing
    assertion: benchmarks/mixing_step.py makes the table)."""
    fs = fused()
    vocab, hidden = 152064, 5120
    g = torch.Generator().manual_seed(m)
    logits = (torch.randn(m, vocab, generator=g) * 3).to(torch.bfloat16).cuda()
    emb = (torch.randn(vocab, hidden, generator=g) * 0.02).to(torch.bfloat16).cuda()
    y = torch.randint(0, vocab, (m,), generator=g).cuda()
    row_k = torch.full((m,), 20, device="cuda")
    beta, direct = torch.ones(m, device="cuda"), torch.zeros(m, dtype=torch.bool, device="cuda")

    def torch_step():
        cands = candidates_from_logits(logits, y, 20, row_k)
        return mix_candidates(cands.ids, mixture_weights(cands.scores, beta, direct), emb)

    def fused_step():
        return fs.fused_mix_step(logits, y, row_k, 20, beta, direct, emb)[2]

    times = {}
    for name, fn in (("torch", torch_step), ("fused", fused_step)):
        fn()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(50):
            fn()
        end.record()
        torch.cuda.synchronize()
        times[name] = start.elapsed_time(end) / 50 * 1e3
    shape = f"M={m} V={vocab} D={hidden}"
    print(f"\n{shape}: torch {times['torch']:.1f} us, fused {times['fused']:.1f} us")
    got = fs.fused_candidates(logits, y, row_k, 20)
    assert torch.equal(got.scores, candidates_from_logits(logits, y, 20, row_k).scores)


def test_transformers_mixture_uses_the_fused_step_on_cuda():
    """``mixinputs.hf`` takes the fused Triton step for a plain nn.Embedding on CUDA and matches
    the PyTorch reference to bf16 rounding; a scaled embedding keeps the reference."""
    pytest.importorskip("triton")
    from mixinputs import hf

    torch.manual_seed(0)
    vocab, hidden = 5000, 64
    embedding = torch.nn.Embedding(vocab, hidden).cuda().to(torch.bfloat16)
    logits = torch.randn(6, vocab, device="cuda") * 3
    sampled = torch.randint(0, vocab, (6,), device="cuda")
    assert hf._fused_weight(embedding, logits, 20) is embedding.weight
    handle = hf.MoIHandle.__new__(hf.MoIHandle)  # the step alone, without a model
    handle.config, handle.embedding = hf.MoIConfig(beta=0.5, top_k=20), embedding
    got = handle.mixture(logits, sampled, embedding)
    want = mix_embeddings(logits, sampled, embedding.weight, 0.5, top_k=20)
    torch.testing.assert_close(got.float(), want.float(), rtol=2**-7, atol=2**-7)

    class Scaled(torch.nn.Embedding):
        def forward(self, ids):
            return super().forward(ids) * 2.0

    assert hf._fused_weight(Scaled(vocab, hidden).cuda(), logits, 20) is None


# ----------------------------------------------------------------------- the soft-input methods
def method_case(m=24, vocab=5000, width_k=20, seed=0, device="cuda"):
    """Candidates and per-row settings mixing every method (soft, noise, region, Cold Stop)."""
    from mixinputs.config import MoIConfig
    from mixinputs.mixing import fresh_state, method_rows

    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(m, vocab, generator=g) * 3
    y = torch.randint(0, vocab, (m,), generator=g)
    kinds = [
        MoIConfig(beta=1.0),
        MoIConfig(mode="soft", think_end=7),  # soft mixes while thinking (issue 24)
        MoIConfig(mode="soft", noise="gumbel", think_end=7),
        MoIConfig(beta=2.0, noise="dirichlet", noise_temperature=0.3),
        MoIConfig(mode="direct", region="thinking", think_end=int(y[4])),
        MoIConfig(
            mode="soft", region="thinking", think_end=7, cold_stop_entropy=100.0, cold_stop_steps=2
        ),
    ]
    configs = [kinds[i % len(kinds)] for i in range(m)]
    rows = method_rows(configs, list(range(m)), [11 * i for i in range(m)])
    state = fresh_state(m)._replace(
        thinking=torch.rand(m, generator=g) < 0.8,
        low_entropy_steps=torch.randint(0, 3, (m,), generator=g),
    )
    cands = candidates_from_logits(logits, y, width_k, torch.tensor([c.top_k for c in configs]))
    move = lambda t: t.to(device)  # noqa: E731
    return (
        type(cands)(*map(move, cands)),
        type(rows)(*map(move, rows)),
        type(state)(*map(move, state)),
    )


def test_method_step_on_gpu_equals_cpu():
    from mixinputs.mixing import apply_methods, counter_uniform

    args = (torch.tensor(5), torch.tensor(9), torch.arange(50000), torch.tensor(3))
    assert torch.equal(counter_uniform(*args), counter_uniform(*(a.cuda() for a in args)).cpu())
    cpu = apply_methods(*method_case(device="cpu"))
    gpu = apply_methods(*method_case(device="cuda"))
    for name in ("ids", "sampled", "forced", "direct"):
        assert torch.equal(getattr(cpu, name), getattr(gpu, name).cpu()), name
    assert all(torch.equal(a, b.cpu()) for a, b in zip(cpu.state, gpu.state, strict=True))
    w_cpu = mixture_weights(cpu.scores, cpu.beta, cpu.direct)
    w_gpu = mixture_weights(gpu.scores, gpu.beta, gpu.direct).cpu()
    torch.testing.assert_close(w_gpu, w_cpu, rtol=1e-4, atol=1e-6)
    assert torch.equal(w_gpu == 0, w_cpu == 0)


def test_method_step_with_the_fused_mix_captures_in_a_cuda_graph():
    """apply_methods between the two fused kernels, captured: a replay with new inputs equals
    the eager step (fixed shapes, no host sync, counter-based noise)."""
    fs = fused()
    from mixinputs.mixing import apply_methods

    cands, rows, state = method_case(m=16)
    emb = (torch.randn(5000, 64) * 0.05).cuda()

    def step():
        s = apply_methods(cands, rows, state)
        return fs.fused_mix(s.ids, s.scores, s.beta, s.direct, emb)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        weights, mixed = step()
    new = method_case(m=16, seed=1)
    for old, fresh in zip((cands, rows, state), new, strict=True):
        for buf, val in zip(old, fresh, strict=True):
            buf.copy_(val)
    graph.replay()
    eager_w, eager_mixed = step()
    assert torch.equal(weights, eager_w) and torch.equal(mixed, eager_mixed)


def test_family_methods_on_gpu_equal_cpu():
    """SwiReasoning, SeLaR and Multiplex: the same tokens, states and inputs on the GPU as on
    the CPU (counter-based draws; p·E padded to a fixed row count)."""
    from mixinputs.config import MoIConfig
    from mixinputs.mixing import fresh_state, method_rows, mix_step

    configs = [
        MoIConfig(mode="swir", think_end=2, think_start=1, swir_linebreak=3, swir_window=2,
                  swir_max_switches=1, swir_convergence=(2,), swir_termination=(2, 5), eos=0),
        MoIConfig(mode="selar"),
        MoIConfig(mode="multiplex", think_end=2),
    ] * 4  # fmt: skip
    m, vocab = len(configs), 5000
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(m, vocab, generator=g) * 2
    y = torch.randint(8, vocab, (m,), generator=g)
    emb = torch.randn(vocab, 64, generator=g)
    rows = method_rows(configs, list(range(m)), list(range(m)))
    state = fresh_state(m)._replace(swir_ref=torch.full((m,), 5.0), swir_stay=torch.full((m,), 3))
    top_k = torch.tensor([c.top_k for c in configs])
    cpu = mix_step(logits, y, emb, rows, state, 20, top_k)
    gpu = mix_step(
        logits.cuda(), y.cuda(), emb.cuda(), type(rows)(*(t.cuda() for t in rows)),
        type(state)(*(t.cuda() for t in state)), 20, top_k.cuda(),
    )  # fmt: skip
    assert torch.equal(cpu[1].sampled, gpu[1].sampled.cpu())
    assert torch.equal(cpu[1].ids, gpu[1].ids.cpu())
    for a, b in zip(cpu[1].state, gpu[1].state, strict=True):
        torch.testing.assert_close(a, b.cpu())
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], rtol=1e-4, atol=1e-5)


def test_the_step_state_never_waits_for_the_gpu():
    """A slot's settings written, full steps (every method, SwiReasoning's p·E and forced
    tokens, Multiplex's draws, staging for the history), a preemption and a resume with its
    replay: none of it synchronizes the host with the GPU (``set_sync_debug_mode("error")``
    raises on any sync)."""
    from tests.engine.test_step_state import batch_scenario

    batch_scenario("cuda")  # kernels compiled, pinned buffers made
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        moi, outputs = batch_scenario("cuda", vllm_waits=_allow_sync)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    assert len(outputs) == 6 and moi.state.replays.count == 4


def _allow_sync():
    """vLLM's own wait for a step's tokens (before it schedules a resume), made on purpose."""
    torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")


def test_the_profiled_worst_step_covers_a_full_batch_by_cudas_own_count():
    """vLLM sizes the KV cache from ``torch.cuda.max_memory_allocated`` during its profile: the
    peak MoI's worst-case profile reaches (``worst_case.profile``) is at least the peak of a
    real full batch of each heavy method, counted by CUDA's allocator itself."""
    import numpy as np

    from mixinputs.vllm_plugin import worst_case
    from mixinputs.vllm_plugin.embedding import MixedInputEmbedding
    from mixinputs.vllm_plugin.step_state import MoIStepState, SlotRequest

    slots, vocab, hidden, k = 64, 32_000, 1024, 20
    base = torch.nn.Embedding(vocab, hidden, device="cuda", dtype=torch.bfloat16)
    state = MoIStepState(MixedInputEmbedding(base.requires_grad_(False), slots, 256), k)

    def sampler(logits):
        tokens = torch.argmax(logits, dim=-1, keepdim=True)
        return type("Out", (), {"sampled_token_ids": tokens, "logprobs_tensors": None})()

    def peak_of(run) -> int:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        floor = torch.cuda.memory_allocated()
        run()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - floor

    logits = torch.randn(slots, vocab, device="cuda")
    profiled = peak_of(lambda: worst_case.profile(state, sampler, logits))
    assert state.profiled is not None and state.disabled is None
    rows = np.arange(slots)
    ones = np.ones(slots, dtype=np.int64)
    for method, make in worst_case.WORST_CASES.items():
        config = worst_case._resolved(make(k))
        params = worst_case._params()
        for slot in range(slots):
            state.open(
                slot, SlotRequest.new(f"{method}{slot}", config, params, state.width), params
            )
        token = object()
        state.plan(rows, rows, ones * 0, ones * 5, rows * 5, ones * 5, ones * 5, slots, token)
        real = peak_of(lambda token=token: state.sample(sampler, logits.clone(), token=token))
        worst_case._reset(state, slots)
        assert real <= profiled, (method, real, profiled)
