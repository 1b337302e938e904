"""MoI in transformers' generate(), on tiny random models and on the embedded SmolLM2-135M."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from mixinputs import mix_embeddings  # noqa: E402
from mixinputs.hf import enable_moi, generate  # noqa: E402

INF = float("inf")


def tiny_llama():
    config = transformers.LlamaConfig(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def tiny_gpt2():
    config = transformers.GPT2Config(
        vocab_size=96,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=128,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config).eval()


MODELS = {"llama": tiny_llama, "gpt2": tiny_gpt2}


@pytest.fixture(params=sorted(MODELS), scope="module")
def model(request):
    m = MODELS[request.param]()
    m.config._attn_implementation = "eager"
    # Random weights make every token nearly equally likely; sharpen them so greedy decoding and
    # the entropy H both vary from step to step.
    with torch.no_grad():
        m.get_output_embeddings().weight.mul_(4.0)
    return m


def prompts():
    g = torch.Generator().manual_seed(7)
    return torch.randint(3, 96, (3, 6), generator=g)


GREEDY = {"max_new_tokens": 12, "do_sample": False, "pad_token_id": 0, "eos_token_id": None}


def test_beta_inf_reproduces_plain_generate(model):
    ids = prompts()
    plain = model.generate(ids, **GREEDY)
    with enable_moi(model, beta=INF):
        assert torch.equal(model.generate(ids, **GREEDY), plain)
    sampling = {**GREEDY, "do_sample": True, "temperature": 0.9, "top_p": 0.9}
    torch.manual_seed(3)
    plain_s = model.generate(ids, **sampling)
    torch.manual_seed(3)
    with enable_moi(model, beta=INF):
        assert torch.equal(model.generate(ids, **sampling), plain_s)


def test_moi_changes_the_output(model):
    ids = prompts()
    plain = model.generate(ids, **GREEDY)
    with enable_moi(model, beta=0.0):
        moi = model.generate(ids, **GREEDY)
    assert not torch.equal(moi, plain)
    assert torch.equal(moi[:, : ids.shape[1]], ids)  # the prompt itself is untouched


def manual_moi_loop(model, ids, steps, beta, top_k=20):
    """An independent MoI decode loop on inputs_embeds: returns (tokens, fed embeddings)."""
    emb = model.get_input_embeddings().weight
    out = model(input_ids=ids, use_cache=True)
    past, tokens, fed = out.past_key_values, [], []
    logits = out.logits[:, -1].float()
    for _ in range(steps):
        y = logits.argmax(-1)
        tokens.append(y)
        h = mix_embeddings(logits, y, emb, beta, top_k=top_k)
        fed.append(h)
        out = model(inputs_embeds=h[:, None], past_key_values=past, use_cache=True)
        past, logits = out.past_key_values, out.logits[:, -1].float()
    return torch.stack(tokens, 1), torch.stack(fed, 1)


def record_embeddings(model):
    seen = []
    hook = model.get_input_embeddings().register_forward_hook(
        lambda mod, args, out: seen.append(out.detach().clone())
    )
    return seen, hook


@pytest.mark.parametrize("beta,top_k", [(1.0, 20), (0.5, 5), (2.0, None)])
def test_fed_embeddings_equal_manual_loop(model, beta, top_k):
    ids = prompts()
    steps = 8
    want_tokens, want_fed = manual_moi_loop(model, ids, steps, beta, top_k)
    with enable_moi(model, beta=beta, top_k=top_k):
        seen, hook = record_embeddings(model)  # registered after MoI's hook: sees its output
        try:
            out = model.generate(ids, **{**GREEDY, "max_new_tokens": steps + 1})
        finally:
            hook.remove()
    assert torch.equal(out[:, ids.shape[1] : ids.shape[1] + steps], want_tokens)
    fed = torch.cat(seen[1 : steps + 1], dim=1)  # seen[0] is the prompt
    torch.testing.assert_close(fed, want_fed, rtol=1e-5, atol=1e-6)
    # and the prompt was embedded plainly
    torch.testing.assert_close(seen[0], model.get_input_embeddings().weight[ids])


def test_padding_rows_do_not_change_other_rows(model):
    short = torch.tensor([[5, 9, 17]])
    long = torch.tensor([[11, 4, 23, 42, 8, 30]])
    padded = torch.tensor([[0, 0, 0, 5, 9, 17], [11, 4, 23, 42, 8, 30]])
    mask = (padded != 0).long()
    with enable_moi(model, beta=1.0):
        alone = [model.generate(p, **GREEDY)[:, p.shape[1] :] for p in (short, long)]
        batched = model.generate(padded, attention_mask=mask, **GREEDY)[:, 6:]
    assert torch.equal(batched[0], alone[0][0])
    assert torch.equal(batched[1], alone[1][0])


def test_handle_restores_the_model_exactly(model):
    ids = prompts()
    before = model.generate(ids, **GREEDY)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    emb = model.get_input_embeddings()
    hooks_before = dict(emb._forward_hooks)
    handle = enable_moi(model, beta=0.5)
    assert "generate" in model.__dict__
    with pytest.raises(RuntimeError, match="already enabled"):
        enable_moi(model, beta=1.0)
    handle.disable()
    handle.disable()  # idempotent
    for attr in ("generate", "_get_logits_processor", "_mixinputs_handle"):
        assert attr not in model.__dict__
    assert dict(emb._forward_hooks) == hooks_before
    assert torch.equal(model.generate(ids, **GREEDY), before)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])
    # A direct forward call inside the context is never mixed.
    with enable_moi(model, beta=0.0):
        a = model(ids).logits
    torch.testing.assert_close(a, model(ids).logits)


def test_one_call_function_equals_context_manager(model):
    ids = prompts()
    with enable_moi(model, beta=1.0):
        a = model.generate(ids, **GREEDY)
    b = generate(model, ids, beta=1.0, **GREEDY)
    assert torch.equal(a, b)
    assert "generate" not in model.__dict__


def test_sampling_prior_follows_the_sampler(model):
    """With top_k=1 sampling, the sampler's distribution is one token: H = 0 and MoI feeds E[y]."""
    ids = prompts()
    cfg = {**GREEDY, "do_sample": True, "top_k": 1}
    torch.manual_seed(0)
    plain = model.generate(ids, **cfg)
    with enable_moi(model, beta=0.0, prior="sampling"):
        torch.manual_seed(0)
        assert torch.equal(model.generate(ids, **cfg), plain)
    with enable_moi(model, beta=0.0, prior="raw"):
        torch.manual_seed(0)
        assert not torch.equal(model.generate(ids, **cfg), plain)


def test_num_return_sequences_streamer_and_stopping_criteria(model):
    ids = prompts()[:1]

    class Count(transformers.generation.BaseStreamer):
        def __init__(self):
            self.n = 0

        def put(self, value):
            self.n += 1

        def end(self):
            self.ended = True

    streamer = Count()
    stop = transformers.StoppingCriteriaList(
        [transformers.MaxLengthCriteria(max_length=ids.shape[1] + 4)]
    )
    with enable_moi(model, beta=1.0):
        torch.manual_seed(1)
        out = model.generate(
            ids,
            do_sample=True,
            num_return_sequences=3,
            max_new_tokens=10,
            pad_token_id=0,
            eos_token_id=None,
            streamer=None,
        )
        assert out.shape == (3, ids.shape[1] + 10)
        one = model.generate(ids, **GREEDY, streamer=streamer, stopping_criteria=stop)
    assert one.shape[1] == ids.shape[1] + 4
    assert streamer.n == 1 + 4 and streamer.ended  # the prompt, then one call per new token


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_beams": 2}, "beam search"),
        ({"use_cache": False}, "KV cache"),
        ({"prompt_lookup_num_tokens": 3}, "assisted"),
    ],
)
def test_refuses_unsupported_generation(model, kwargs, match):
    with enable_moi(model, beta=1.0), pytest.raises(ValueError, match=match):
        model.generate(prompts(), **GREEDY, **kwargs)
    assert "generate" not in model.__dict__


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"beta": -1.0}, "beta must be >= 0"),
        ({"beta": "x"}, "beta must be a number"),
        ({"mode": "mixture"}, "mode must be one of"),
        ({"top_k": 0}, "top_k must be an int >= 1"),
        ({"prior": "hot"}, "prior must be one of"),
    ],
)
def test_bad_arguments(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        enable_moi(model, **kwargs)
    assert "generate" not in model.__dict__


def test_refuses_models_without_a_standard_embedding():
    with pytest.raises(TypeError, match="generate"):
        enable_moi(torch.nn.Linear(3, 3))

    class NoEmbedding(transformers.LlamaForCausalLM):
        def get_input_embeddings(self):
            raise NotImplementedError

    m = NoEmbedding(tiny_llama().config)
    with pytest.raises(TypeError, match="no standard input embedding"):
        enable_moi(m)


@pytest.fixture(scope="module")
def smollm():
    from mixinputs.embedded_model import embedded_model_path

    path = embedded_model_path()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return tok, model


@pytest.mark.slow
def test_embedded_model_greedy_moi_is_deterministic_and_coherent(smollm):
    tok, model = smollm
    text = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    enc = tok(text, return_tensors="pt", add_special_tokens=False)
    kw = {"max_new_tokens": 24, "do_sample": False, "pad_token_id": tok.eos_token_id}
    with enable_moi(model, beta=1.0):
        a = model.generate(**enc, **kw)
        b = model.generate(**enc, **kw)
    assert torch.equal(a, b)
    answer = tok.decode(a[0, enc.input_ids.shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer
