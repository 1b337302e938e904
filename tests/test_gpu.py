"""GPU checks of the mixing math and the transformers path (skipped without CUDA).

Run where a GPU is: ``pytest tests/test_gpu.py``. CI has none; docs/benchmarks.md records runs.
"""

from __future__ import annotations

import pytest
import torch

from mixinputs.mixing import candidates_from_logits, mix_candidates, mix_embeddings, mixture_weights

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
