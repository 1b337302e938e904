"""MoI under tensor parallel (TP=2 against TP=1) and data parallel (a `vllm serve` with two
engines), on CPU, with a random 8-head Llama made from a config (the embedded SmolLM2 has 9
heads: no TP=2).

What TP guarantees, and why not bit for bit: every rank holds the all-gathered logits, samples
the same token and builds the same candidates, so every rank feeds the *same* mixture (checked
bitwise across ranks here). Against TP=1 the mixture is equal to float32 rounding, not bitwise:
the embedding is vocab-parallel, so each rank sums its shard's candidates and an all-reduce adds
the partial sums, an order of addition TP=1 does not have. Greedy MoI can therefore part from
TP=1 after many steps where two candidates nearly tie; standard decoding feeds table rows, not
sums, and stays token-for-token identical.

vLLM's CPU workers bind OpenMP threads to NUMA nodes and refuse two ranks on a one-node machine
("Not enough allowed NUMA nodes"): the engines here run with ``VLLM_CPU_OMP_THREADS_BIND=nobind``
and one OpenMP thread per worker (two workers on two cores).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch

from tests.vllm_support import PROMPTS, model_path, openai_server, require_vllm, shutdown, token_ids

vllm = require_vllm()
from vllm import LLM, SamplingParams  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

TOKENS = 32
COMPARED_STEPS = 8  # MoI mixtures compared with TP=1's on each request's first steps
ENGINE = {
    "dtype": "float32",
    "enforce_eager": True,
    "kv_cache_memory_bytes": 64 << 20,  # 2 KiB a token here: plenty, and no free-memory check
    "max_model_len": 512,
    "max_num_seqs": 8,
    "seed": 0,
    "disable_log_stats": True,
}
READY = "mixinputs: MoI ready"


def greedy(extra=None):
    return SamplingParams(max_tokens=TOKENS, temperature=0.0, ignore_eos=True, extra_args=extra)


@pytest.fixture(scope="module")
def random_llama(tmp_path_factory) -> str:
    """A 2-layer Llama with 8 attention heads (4 KV heads), random float32 weights from a fixed
    seed, and the embedded model's tokenizer (its 49,152-token vocabulary)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("random-llama")
    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=32,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(torch.float32).save_pretrained(out, safe_serialization=True)
    source = Path(model_path())
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (source / name).exists():
            shutil.copy(source / name, out / name)
    return str(out)


@pytest.fixture(scope="module", autouse=True)
def unbound_threads():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        mp.setenv("OMP_NUM_THREADS", "1")
        yield


# -- run in each worker through collective_rpc (self is the worker) -----------------------------
def _observe(worker) -> bool:
    """Record every MoI step of this rank (on the worker object); False where MoI is off."""
    from mixinputs.vllm_plugin.attach import step_state_of

    state = step_state_of(worker.model_runner)
    if state is None:
        return False
    worker.mixinputs_test_records = []

    def observe(record):
        worker.mixinputs_test_records.append(
            {
                "req_ids": list(record.req_ids),
                "js": list(record.js),
                "sampled": record.sampled.tolist(),
                "mixed": record.mixed.float().clone(),
            }
        )

    state.observers.append(observe)
    return True


def _take_records(worker) -> list[dict]:
    records, worker.mixinputs_test_records = worker.mixinputs_test_records, []
    return records


def run(model: str, tp: int) -> dict:
    """Standard and MoI greedy runs on one engine; MoI's steps as each rank recorded them."""
    llm = LLM(model=model, tensor_parallel_size=tp, **ENGINE)
    try:
        standard = token_ids(llm.generate(PROMPTS, [greedy()] * 4, use_tqdm=False))
        ready = llm.collective_rpc(_observe)
        moi = llm.generate(PROMPTS, [greedy({"mixinputs_beta": 1.0})] * 4, use_tqdm=False)
        records = llm.collective_rpc(_take_records)
    finally:
        shutdown(llm)
    return {"standard": standard, "moi": token_ids(moi), "ready": ready, "records": records}


def by_request_step(records: list[dict]) -> dict[tuple[int, int], tuple[torch.Tensor, int]]:
    """(request in order of first appearance, output index) -> (mixture fed, token sampled)."""
    order: dict[str, int] = {}
    out = {}
    for rec in records:
        for row, (req_id, j) in enumerate(zip(rec["req_ids"], rec["js"], strict=True)):
            request = order.setdefault(req_id, len(order))
            out[(request, j)] = (rec["mixed"][row], rec["sampled"][row])
    return out


@pytest.fixture(scope="module")
def tp1(random_llama):
    return run(random_llama, 1)


@pytest.fixture(scope="module")
def tp2(random_llama, tp1, tmp_path_factory):
    log = tmp_path_factory.mktemp("tp2") / "engine.log"
    with output_to(log):  # the workers inherit these descriptors: their logs land in the file
        result = run(random_llama, 2)
    result["log"] = log.read_text(errors="replace")
    return result


@contextlib.contextmanager
def output_to(path: Path):
    """File descriptors 1 and 2 (where vLLM's processes log) point at ``path`` inside the block."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "wb") as handle:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def test_tp2_standard_decoding_is_identical_to_tp1(tp1, tp2):
    assert tp2["standard"] == tp1["standard"]
    assert tp2["moi"] != tp2["standard"]  # MoI was on


def test_tp2_every_rank_runs_moi_and_logs_ready(tp2):
    assert tp2["ready"] == [True, True]
    ranks = sorted(set(re.findall(rf"Worker_TP(\d+)[^\n]*{READY}", tp2["log"])))
    assert ranks == ["0", "1"], tp2["log"][-3000:]


def test_tp2_every_rank_feeds_the_same_mixtures(tp2):
    rank0, rank1 = tp2["records"]
    assert len(rank0) == len(rank1) > 0
    for a, b in zip(rank0, rank1, strict=True):
        assert a["sampled"] == b["sampled"] and a["js"] == b["js"]
        assert torch.equal(a["mixed"], b["mixed"])


def test_tp2_mixtures_equal_tp1_to_float32_rounding(tp1, tp2):
    one, two = by_request_step(tp1["records"][0]), by_request_step(tp2["records"][0])
    for request in range(len(PROMPTS)):
        for j in range(COMPARED_STEPS):
            (h1, y1), (h2, y2) = one[(request, j)], two[(request, j)]
            assert y1 == y2, (request, j)  # the same tokens so far: the same candidates
            # Not bitwise: the vocab-parallel embedding adds the shards' partial sums.
            torch.testing.assert_close(h2, h1, rtol=1e-5, atol=1e-7)
    assert tp2["moi"][0][:COMPARED_STEPS] == tp1["moi"][0][:COMPARED_STEPS]


def test_data_parallel_server_runs_moi_in_every_engine(random_llama, tmp_path):
    """`vllm serve --data-parallel-size 2`: two engine cores, each with its own worker; both
    attach MoI, and both serve MoI requests (vLLM's per-engine request counters say so)."""
    import concurrent.futures

    import httpx
    import openai

    log = tmp_path / "server.log"
    # One API server (by default vLLM starts one per engine): fewer processes to start here.
    args = ("--data-parallel-size", "2", "--api-server-count", "1", "--dtype", "float32")
    with openai_server(log, *args, model=random_llama) as api:

        def complete(prompt, xargs=None):
            body = {"ignore_eos": True, **({"vllm_xargs": xargs} if xargs is not None else {})}
            reply = api.completions.create(
                model="smol", prompt=prompt, max_tokens=16, temperature=0.0, extra_body=body
            )
            return reply.choices[0].text

        standard = [complete(p) for p in PROMPTS]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            moi = list(pool.map(lambda p: complete(p, {"mixinputs_beta": 1.0}), PROMPTS * 2))
        assert sum(m != s for m, s in zip(moi, standard * 2, strict=True)) >= 2, (moi, standard)
        with pytest.raises(openai.BadRequestError, match="mixinputs_beta"):
            complete(PROMPTS[0], {"mixinputs_beta": -1})
        metrics = httpx.get(str(api.base_url).replace("/v1/", "/metrics")).text
    served = {
        engine: float(count)
        for engine, count in re.findall(
            r'^vllm:request_success_total\{[^}]*engine="(\d+)"[^}]*\} ([0-9.e+]+)$',
            metrics,
            re.M,
        )
        if float(count) > 0
    }
    text = log.read_text(errors="replace")
    assert text.count(READY) == 2, text[-3000:]
    assert set(served) == {"0", "1"}, metrics[-2000:]
