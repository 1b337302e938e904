"""One MoI step state for both vLLM runners: V1's and Model Runner V2's adapters only turn their
own batches into arrays, and the same request runs the same code on both (no engine here: fakes
of the fields each runner's batch has)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mixinputs.config import KEY_RESOLVED, MoIConfig
from mixinputs.vllm_plugin.embedding import MixedInputEmbedding
from mixinputs.vllm_plugin.step_state import MoIStepState
from mixinputs.vllm_plugin.v1_state import V1MoI
from mixinputs.vllm_plugin.v2_state import V2MoI

VOCAB, HIDDEN, SLOTS = 64, 8, 4
SWIR = MoIConfig(
    mode="swir", think_end=2, think_start=1, swir_linebreak=3, swir_window=2,
    swir_max_switches=1, swir_convergence=(2,), swir_termination=(2, 5), eos=0, plain_ids=(7,),
)  # fmt: skip
CONFIGS = {
    "moi": MoIConfig(beta=1.0, top_k=5),
    "soft+gumbel": MoIConfig(mode="soft", noise="gumbel", think_end=2),
    "swir": SWIR,
    "multiplex": MoIConfig(mode="multiplex", think_end=2),
}


def params(config: MoIConfig | None, seed: int = 3):
    """SamplingParams as a worker sees them: the front end resolved the request's keys."""
    extra = {KEY_RESOLVED: config.to_resolved()} if config else None
    return SimpleNamespace(extra_args=extra, temperature=0.8, top_k=0, top_p=1.0, seed=seed)


def new_state(device="cpu") -> MoIStepState:
    torch.manual_seed(0)
    base = torch.nn.Embedding(VOCAB, HIDDEN).to(device).requires_grad_(False)  # as in vLLM
    return MoIStepState(MixedInputEmbedding(base, SLOTS, 32), max_top_k=20)


# -- fakes of each runner's batch ----------------------------------------------------------------
class V1Runner:
    """The fields of V1's runner and ``InputBatch`` the adapter reads (one request)."""

    def __init__(self, req_id: str, prompt: int, sampling_params):
        self.requests = {req_id: SimpleNamespace(sampling_params=sampling_params)}
        self.req_id, self.prompt = req_id, prompt
        self.input_batch = None

    def schedule(self, computed: int, total: int) -> np.ndarray:
        self.input_batch = SimpleNamespace(
            req_ids=[self.req_id],
            num_reqs=1,
            num_computed_tokens_cpu=np.array([computed]),
            num_prompt_tokens=np.array([self.prompt]),
            num_tokens_no_spec=np.array([total]),
        )
        return np.array([total - computed])


class V2Batch:
    def __init__(self, req_id, slot, computed, scheduled, prefill):
        self.req_ids, self.num_reqs = [req_id], 1
        self.idx_mapping_np = np.array([slot])
        self.num_computed_tokens_np = np.array([computed], dtype=np.int32)
        self.num_scheduled_tokens = np.array([scheduled], dtype=np.int32)
        self.query_start_loc_np = np.array([0, scheduled], dtype=np.int32)
        self.prefill_len_np = np.array([prefill], dtype=np.int32)


class V2Requests:
    def __init__(self, req_id, slot, prompt):
        self.req_id_to_index = {req_id: slot}
        self.prompt_len = SimpleNamespace(np=np.full(SLOTS, prompt, dtype=np.int32))


def sample(state: MoIStepState, logits, token, batch=None):
    out = state.sample(
        lambda lg: SimpleNamespace(sampled_token_ids=token.view(1, 1)), logits, batch
    )
    return int(out.sampled_token_ids[0, 0])


def run_both(name: str, steps: int = 10, device: str = "cpu"):
    """One request through each adapter, with the same logits and draws at every step; the V2
    copy is preempted before step 5 and re-added in another slot with its history (V2 recomputes
    its earlier output tokens from the stored mixtures). Returns both adapters and, per step,
    the token each emitted and the mixture each wrote."""
    config = CONFIGS[name]
    gen = torch.Generator().manual_seed(1)
    v1 = V1MoI(V1Runner("r", 3, params(config)), new_state(device))
    v2 = V2MoI(new_state(device))
    new = [SimpleNamespace(req_id="r")]
    v1.on_update_states(SimpleNamespace(scheduled_new_reqs=new, finished_req_ids=set(),
                                        num_scheduled_tokens={"r": 3}))  # fmt: skip
    v2.add_request(1, "r", params(config))
    reqs, slot, prefill = V2Requests("r", 1, 3), 1, 3
    seen = []
    for j in range(steps):
        computed = 0 if j == 0 else 3 + j - 1  # the position of the newest token
        v1.plan(v1.runner.schedule(computed, 3 + j))
        if j == 5:  # V2: preempted, back in slot 2; its prefill covers every token so far
            v2.preempting = frozenset({"r"})
            v2.remove_request("r")
            v2.preempting = frozenset()
            reqs, slot, prefill = V2Requests("r", 2, 3), 2, 3 + j
            v2.add_request(slot, "r", params(config))
            batch = V2Batch("r", slot, 0, prefill, prefill)
        else:
            batch = V2Batch("r", slot, computed, 3 + j - computed, prefill)
        v2.plan(batch, reqs)
        logits = (torch.randn(1, VOCAB, generator=gen) * 3).to(device)
        token = torch.multinomial(torch.softmax(logits.float().cpu(), -1), 1, generator=gen)
        token = token.view(1).to(device)
        # Each its own copy: a forced token is written into the sampler's output in place.
        a = sample(v1.state, logits.clone(), token.clone())
        b = sample(v2.state, logits.clone(), token.clone(), batch)
        mixed = (v1.state.embed.slots[v1.slot_of["r"]].clone(), v2.state.embed.slots[slot].clone())
        seen.append(((a, b), mixed))
    return v1, v2, seen


@pytest.mark.parametrize("name", list(CONFIGS))
def test_a_request_runs_the_same_code_on_both_runners(name):
    """The same tokens, mixtures, history and carried state through V1's adapter and V2's, a
    preemption on V2 included (replayed mixtures, restored state)."""
    v1, v2, seen = run_both(name)
    for j, ((a, b), (m1, m2)) in enumerate(seen):
        assert a == b, (name, j)
        assert torch.equal(m1, m2), (name, j)
    h1, h2 = v1.state.requests["r"].history, v2.state.requests["r"].history
    assert h1.length == h2.length == len(seen)
    assert np.array_equal(h1.ids[: h1.length], h2.ids[: h2.length])
    assert np.array_equal(h1.w[: h1.length], h2.w[: h2.length])
    assert np.array_equal(h1.state[: h1.length], h2.state[: h2.length])
    assert v2.state.replays.count == 5  # the five outputs before the preemption
    if name == "swir":
        assert sorted(h2.fed) == list(range(len(seen)))  # its inputs kept whole for replays


def batch_scenario(device: str, vllm_waits=lambda: None):
    """Four requests (MoI, noisy soft thinking, SwiReasoning, Multiplex) in one V2 batch for six
    steps; SwiReasoning is preempted before step 4 and resumes in the same slot, replaying its
    four outputs. Returns the adapter and each step's emitted tokens (left on the device)."""
    names = list(CONFIGS)
    n = len(names)

    class Batch:  # V2's InputBatch
        def __init__(self, computed, scheduled, prefill):
            self.req_ids, self.num_reqs = names, n
            self.idx_mapping_np = np.arange(n)
            self.num_computed_tokens_np = np.array(computed, dtype=np.int32)
            self.num_scheduled_tokens = np.array(scheduled, dtype=np.int32)
            self.query_start_loc_np = np.concatenate([[0], np.cumsum(scheduled)]).astype(np.int32)
            self.prefill_len_np = np.array(prefill, dtype=np.int32)

    reqs = V2Requests(names[0], 0, 3)
    reqs.req_id_to_index = {name: i for i, name in enumerate(names)}
    moi = V2MoI(new_state(device))
    for slot, name in enumerate(names):
        moi.add_request(slot, name, params(CONFIGS[name], seed=slot))
    gen = torch.Generator(device=device).manual_seed(0)
    outputs = []
    for j in range(6):
        if j == 0:
            batch = Batch([0] * n, [3] * n, [3] * n)
        elif j == 4:
            vllm_waits()
            moi.preempting = frozenset({"swir"})
            moi.remove_request("swir")
            moi.preempting = frozenset()
            moi.add_request(2, "swir", params(CONFIGS["swir"], seed=2))
            batch = Batch([2 + j, 2 + j, 0, 2 + j], [1, 1, 3 + j, 1], [3, 3, 3 + j, 3])
        else:
            batch = Batch([2 + j] * n, [1] * n, [3] * n)
        moi.plan(batch, reqs)
        logits = torch.randn(n, VOCAB, device=device, generator=gen) * 3
        tokens = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)
        out = moi.state.sample(
            lambda lg, t=tokens: SimpleNamespace(sampled_token_ids=t), logits, batch
        )
        outputs.append(out.sampled_token_ids)
    return moi, outputs


def test_a_batch_of_every_method_with_a_resume_runs_on_cpu():
    """The scenario ``tests/core/test_gpu.py`` runs under CUDA's sync check, here on the CPU."""
    moi, outputs = batch_scenario("cpu")
    assert len(outputs) == 6 and moi.state.replays.count == 4
    histories = {name: moi.state.requests[name].history for name in CONFIGS}
    assert all(h.length == 6 for h in histories.values()), {
        k: h.length for k, h in histories.items()
    }
