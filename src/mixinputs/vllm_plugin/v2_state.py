"""MoI state of one Model Runner V2 worker, and the two things it does every step.

V2 keeps each running request in a fixed *slot* (``RequestState.req_id_to_index``; a batch row
maps to its slot through ``InputBatch.idx_mapping``). MoI keeps its per-request state in the same
slots, so nothing is reordered or condensed between steps:

1. ``plan`` (host only, from ``ModelState.prepare_inputs``): which position of the flattened
   batch each slot's newest mixture overwrites (``newest_pos``), which positions replay a stored
   mixture (a request resumed after preemption recomputes its earlier output tokens), and which
   batch rows mix after sampling. Vectorised numpy over the batch; no device sync.
2. ``sample`` (device, around V2's sampler, see ``v2_model_state.MoISampler``): top-K of the raw
   logits, the sampled token, the request's soft-input method, weights and the mixture
   (``mix_step.MixStep``), written into the slot's row of ``MixedInputEmbedding.slots``, which
   the next forward reads. The host never needs the sampled token: V2's async scheduling stays
   on. Cold Stop rewrites the sampled token in the sampler's output, on the device.

Device memory: ``max_num_seqs`` mixture rows of hidden size and a 104-byte settings row each
(``SlotSettings``), two index buffers, and the replay rows (``MIXINPUTS_REPLAY_ROWS`` on compiled
engines; V2 has no unused ``inputs_embeds`` buffer to borrow, unlike V1). Per request the host
keeps (K+1) ids and weights and the carried state per output token (176 bytes at K = 20) for
replays (``history.py``).
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

_HOST_TURNS = 2  # host index buffers: the host plans step N+1 while step N's copies may be queued


@dataclass
class SlotRequest:
    """A MoI request that holds a V2 slot."""

    req_id: str
    config: MoIConfig
    history: MixtureHistory


@dataclass
class StepPlan:
    """What ``sample`` does for one real batch, decided on the host before the forward."""

    batch: Any  # the InputBatch it was made for (the sampler ignores any other)
    rows: torch.Tensor  # [M] long, device: logits rows (batch order) that mix
    slots: torch.Tensor  # [M] long, device: their slots
    positions: torch.Tensor  # [M] long, device: js
    histories: list[MixtureHistory]  # [M]
    js: np.ndarray  # [M] output index each row's sampled token will have
    sampling: bool  # some row's prior is the sampler's distribution
    method_step: bool  # some row needs mixing.apply_methods (soft, region, noise)
    cold_stop: bool  # some row may have its sampled token replaced (Cold Stop)


class V2MoIState:
    """Per-worker MoI state for Model Runner V2 (one per engine, built with the model state)."""

    def __init__(
        self,
        embed: MixedInputEmbedding,
        default: MoIConfig | None,
        max_top_k: int,
    ):
        self.embed = embed
        self.default = default
        self.max_top_k = max_top_k
        self.width = max_top_k + 1
        self.num_slots = embed.slots.shape[0]
        self.device = embed.slots.device
        self.step = MixStep(embed, max_top_k)  # the mixing step, fused on CUDA
        # Per slot, on the host: is it a MoI request, and who.
        self.is_moi = np.zeros(self.num_slots, dtype=bool)
        self.resumed = np.zeros(self.num_slots, dtype=bool)  # back after a preemption
        self.holder: list[SlotRequest | None] = [None] * self.num_slots
        self.slot_of: dict[str, int] = {}
        self.parked: dict[str, MixtureHistory] = {}  # preempted MoI requests' histories
        self.preempting: frozenset[str] = frozenset()  # set while V2 frees preempted requests
        # Per slot, on the device: the request's MoI settings, written once when it is added,
        # and the state it carries from step to step.
        self.table = SlotSettings(self.num_slots, self.device)
        self.num_sampling = 0
        self.num_method_step = 0  # slots whose request needs mixing.apply_methods
        self.num_cold_stop = 0
        # Host -> device index traffic: [newest_pos (num_slots) | rows | slots | js] per turn.
        self.pin = self.device.type == "cuda"
        size = self.num_slots + 3 * self.num_slots
        self._host = [self._zeros(size, torch.int64) for _ in range(_HOST_TURNS)]
        self._replay_host = [
            self._zeros(embed.replay_rows, torch.int64) for _ in range(_HOST_TURNS)
        ]
        self._replay_host_extent = [0] * _HOST_TURNS
        self._turn = 0
        self._plan_dev = torch.zeros(3 * self.num_slots, dtype=torch.long, device=self.device)
        self._newest_dirty = False
        self._replay_extent = 0
        self.plan: StepPlan | None = None
        self.processed: torch.Tensor | None = None  # [M, V] the sampler's logits (sampling prior)
        self.capture_rows: torch.Tensor | None = None
        self.staging = HistoryStaging(self.num_slots, self.width, self.device)
        self.disabled: str | None = None  # why this engine cannot mix after all, or None
        self.trace: list[dict] | None = None  # per-step records, when tests ask for them
        self.num_replayed = 0  # output tokens whose mixture was rebuilt from the history

    def _zeros(self, shape, dtype) -> torch.Tensor:
        t = torch.zeros(shape, dtype=dtype)
        return t.pin_memory() if self.pin else t

    # ------------------------------------------------------------------ request bookkeeping
    def disable(self, reason: str) -> None:
        """This engine cannot mix (found out after the model state was built)."""
        self.disabled = reason
        logger.error("mixinputs: MoI is off for this engine: %s", reason)

    def add_request(self, slot: int, req_id: str, sampling_params: Any) -> None:
        """A request took ``slot`` (new, or resumed after preemption with its full history)."""
        self._free_slot(slot)
        history = self.parked.pop(req_id, None)
        config = request_config(req_id, sampling_params, self.default, self.max_top_k)
        if config is None:
            return
        if self.disabled is not None:
            logger.error("request %s asks for MoI: %s; decoding it without", req_id, self.disabled)
            return
        resumed = history is not None
        if history is None:
            seed = getattr(sampling_params, "seed", None)
            seed = new_seed() if seed is None else seed
            history = MixtureHistory(self.width, seed)
        request = SlotRequest(req_id, config, history)
        self.resumed[slot] = resumed  # its carried state is restored at its first sample
        self.holder[slot] = request
        self.slot_of[req_id] = slot
        self.is_moi[slot] = True
        self.table.assign(slot, config, sampling_params, history.seed)
        self.num_sampling += config.prior == "sampling"
        self.num_method_step += config.needs_method_step
        self.num_cold_stop += config.cold_stop_entropy is not None

    def remove_request(self, req_id: str) -> None:
        """V2 frees the request's slot: it finished, or it is preempted (then its history is
        kept for the replay when it comes back)."""
        slot = self.slot_of.get(req_id)
        if slot is None:  # standard, or not running (V2 also removes before every add)
            return
        request = self.holder[slot]
        self._free_slot(slot)
        if req_id in self.preempting and request is not None:
            self.staging.drain(block=False)
            self.parked[req_id] = request.history

    def forget(self, finished_req_ids: Any) -> None:
        """Requests that finished (or were aborted, also while preempted) never come back."""
        if self.parked:
            for req_id in finished_req_ids:
                self.parked.pop(req_id, None)

    def _free_slot(self, slot: int) -> None:
        request = self.holder[slot]
        if request is None:
            return
        self.holder[slot] = None
        self.is_moi[slot] = False
        self.resumed[slot] = False
        self.slot_of.pop(request.req_id, None)
        config = request.config
        self.num_sampling -= config.prior == "sampling"
        self.num_method_step -= config.needs_method_step
        self.num_cold_stop -= config.cold_stop_entropy is not None

    def _restore(self, slot: int, request: SlotRequest, j: int) -> None:
        """A resumed request goes on from the state its last sampled token left (thinking or
        not, low-entropy steps); a new one starts fresh (written by ``add_request``)."""
        self.resumed[slot] = False
        if j == 0 or request.config.region != "thinking":
            return
        if request.history.length < j:
            self.staging.drain(block=True)
        carried = request.history.state_after(j - 1)
        if carried is not None:
            self.table.set_state(slot, carried)

    # ------------------------------------------------------------------ 1. plan the forward
    def plan_step(self, batch: Any, req_states: Any) -> None:
        """Say which positions this step's mixtures overwrite, and plan the sample step.

        ``batch`` is V2's ``InputBatch``, ``req_states`` its ``RequestState``.
        """
        self.plan = None
        n = batch.num_reqs
        if not self.slot_of or n == 0:
            self._clear_positions()
            return
        idx = batch.idx_mapping_np[:n]
        # Dummy batches (profiling, graph capture, idle DP ranks) use slots 0..n-1 under made-up
        # request ids: they must neither read nor write real requests' mixtures.
        if req_states.req_id_to_index.get(batch.req_ids[0]) != idx[0]:
            self._clear_positions()
            return
        rows = np.flatnonzero(self.is_moi[idx])
        if rows.size == 0:
            self._clear_positions()
            return
        slots = idx[rows]
        computed = batch.num_computed_tokens_np[rows].astype(np.int64)
        scheduled = batch.num_scheduled_tokens[rows].astype(np.int64)
        start = batch.query_start_loc_np[rows].astype(np.int64)
        prefill = batch.prefill_len_np[rows].astype(np.int64)
        prompt = req_states.prompt_len.np[slots].astype(np.int64)
        end = computed + scheduled  # the sampled token's position

        turn = self._turn
        self._turn = (turn + 1) % _HOST_TURNS
        host = self._host[turn]
        host_np = host.numpy()
        newest = host_np[: self.num_slots]
        newest[:] = 0
        # 1. A row past its prefill feeds its newest sampled token: that slot's mixture, made when
        #    the token was sampled. 0 means "no row" (see embedding.py).
        decoding = computed >= prefill
        newest[slots[decoding]] = start[decoding] + 1
        self.embed.newest_pos.copy_(host[: self.num_slots], non_blocking=True)
        self._newest_dirty = True
        # 2. Output tokens recomputed after a preemption (positions [prompt, prefill)): replayed.
        replaying = np.flatnonzero((computed < prefill) & (end > prompt))
        self._write_replays(
            turn,
            slots[replaying],
            computed[replaying],
            end[replaying],
            start[replaying],
            prefill[replaying],
            prompt[replaying],
        )
        # 3. Rows whose sample this step is kept (a partial prefill chunk's sample is dropped).
        keep = end >= prefill
        if not keep.any():
            return
        m = int(keep.sum())
        kept_slots = slots[keep]
        js = end[keep] - prompt[keep]
        holders = [self.holder[s] for s in kept_slots]
        for k in np.flatnonzero(self.resumed[kept_slots]).tolist():  # after a preemption only
            self._restore(int(kept_slots[k]), holders[k], int(js[k]))
        plan_np = host_np[self.num_slots :]
        plan_np[:m] = rows[keep]
        plan_np[m : 2 * m] = kept_slots
        plan_np[2 * m : 3 * m] = js
        plan_dev = self._plan_dev[: 3 * m]
        plan_dev.copy_(host[self.num_slots : self.num_slots + 3 * m], non_blocking=True)
        self.plan = StepPlan(
            batch=batch,
            rows=plan_dev[:m],
            slots=plan_dev[m : 2 * m],
            positions=plan_dev[2 * m :],
            histories=[r.history for r in holders],
            js=js,
            sampling=self.num_sampling > 0,
            method_step=self.num_method_step > 0,
            cold_stop=self.num_cold_stop > 0,
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

    def _write_replays(self, turn, slots, computed, end, start, prefill, prompt) -> None:
        host = self._replay_host[turn]
        host_pos = host.numpy()
        host_pos[: self._replay_host_extent[turn]] = 0  # what this buffer held two steps ago
        count = self._replay(host_pos, slots, computed, end, start, prefill, prompt)
        self._replay_host_extent[turn] = count
        # Copy over last step's extent too, so its stale entries are reset on the device.
        extent = max(count, self._replay_extent)
        if extent:
            self.embed.replay_pos[:extent].copy_(host[:extent], non_blocking=True)
        self._replay_extent = count
        if self.embed.replay_count is not None:  # eager engines scatter only what is used
            self.embed.replay_count = count

    def _replay(self, host_pos, slots, computed, end, start, prefill, prompt) -> int:
        """Mixtures of earlier output tokens, rebuilt from the host history into replay rows.
        Runs only for requests resumed after a preemption (a loop over those requests)."""
        if slots.size == 0:
            return 0
        self.staging.drain(block=True)
        ids, w, rows = [], [], []
        missing = 0
        for k, slot in enumerate(slots):
            history = self.holder[slot].history
            first = max(computed[k], prompt[k])
            positions = np.arange(first, min(end[k], prefill[k]))
            js = positions - prompt[k]
            usable = js < history.length
            missing += int((~usable).sum())
            ids.append(history.ids[js[usable]])
            w.append(history.w[js[usable]])
            rows.append(start[k] + positions[usable] - computed[k])
        if missing:
            logger.error(
                "mixinputs: %d replayed tokens have no stored mixture; they use plain embeddings",
                missing,
            )
        rows_all = np.concatenate(rows)
        room = self.embed.replay_rows
        if rows_all.size > room:
            logger.error(
                "mixinputs: %d tokens to replay in one step, room for %d; the last %d use plain "
                "embeddings (raise MIXINPUTS_REPLAY_ROWS)",
                rows_all.size,
                room,
                rows_all.size - room,
            )
        count = min(rows_all.size, room)
        if count == 0:
            return 0
        ids_dev = torch.from_numpy(np.concatenate(ids)[:count]).to(self.device, torch.long)
        w_dev = torch.from_numpy(np.concatenate(w)[:count]).to(self.device)
        mixed = mix_rows(w_dev, self.embed.base(ids_dev))  # [count, D]
        self.embed.replay[:count] = mixed.to(self.embed.replay.dtype)
        host_pos[:count] = rows_all[:count] + 1
        self.num_replayed += count
        return count

    # ------------------------------------------------------------------ 2. sample and mix
    def take_plan(self, batch: Any) -> StepPlan | None:
        plan, self.plan = self.plan, None
        return plan if plan is not None and plan.batch is batch else None

    def mix_after_sampling(self, plan: StepPlan, raw: torch.Tensor, output: Any) -> None:
        """Write the mixtures of this step's sampled tokens into their slots (device only).

        ``raw`` [M, V]: the MoI rows' logits before the sampler touched them; ``output``: V2's
        ``SamplerOutput`` (``sampled_token_ids`` [num_reqs, 1]); Cold Stop may rewrite it.
        """
        slots = plan.slots
        # 1. The sampled tokens of the MoI rows, and each row's settings from its slot.
        sampled = output.sampled_token_ids[:, 0].index_select(0, plan.rows).long()  # [M]
        rows = self.table.gather(slots, plan.positions)
        # 2. The prior: the raw logits, or for "sampling" rows (soft thinking among them) what
        #    the sampler drew from, cut to the sampler's top-k / top-p.
        prior, masks = raw, None
        if plan.sampling and self.processed is not None:
            prior = torch.where(rows.sampling[:, None], self.processed.to(raw.dtype), raw)
            masks = SamplerMasks(rows.sampling, rows.sampler_top_k, rows.sampler_top_p)
        self.processed = None
        # 3-5. Candidates top-K ∪ {y} at the engine's one width, each row cut to its own K (a
        #    row's mixture never depends on the rest of the batch), the soft-input methods, the
        #    weights, and the mixture written into each request's slot for the next forward.
        ids, weights, step = self.step.mix_into_slots(
            prior,
            sampled,
            rows.row_top_k,
            masks,
            rows.methods.beta,
            rows.methods.direct,
            slots,
            (rows.methods, rows.state) if plan.method_step else None,
        )
        # 6. The state each row carries to its next step; Cold Stop's think-end tokens.
        if step is not None:
            self.table.store_state(slots, step.state)
            if plan.cold_stop:
                force_think_end(output, plan.rows, step, raw)
        self.staging.stage(
            ids,
            weights,
            state_pack(step.state) if step is not None else None,
            plan.histories,
            plan.js,
        )
        if self.trace is not None:  # tests only
            self.trace.append(
                trace_record(
                    [plan.batch.req_ids[r] for r in plan.rows.tolist()],
                    plan.js.tolist(),
                    prior,
                    sampled,
                    rows,
                    step,
                    self.embed.slots.index_select(0, slots),
                )
            )

    def record_processed(self, logits: torch.Tensor) -> None:
        """The sampler's logits after temperature / min-p, before top-k / top-p (``sampling``)."""
        if self.capture_rows is not None:
            self.processed = logits.index_select(0, self.capture_rows)
