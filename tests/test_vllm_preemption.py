"""Preemption with recompute: a resumed MoI request replays its stored mixtures and equals an
uninterrupted run. One engine with a KV cache too small for the batch, one reference without."""

from __future__ import annotations

import pytest

from tests.vllm_support import (
    require_vllm,
    run_engine_subprocess,
    shutdown,
    start_llm,
    summary,
    token_ids,
)

vllm = require_vllm()
from vllm import SamplingParams  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

PROMPTS = [f"Story {i}: Once upon a time, in a village by the river, there lived" for i in range(6)]
EXTRAS = [
    {"mixinputs_beta": 1.0},
    {"mixinputs_beta": 0.5},
    None,
    {"mixinputs_beta": 2.0},
    {"mixinputs_mode": "direct"},
    None,
]
MAX_TOKENS = 160
ENGINE = {"max_model_len": 512, "max_num_seqs": 6, "max_num_batched_tokens": 512}


def params():
    return [
        SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True, extra_args=e)
        for e in EXTRAS
    ]


@pytest.fixture(scope="module")
def uninterrupted():
    requests = [
        {
            "prompt": p,
            "params": {
                "max_tokens": MAX_TOKENS,
                "temperature": 0.0,
                "ignore_eos": True,
                "extra_args": e,
            },
        }
        for p, e in zip(PROMPTS, EXTRAS, strict=True)
    ]
    return [r["token_ids"] for r in run_engine_subprocess(requests, env={}, engine=ENGINE)]


def test_resumed_requests_equal_uninterrupted_ones(uninterrupted):
    llm = start_llm(**ENGINE, num_gpu_blocks_override=8)
    block = llm.llm_engine.vllm_config.cache_config.block_size
    need = len(PROMPTS) * -(-(MAX_TOKENS + 16) // block)
    assert need > 8, "the cache must be too small for the whole batch"
    out = token_ids(llm.generate(PROMPTS, params(), use_tqdm=False))
    state = summary(llm)
    shutdown(llm)
    assert state["replayed"] > 0, "no request was preempted and resumed"
    assert state["alive"] == 0 and state["slots_used"] == 0
    for i, (got, want) in enumerate(zip(out, uninterrupted, strict=True)):
        assert got == want, f"request {i} ({EXTRAS[i]}) diverged after preemption"
