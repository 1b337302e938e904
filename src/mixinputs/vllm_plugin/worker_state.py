"""MoI state of one vLLM worker, and the two things it does every step.

1. ``plan_forward`` (host only, after the runner prepared its inputs): which token position each
   mixture row overwrites (``newest_pos`` per slot, ``replay_pos`` per replay row; see
   ``embedding.py``). A MoI request's newest output token reads its slot (one row per running
   request, written on the device right after sampling). Older output tokens (a request resumed
   after preemption recomputes them) are *replayed* from the host copy of their candidates and
   weights, so a resumed request sees exactly the inputs it saw the first time.
2. ``sample`` (device, around the runner's ``_sample``): keep the prior's logits before the sampler
   edits them in place, sample, then build candidates ``top-K ∪ {y}``, apply the request's
   soft-input method (soft thinking, thinking region, Cold Stop, noise), and write the mixtures
   into their slots (``mix_step.MixStep``). No host sync: the host only learns which rows mix and
   where, which it knows before the step; Cold Stop rewrites the sampled token on the device.

A request's settings are written into its slot's row of ``SlotSettings`` when it takes the slot
(and, for one resumed after a pause or preemption, the state it carried: still thinking,
low-entropy steps), so a step reads every row's method with two gathers.

Extra device memory: ``max_num_seqs`` slot rows of hidden size, a 104-byte settings row each, and
a token map; the replay rows reuse vLLM's own ``inputs_embeds`` buffer, which text-only models
leave unused. Per request the host keeps (K+1) ids and weights and the carried state per output
token (176 bytes at K = 20) for replays (``history.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mixinputs.config import MoIConfig
from mixinputs.mixing import mix_rows
from mixinputs.vllm_plugin.embedding import MixedInputEmbedding
from mixinputs.vllm_plugin.history import HistoryStaging, MixtureHistory, new_seed
from mixinputs.vllm_plugin.mix_step import MixStep, SamplerMasks, force_think_end, trace_record
from mixinputs.vllm_plugin.request_config import request_config
from mixinputs.vllm_plugin.slot_settings import SlotSettings, state_pack

logger = logging.getLogger("vllm.mixinputs")


@dataclass
class RequestMoI:
    """One MoI request's worker-side state."""

    config: MoIConfig
    history: MixtureHistory  # for replays: what output token j's input was made of
    slot: int = -1  # its row in the table's slot region, -1 while it has none
    latest: int = -1  # output index j whose mixture sits in `slot`


@dataclass
class SamplePlan:
    """What ``sample`` does this step, all decided on the host before the forward."""

    rows: torch.Tensor  # [M] long: rows of the logits (batch order) that mix
    all_rows: bool  # rows == arange(num_reqs): every request of the batch mixes
    slots: torch.Tensor  # [M] long: their table rows (and rows of the settings table)
    positions: torch.Tensor | None  # [M] long: js on the device (method step only)
    # Each row's own K applies (columns beyond it carry no weight); False when every row asks
    # the engine's width (cutting would change nothing, bit for bit, and costs a few launches)
    cut_to_row_k: bool
    sampling: bool  # some row's prior is the sampler's distribution
    method_step: bool  # some row needs mixing.apply_methods (soft, region, noise)
    cold_stop: bool  # some row may have its sampled token replaced (Cold Stop)
    req_states: list[RequestMoI]
    js: list[int]  # output index each row's sampled token will have


class MoIWorkerState:
    def __init__(
        self,
        runner: Any,
        embed: MixedInputEmbedding,
        default: MoIConfig | None,
        max_top_k: int,
    ):
        self.runner = runner
        self.embed = embed
        self.default = default
        self.max_top_k = max_top_k
        self.width = max_top_k + 1
        self.num_slots = embed.slots.shape[0]
        self.replay_capacity = embed.replay_rows
        self.device = embed.slots.device
        self.requests: dict[str, RequestMoI | None] = {}  # None: decided, standard decoding
        self.free_slots = list(range(self.num_slots - 1, -1, -1))
        self.slot_holders: set[str] = set()
        self.num_moi_alive = 0
        pin = self.device.type == "cuda"
        # Host copies of the two index buffers, two of each: with async scheduling the host plans
        # step N+1 while step N's copies may still be queued, so it never rewrites those.
        self._pos_host = [self._host_positions(pin) for _ in range(2)]
        self._pos_turn = 0
        self._host_extent = [0, 0]  # replay entries [0, extent) each host buffer may still hold
        self._replay_extent = 0  # replay_pos entries [0, extent) on the device may be set
        self._newest_dirty = False  # newest_pos on the device may hold positions
        self.plan: SamplePlan | None = None
        self.processed: torch.Tensor | None = None  # [M, V] the sampler's logits, sampling prior
        self.capture_rows: torch.Tensor | None = None
        self.table = SlotSettings(self.num_slots, self.device)  # each slot's settings and state
        self.staging = HistoryStaging(self.num_slots, self.width, self.device)
        self._warned: set[str] = set()
        self.step = MixStep(embed, max_top_k)  # steps 3-4 of `sample`: fused on CUDA
        self.trace: list[dict] | None = None  # per-step records, when tests ask for them
        self.num_replayed = 0  # output tokens whose mixture was rebuilt from the history

    # ------------------------------------------------------------------ request bookkeeping
    def _host_positions(self, pin: bool) -> tuple[torch.Tensor, torch.Tensor]:
        newest = torch.zeros(self.num_slots, dtype=torch.int64)
        replay = torch.zeros(self.embed.replay_rows, dtype=torch.int64)
        return (newest.pin_memory(), replay.pin_memory()) if pin else (newest, replay)

    def state_of(self, req_id: str) -> RequestMoI | None:
        if req_id in self.requests:
            return self.requests[req_id]
        req = self.runner.requests.get(req_id)
        params = getattr(req, "sampling_params", None)
        config = request_config(req_id, params, self.default, self.max_top_k)
        state = None
        if config is not None:
            seed = getattr(params, "seed", None)
            seed = new_seed() if seed is None else seed
            state = RequestMoI(config, MixtureHistory(self.width, seed))
        self.requests[req_id] = state
        self.num_moi_alive += state is not None
        return state

    def on_update_states(self, scheduler_output: Any) -> None:
        """Read new requests' MoI settings once; forget finished requests; give back the slots of
        requests not scheduled this step (preempted or paused): their newest mixture will be
        replayed from the history."""
        for new in scheduler_output.scheduled_new_reqs:
            self.state_of(new.req_id)
        for req_id in scheduler_output.finished_req_ids:
            state = self.requests.pop(req_id, None)
            if state is not None:
                self.num_moi_alive -= 1
                self._release_slot(req_id, state)
        if self.slot_holders:
            scheduled = scheduler_output.num_scheduled_tokens
            for req_id in [r for r in self.slot_holders if r not in scheduled]:
                self._release_slot(req_id, self.requests[req_id])

    def _release_slot(self, req_id: str, state: RequestMoI) -> None:
        if state.slot >= 0:
            self.free_slots.append(state.slot)
            self.slot_holders.discard(req_id)
            state.slot = -1

    # ------------------------------------------------------------------ 1. plan the forward
    def plan_forward(self, num_scheduled_tokens: np.ndarray) -> None:
        """Say which positions this step's mixtures overwrite, and plan the sample step."""
        self.plan = None
        batch = self.runner.input_batch
        num_reqs = batch.num_reqs
        if not self.num_moi_alive:  # no MoI request anywhere: nothing to do, no loop
            self._clear_positions()
            return
        states = [self.state_of(r) for r in batch.req_ids[:num_reqs]]
        moi = [i for i, s in enumerate(states) if s is not None]
        if not moi:
            self._clear_positions()
            return
        idx = np.asarray(moi)
        computed = batch.num_computed_tokens_cpu[idx]
        prompt = batch.num_prompt_tokens[idx]
        scheduled = num_scheduled_tokens[idx]
        starts = np.cumsum(num_scheduled_tokens)[idx] - scheduled
        total = batch.num_tokens_no_spec[idx]

        turn = self._pos_turn
        self._pos_turn ^= 1
        newest_host, replay_host = self._pos_host[turn]
        newest = newest_host.numpy()
        newest[:] = 0
        replays: list[tuple[int, RequestMoI, int]] = []
        for k, i in enumerate(moi):
            state = states[i]
            first = max(int(computed[k]), int(prompt[k]))  # output token j sits at prompt + j
            last = int(computed[k] + scheduled[k]) - 1
            for pos in range(first, last + 1):  # one position in a decode step
                j = pos - int(prompt[k])
                t = int(starts[k]) + pos - int(computed[k])  # its row in the flattened batch
                if j == state.latest and state.slot >= 0:
                    newest[state.slot] = t + 1  # 0 means "no row" (see embedding.py)
                else:
                    replays.append((t, state, j))
        self.embed.newest_pos.copy_(newest_host, non_blocking=True)
        self._newest_dirty = True
        self._write_replays(replays, replay_host, turn)

        # The rows whose sample this step is kept: the request has caught up with its tokens
        # (a partial prefill chunk samples a token that is thrown away).
        keep = (computed + scheduled) >= total
        if not keep.any():
            return
        self.plan = self._make_plan(
            [moi[k] for k in np.flatnonzero(keep)],
            [states[moi[k]] for k in np.flatnonzero(keep)],
            (total - prompt)[keep].tolist(),
        )

    def _clear_positions(self) -> None:
        if self._newest_dirty:
            self.embed.newest_pos.zero_()
            self._newest_dirty = False
        if self._replay_extent:
            self.embed.replay_pos[: self._replay_extent].zero_()
            self._replay_extent = 0
        if self.embed.replay_count is not None:
            self.embed.replay_count = 0

    def _make_plan(self, rows: list[int], states: list[RequestMoI], js: list[int]) -> SamplePlan:
        for req_id, state, j in zip(self._req_ids(rows), states, js, strict=True):
            if state.slot < 0:
                state.slot = self.free_slots.pop()
                self.slot_holders.add(req_id)
                self._assign(state, self.runner.requests[req_id].sampling_params, j)
        configs = [s.config for s in states]
        dev = self.device
        method_step = any(c.needs_method_step for c in configs)
        for state, j in zip(states, js, strict=True):
            state.latest = j
        return SamplePlan(
            rows=torch.tensor(rows, dtype=torch.long).to(dev, non_blocking=True),
            all_rows=rows == list(range(self.runner.input_batch.num_reqs)),
            slots=torch.tensor([s.slot for s in states], dtype=torch.long).to(
                dev, non_blocking=True
            ),
            positions=torch.tensor(js, dtype=torch.long).to(dev, non_blocking=True)
            if method_step
            else None,
            # One width for every batch (the engine's largest K): a row's candidates, weights
            # and mixture then depend on its own K only, never on what else is in the batch.
            cut_to_row_k=min(c.top_k for c in configs) < self.max_top_k,
            sampling=any(c.prior == "sampling" for c in configs),
            method_step=method_step,
            cold_stop=any(c.cold_stop_entropy is not None for c in configs),
            req_states=states,
            js=js,
        )

    def _assign(self, state: RequestMoI, params: Any, j: int) -> None:
        """Write a request's settings into its new slot, with the state it carries: a request
        that had a slot before (paused, preempted) goes on from its last sampled token's."""
        carried = (True, 0)
        if j > 0 and state.config.region == "thinking":
            if state.history.length < j:
                self.staging.drain(block=True)
            carried = state.history.state_after(j - 1) or carried
        self.table.assign(state.slot, state.config, params, state.history.seed, carried)

    def _req_ids(self, rows: list[int]) -> list[str]:
        req_ids = self.runner.input_batch.req_ids
        return [req_ids[i] for i in rows]

    def _write_replays(
        self, replays: list[tuple[int, RequestMoI, int]], host: torch.Tensor, turn: int
    ) -> None:
        """Mixtures of earlier output tokens, rebuilt from the host history into replay rows."""
        host_pos = host.numpy()
        host_pos[: self._host_extent[turn]] = 0  # what this buffer held two steps ago
        count = self._replay(replays, host_pos) if replays else 0
        self._host_extent[turn] = count
        # Copy over last step's extent too, so its stale entries are reset on the device.
        extent = max(count, self._replay_extent)
        if extent:
            self.embed.replay_pos[:extent].copy_(host[:extent], non_blocking=True)
        self._replay_extent = count
        if self.embed.replay_count is not None:  # eager engines scatter only what is used
            self.embed.replay_count = count

    def _replay(self, replays: list[tuple[int, RequestMoI, int]], host_pos: np.ndarray) -> int:
        self.staging.drain(block=True)
        usable = [(t, s, j) for t, s, j in replays if j < s.history.length]
        if len(usable) < len(replays):
            logger.error(
                "mixinputs: %d replayed tokens have no stored mixture; they use plain embeddings",
                len(replays) - len(usable),
            )
        room = self.embed.replay_rows
        if len(usable) > room:
            logger.error(
                "mixinputs: %d tokens to replay in one step, room for %d; the last %d use plain "
                "embeddings (start the engine with MIXINPUTS_REPLAY_ROWS=%d or more)",
                len(usable),
                room,
                len(usable) - room,
                len(usable),
            )
            usable = usable[:room]
        if not usable:
            return 0
        ids = torch.from_numpy(np.stack([s.history.ids[j] for _, s, j in usable]))
        w = torch.from_numpy(np.stack([s.history.w[j] for _, s, j in usable]))
        ids = ids.to(self.device, dtype=torch.long)
        mixed = mix_rows(w.to(self.device), self.embed.base(ids))  # [n, D]
        self.embed.replay[: len(usable)] = mixed.to(self.embed.replay.dtype)
        host_pos[: len(usable)] = [t + 1 for t, _, _ in usable]
        self.num_replayed += len(usable)
        return len(usable)

    # ------------------------------------------------------------------ 2. sample and mix
    def sample(self, original_sample, logits: torch.Tensor, spec_decode_metadata: Any):
        plan, self.plan = self.plan, None
        if plan is None:
            return original_sample(logits, spec_decode_metadata)
        if spec_decode_metadata is not None:
            self._warn_once(
                "spec",
                "mixinputs: speculative decoding is not supported with MoI; "
                "this step's MoI rows use plain embeddings",
            )
            return original_sample(logits, spec_decode_metadata)
        # 1. The raw (temperature-1) prior. The sampler edits float32 logits in place, so those
        #    are copied; other dtypes it converts to a new float32 tensor first, leaving these
        #    untouched: when every row mixes they are used as they are, with no copy.
        if plan.all_rows and logits.dtype != torch.float32:
            raw = logits  # [M = num_reqs, V]
        else:
            raw = logits.index_select(0, plan.rows)  # [M, V]
        # 2. Sample as usual (the sampler records its own distribution for the sampling prior).
        self.capture_rows = plan.rows if plan.sampling else None
        self.processed = None
        try:
            output = original_sample(logits, spec_decode_metadata)
        finally:
            self.capture_rows = None
        sampled = output.sampled_token_ids[:, 0].index_select(0, plan.rows).long()  # [M]
        # 3. Each row's settings from its slot, and its prior: the raw logits, or for sampling
        #    rows (soft thinking among them) the distribution the sampler drew from.
        rows = self.table.gather(plan.slots, plan.positions)
        prior, masks = raw, None
        if plan.sampling and self.processed is not None:
            prior = torch.where(rows.sampling[:, None], self.processed.to(raw.dtype), raw)
            masks = SamplerMasks(rows.sampling, rows.sampler_top_k, rows.sampler_top_p)
        self.processed = None
        # 4. Candidates top-K ∪ {y}, built at the engine's width K and cut to each row's own K
        #    (the sampler's top-k / top-p masks need the uncut columns first); the soft-input
        #    methods; the weights, and the mixture written into each request's slot for the
        #    next forward.
        ids, weights, step = self.step.mix_into_slots(
            prior,
            sampled,
            rows.row_top_k if plan.cut_to_row_k else None,
            masks,
            rows.methods.beta,
            rows.methods.direct,
            plan.slots,
            (rows.methods, rows.state) if plan.method_step else None,
        )
        # 5. The state each row carries to its next step; Cold Stop's think-end tokens.
        if step is not None:
            self.table.store_state(plan.slots, step.state)
            if plan.cold_stop:
                force_think_end(output, plan.rows, step, raw)
        self.staging.stage(
            ids,
            weights,
            state_pack(step.state) if step is not None else None,
            [s.history for s in plan.req_states],
            plan.js,
        )
        if self.trace is not None:  # debugging / tests only (see `enable_trace`)
            self.trace.append(
                trace_record(
                    self._req_ids(plan.rows.tolist()),
                    list(plan.js),
                    prior,
                    sampled,
                    rows,
                    step,
                    self.embed.slots[plan.slots],
                )
            )
        return output

    def record_processed(self, logits: torch.Tensor) -> None:
        """Called by the sampler's top-k/top-p stage with the logits it samples from."""
        if self.capture_rows is not None:
            self.processed = logits.index_select(0, self.capture_rows)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message)
