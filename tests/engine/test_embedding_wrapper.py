"""The input-embedding wrapper alone (no engine): plain rows untouched, mixtures written only where
the index buffers say, the same in its eager and fixed-shape (compiled / CUDA graph) forms."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mixinputs.vllm_plugin.embedding import MixedInputEmbedding

VOCAB, HIDDEN, SLOTS, TOKENS = 50, 8, 4, 16


@pytest.fixture
def base():
    torch.manual_seed(0)
    return nn.Embedding(VOCAB, HIDDEN)


def make(base, replay_rows=None):
    wrapper = MixedInputEmbedding(base, SLOTS, TOKENS, replay_rows=replay_rows)
    wrapper.slots.copy_(torch.randn(SLOTS, HIDDEN))
    wrapper.replay.copy_(torch.randn(wrapper.replay.shape[0], HIDDEN))
    return wrapper


@pytest.mark.parametrize("replay_rows", [None, 6], ids=["eager", "fixed"])
def test_writes_mixtures_only_where_asked(base, replay_rows):
    wrapper = make(base, replay_rows)
    ids = torch.randint(0, VOCAB, (10,))
    with torch.no_grad():
        assert torch.equal(wrapper(ids), base(ids))  # nothing asked: exactly the plain lookup
        wrapper.newest_pos[torch.tensor([0, 2])] = torch.tensor([3 + 1, 9 + 1])  # slots 0, 2
        wrapper.replay_pos[:2] = torch.tensor([0 + 1, 5 + 1])  # replay rows 0, 1
        if wrapper.replay_count is not None:
            wrapper.replay_count = 2
        out = wrapper(ids)
        expected = base(ids).clone()
        expected[3], expected[9] = wrapper.slots[0], wrapper.slots[2]
        expected[0], expected[5] = wrapper.replay[0], wrapper.replay[1]
    assert torch.equal(out, expected)


def test_keeps_the_input_shape_and_dtype(base):
    wrapper = make(base.to(torch.bfloat16))
    ids = torch.randint(0, VOCAB, (2, 5))
    with torch.no_grad():
        wrapper.newest_pos[1] = 7 + 1
        out = wrapper(ids)
    assert out.shape == (2, 5, HIDDEN) and out.dtype == torch.bfloat16
    assert torch.equal(out.reshape(10, HIDDEN)[7], wrapper.slots[1])


def test_fixed_shape_form_is_compilable_and_reads_buffers_each_call(base):
    """The compiled form reads the index buffers at call time: rewriting them between calls
    changes the output without recompiling (what vLLM's compiled graphs rely on)."""
    wrapper = make(base, replay_rows=6)
    compiled = torch.compile(wrapper, backend="aot_eager", dynamic=True, fullgraph=True)
    ids = torch.randint(0, VOCAB, (9,))
    with torch.no_grad():
        first = compiled(ids)
        wrapper.newest_pos[3] = 4 + 1
        second = compiled(ids)
    assert torch.equal(first, base(ids).detach())
    assert torch.equal(second[4], wrapper.slots[3]) and torch.equal(second[:4], first[:4])


def test_extra_memory_is_the_slots_and_two_index_buffers(base):
    shared = torch.zeros(TOKENS, HIDDEN)
    wrapper = MixedInputEmbedding(base, SLOTS, TOKENS, replay=shared, replay_rows=6)
    assert not wrapper.owns_replay and wrapper.replay_rows == 6
    assert wrapper.extra_bytes() == SLOTS * HIDDEN * 4 + SLOTS * 8 + 6 * 8
    assert wrapper.weight is base.weight  # code reaching into the embedding sees the original
