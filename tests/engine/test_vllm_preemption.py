"""Preemption with recompute: a resumed MoI request replays its stored mixtures and equals an
uninterrupted run. One engine with a KV cache too small for the batch, one reference beside it
with room for everything."""

from __future__ import annotations

import pytest

from tests.vllm_support import (
    EngineBeside,
    require_vllm,
    shutdown,
    start_llm,
    summary,
    token_ids,
)

vllm = require_vllm()
from vllm import SamplingParams  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

PROMPTS = [f"Story {i}: Once upon a time, in a village by the river, there lived" for i in range(8)]
# The soft-input methods resume exactly too: noise (replayed from the stored weights, the same
# seed after resume) and a thinking region whose Cold Stop streak spans the preemption (tau above
# any entropy: the think-end token, id 100, is forced at output token 120).
COLD_STOP = {
    "mixinputs_beta": 2.0,
    "mixinputs_noise": "dirichlet",
    "mixinputs_region": "thinking",
    "mixinputs_think_end": 100,
    "mixinputs_cold_stop_entropy": 100.0,
    "mixinputs_cold_stop_steps": 120,
}
# SwiReasoning carries its mode, reference entropy and switch count across the preemption, and
# its latent inputs (p·E over the vocabulary) are replayed from the inputs themselves; Multiplex
# draws its K samples from the seed (ids stand in for SmolLM2's missing think tokens).
SWIR = {
    "mixinputs_mode": "swir",
    "mixinputs_think_end": 100,
    "mixinputs_think_start": 1,
    "mixinputs_swir_linebreak": 198,
    "mixinputs_swir_window": 8,
    "mixinputs_swir_max_switches": 2,
    "mixinputs_swir_convergence": [100],
    "mixinputs_swir_termination": [100, 378, 3403],
}
EXTRAS = [
    {"mixinputs_beta": 1.0},
    {"mixinputs_mode": "soft", "mixinputs_noise": "gumbel"},
    None,
    COLD_STOP,
    {"mixinputs_mode": "direct"},
    None,
    SWIR,
    {"mixinputs_mode": "multiplex", "mixinputs_think_end": 100},
]
SAMPLING = [  # temperature and seed per request (seeded: the reference engine draws the same)
    {"temperature": 0.0},
    {"temperature": 0.8, "seed": 5},
    {"temperature": 0.0},
    {"temperature": 0.8, "seed": 6},
    {"temperature": 0.0},
    {"temperature": 0.8, "seed": 7},
    {"temperature": 0.6, "top_k": 20, "top_p": 0.95, "seed": 8},
    {"temperature": 1.0, "seed": 9},
]
MAX_TOKENS = 160
# No chunked prefill: vLLM 0.32's CPU runner cannot rewind a seeded request's generator after a
# partial-prefill sample, which resumed requests would otherwise hit.
ENGINE = {
    "max_model_len": 512,
    "max_num_seqs": 8,
    "max_num_batched_tokens": 512,
    "enable_chunked_prefill": False,
}


def params():
    return [
        SamplingParams(max_tokens=MAX_TOKENS, ignore_eos=True, extra_args=e, **s)
        for e, s in zip(EXTRAS, SAMPLING, strict=True)
    ]


def test_resumed_requests_equal_uninterrupted_ones():
    # The reference: the same batch with the plugin on a cache where nothing is preempted, run
    # beside this engine (vllm_support.EngineBeside).
    requests = [
        {
            "prompt": p,
            "params": {"max_tokens": MAX_TOKENS, "ignore_eos": True, "extra_args": e, **s},
        }
        for p, e, s in zip(PROMPTS, EXTRAS, SAMPLING, strict=True)
    ]
    reference = EngineBeside(requests, env={}, engine=ENGINE)
    llm = start_llm(**ENGINE, num_gpu_blocks_override=8)
    block = llm.llm_engine.vllm_config.cache_config.block_size
    need = len(PROMPTS) * -(-(MAX_TOKENS + 16) // block)
    assert need > 8, "the cache must be too small for the whole batch"
    out = token_ids(llm.generate(PROMPTS, params(), use_tqdm=False))
    state = summary(llm)
    shutdown(llm)
    uninterrupted = [r["token_ids"] for r in reference.result()]
    assert state["replayed"] > 0, "no request was preempted and resumed"
    assert state["alive"] == 0 and state["slots_used"] == 0
    for i, (got, want) in enumerate(zip(out, uninterrupted, strict=True)):
        assert got == want, f"request {i} ({EXTRAS[i]}) diverged after preemption"
    cold = EXTRAS.index(COLD_STOP)
    steps = COLD_STOP["mixinputs_cold_stop_steps"]
    assert out[cold][steps - 1] == COLD_STOP["mixinputs_think_end"]  # Cold Stop's forced token
