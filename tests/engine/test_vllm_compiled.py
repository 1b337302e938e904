"""MoI with torch.compile on (no enforce_eager): the embedding wrapper's persistent buffers are
read by the compiled graph, so mixtures written between steps must reach the model."""

from __future__ import annotations

import pytest
import torch

from tests.vllm_support import (
    embedding_weight,
    require_vllm,
    shutdown,
    start_llm,
    token_ids,
    trace,
)

vllm = require_vllm()
from vllm import SamplingParams  # noqa: E402

from mixinputs import mix_embeddings  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

PROMPTS = ["The capital of France is", "Write a short poem about the sea:"]


def _profiled(worker):
    from mixinputs.vllm_plugin.attach import step_state_of

    return step_state_of(worker.model_runner).profiled


def test_compiled_engine_feeds_the_mixtures():
    llm = start_llm(enforce_eager=False, max_num_batched_tokens=256)

    def run(extra):
        params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True, extra_args=extra)
        return llm.generate(PROMPTS, [params] * 2, use_tqdm=False)

    # A compiled CPU engine runs vLLM's memory profile at start-up: MoI's worst step ran in it.
    report = llm.collective_rpc(_profiled)[0]
    assert report is not None and report["rows"] == 8 and report["extra_bytes"] > 0
    standard = token_ids(run(None))
    assert token_ids(run({"mixinputs_beta": "inf"})) == standard
    out, records = trace(llm, lambda: run({"mixinputs_beta": 0.25}))
    assert token_ids(out) != standard, "the compiled graph ignored the mixtures"
    weight = embedding_weight(llm)
    shutdown(llm)
    for rec in records:
        want = mix_embeddings(rec["prior"], rec["sampled"], weight, rec["beta"], top_k=20)
        torch.testing.assert_close(
            rec["mixed"].float(), want.to(rec["mixed"].dtype).float(), rtol=2**-7, atol=1e-6
        )
