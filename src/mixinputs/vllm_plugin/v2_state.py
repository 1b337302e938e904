"""MoI on Model Runner V2: what is the runner's own; the rest is ``MoIStepState``'s.

V2 keeps each running request in a fixed slot (``RequestState.req_id_to_index``; a batch row maps
to its slot through ``InputBatch.idx_mapping``), so MoI uses V2's slots as its own. This adapter
opens and closes them as V2 adds and removes requests, keeps a preempted request's history while
it waits (V2 re-adds it later with its full token history, possibly in another slot), skips
dummy batches, and turns each real ``InputBatch`` into the arrays ``plan`` takes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mixinputs.vllm_plugin.step_state import MoIStepState


class V2MoI:
    """Model Runner V2's side of MoI; ``state`` is the engine's ``MoIStepState``."""

    def __init__(self, state: MoIStepState):
        self.state = state
        self.slot_of: dict[str, int] = {}
        self.preempting: frozenset[str] = frozenset()  # set while V2 frees preempted requests

    def arm_profile(self) -> None:
        """vLLM profiles memory next: its dummy sampler call runs MoI's worst step."""
        if self.state.disabled is None:
            self.state.profile_next = True

    def add_request(self, slot: int, req_id: str, sampling_params: Any) -> None:
        """A request took ``slot``: new, or back after a preemption (its history kept)."""
        self.state.contained("adding a request", self._add, slot, req_id, sampling_params)

    def _add(self, slot: int, req_id: str, sampling_params: Any) -> None:
        self._close(slot)
        request = self.state.request(req_id, sampling_params)
        if request is not None:
            self.state.open(slot, request, sampling_params)
            self.slot_of[req_id] = slot

    def remove_request(self, req_id: str) -> None:
        """V2 frees the request's slot: it finished, or it is preempted (then its history stays
        for the replay when it comes back; V2 also removes every request before adding it)."""
        self.state.contained("removing a request", self._remove, req_id)

    def _remove(self, req_id: str) -> None:
        slot = self.slot_of.get(req_id)
        if slot is None:
            return
        self._close(slot)
        if req_id in self.preempting:
            self.state.staging.drain(block=False)
        else:
            self.state.forget([req_id])

    def _close(self, slot: int) -> None:
        request = self.state.close(slot)
        if request is not None:
            self.slot_of.pop(request.req_id, None)

    def plan(self, batch: Any, req_states: Any) -> None:
        """Plan one step from V2's ``InputBatch`` and ``RequestState``."""
        if self.state.disabled is not None:
            self.state.clear()
            return
        self.state.contained("planning the step", self._plan, batch, req_states)

    def _plan(self, batch: Any, req_states: Any) -> None:
        state = self.state
        n = batch.num_reqs
        if not self.slot_of or n == 0:
            state.clear()
            return
        idx = batch.idx_mapping_np[:n]
        # Dummy batches (profiling, graph capture, idle DP ranks) use slots 0..n-1 under made-up
        # request ids: they must neither read nor write real requests' mixtures.
        if req_states.req_id_to_index.get(batch.req_ids[0]) != idx[0]:
            state.clear()
            return
        rows = np.flatnonzero(state.is_open[idx])
        slots = idx[rows]
        state.plan(
            rows=rows,
            slots=slots,
            computed=batch.num_computed_tokens_np[rows].astype(np.int64),
            scheduled=batch.num_scheduled_tokens[rows].astype(np.int64),
            start=batch.query_start_loc_np[rows].astype(np.int64),
            prompt=req_states.prompt_len.np[slots].astype(np.int64),
            # A partial prefill chunk's sample is dropped (a resumed request's prefill covers
            # its earlier output tokens too).
            keep_from=batch.prefill_len_np[rows].astype(np.int64),
            num_reqs=n,
            token=batch,
        )
