"""MoI on vLLM's V1 model runner: what is the runner's own; the rest is ``MoIStepState``'s.

V1 keeps no slot per request, so this adapter gives each scheduled MoI request one of the
state's slots and takes it back when the request finishes or is not scheduled (paused,
preempted: its newest mixture is then replayed from its history when it comes back). Each step
it turns ``input_batch`` (rows reordered and condensed by V1) into the arrays ``plan`` takes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mixinputs.vllm_plugin.step_state import MoIStepState, SlotRequest


class V1MoI:
    """The V1 runner's side of MoI; ``state`` is the engine's ``MoIStepState``."""

    def __init__(self, runner: Any, state: MoIStepState):
        self.runner = runner
        self.state = state
        self.slot_of: dict[str, int] = {}
        self.free = list(range(state.num_slots - 1, -1, -1))

    def _request(self, req_id: str) -> SlotRequest | None:
        req = self.runner.requests.get(req_id)
        return self.state.request(req_id, getattr(req, "sampling_params", None))

    def on_update_states(self, scheduler_output: Any) -> None:
        """Read new requests' settings once; forget finished requests; free the slots of
        requests not scheduled this step."""
        self.state.contained("reading the scheduled requests", self._update, scheduler_output)

    def _update(self, scheduler_output: Any) -> None:
        for new in scheduler_output.scheduled_new_reqs:
            self._request(new.req_id)
        for req_id in scheduler_output.finished_req_ids:
            self._release(req_id)
        self.state.forget(scheduler_output.finished_req_ids)
        if self.slot_of:
            scheduled = scheduler_output.num_scheduled_tokens
            for req_id in [r for r in self.slot_of if r not in scheduled]:
                self._release(req_id)

    def _release(self, req_id: str) -> None:
        slot = self.slot_of.pop(req_id, None)
        if slot is not None:
            self.state.close(slot)
            self.free.append(slot)

    def plan(self, num_scheduled_tokens: np.ndarray) -> None:
        """This step's MoI rows as arrays, after ``_prepare_inputs`` laid the batch out."""
        if self.state.disabled is not None:
            self.state.clear()
            return
        self.state.contained("planning the step", self._plan, num_scheduled_tokens)

    def _plan(self, num_scheduled_tokens: np.ndarray) -> None:
        state = self.state
        batch = self.runner.input_batch
        n = batch.num_reqs
        moi = (
            [i for i, r in enumerate(batch.req_ids[:n]) if self._request(r)]
            if state.num_alive
            else []
        )
        if not moi:
            state.clear()
            return
        for i in moi:
            req_id = batch.req_ids[i]
            if req_id not in self.slot_of:
                self.slot_of[req_id] = slot = self.free.pop()
                state.open(
                    slot, state.requests[req_id], self.runner.requests[req_id].sampling_params
                )
        idx = np.asarray(moi)
        scheduled = num_scheduled_tokens[:n]
        state.plan(
            rows=idx,
            slots=np.array([self.slot_of[batch.req_ids[i]] for i in moi]),
            computed=batch.num_computed_tokens_cpu[idx].astype(np.int64),
            scheduled=scheduled[idx].astype(np.int64),
            start=(np.cumsum(scheduled) - scheduled)[idx].astype(np.int64),
            prompt=batch.num_prompt_tokens[idx].astype(np.int64),
            # A partial prefill chunk samples a token that is thrown away.
            keep_from=batch.num_tokens_no_spec[idx].astype(np.int64),
            num_reqs=n,
        )
