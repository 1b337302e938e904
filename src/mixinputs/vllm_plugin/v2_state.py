"""MoI state of one Model Runner V2 worker, and the two things it does every step.

V2 keeps each running request in a fixed *slot* (``RequestState.req_id_to_index``; a batch row
maps to its slot through ``InputBatch.idx_mapping``). MoI keeps its per-request state in the same
slots, so nothing is reordered or condensed between steps:

1. ``plan`` (host only, from ``ModelState.prepare_inputs``): which position of the flattened
   batch each slot's newest mixture overwrites (``newest_pos``), which positions replay a stored
   mixture (a request resumed after preemption recomputes its earlier output tokens), and which
   batch rows mix after sampling. Vectorised numpy over the batch; no device sync.
2. ``sample`` (device, around V2's sampler, see ``v2_model_state.MoISampler``): top-K of the raw
   logits, the sampled token, weights and the mixture (``mixinputs.mixing``), written into the
   slot's row of ``MixedInputEmbedding.slots``, which the next forward reads. The host never
   needs the sampled token: V2's async scheduling stays on.

Device memory (the embedding wrapper): ``max_num_seqs`` mixture rows of hidden size, two index
buffers, and the replay rows (``MIXINPUTS_REPLAY_ROWS`` on compiled engines; V2 has no unused
``inputs_embeds`` buffer to borrow, unlike V1). Per request the host keeps (K+1) ids and weights
per output token (168 bytes at K = 20) for replays; they are copied from the device through pinned
buffers and read only once their copy event completed.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mixinputs.config import MoIConfig, MoIConfigError
from mixinputs.mixing import (
    mix_rows,
)
from mixinputs.vllm_plugin.embedding import MixedInputEmbedding
from mixinputs.vllm_plugin.mix_step import MixStep, SamplerMasks

logger = logging.getLogger("vllm.mixinputs")

_HISTORY_RING = 4  # pinned staging buffers in flight before the oldest is waited for
_HOST_TURNS = 2  # host index buffers: the host plans step N+1 while step N's copies may be queued


class MixtureHistory:
    """One MoI request's candidates and weights per output token, on the host, for replays.

    >>> h = MixtureHistory(width=3)
    >>> h.record(1, np.array([4, 5, 6]), np.array([0.5, 0.5, 0.0]))
    >>> h.length, h.ids[1].tolist()
    (2, [4, 5, 6])
    """

    def __init__(self, width: int):
        self.width = width
        self.ids = np.zeros((0, width), np.int32)
        self.w = np.zeros((0, width), np.float32)
        self.length = 0  # output tokens [0, length) may have a record; unset rows weigh 0

    def record(self, j: int, ids: np.ndarray, w: np.ndarray) -> None:
        if j >= self.ids.shape[0]:
            grow = max(16, self.ids.shape[0], j + 1 - self.ids.shape[0])
            self.ids = np.concatenate([self.ids, np.zeros((grow, self.width), np.int32)])
            self.w = np.concatenate([self.w, np.zeros((grow, self.width), np.float32)])
        self.ids[j] = ids
        self.w[j] = w
        self.length = max(self.length, j + 1)


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
    histories: list[MixtureHistory]  # [M]
    js: np.ndarray  # [M] output index each row's sampled token will have
    sampling: bool  # some row's prior is the sampler's distribution


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
        self.holder: list[SlotRequest | None] = [None] * self.num_slots
        self.slot_of: dict[str, int] = {}
        self.parked: dict[str, MixtureHistory] = {}  # preempted MoI requests' histories
        self.preempting: frozenset[str] = frozenset()  # set while V2 frees preempted requests
        # Per slot, on the device: the request's MoI settings, written once when it is added.
        dev = self.device
        self.beta = torch.zeros(self.num_slots, dtype=torch.float32, device=dev)
        self.direct = torch.zeros(self.num_slots, dtype=torch.bool, device=dev)
        self.row_top_k = torch.ones(self.num_slots, dtype=torch.long, device=dev)
        self.sampling = torch.zeros(self.num_slots, dtype=torch.bool, device=dev)
        self.sampler_top_k = torch.zeros(self.num_slots, dtype=torch.long, device=dev)
        self.sampler_top_p = torch.ones(self.num_slots, dtype=torch.float32, device=dev)
        self.num_sampling = 0
        # Host -> device index traffic: [newest_pos (num_slots) | rows | slots] per turn.
        self.pin = dev.type == "cuda"
        size = self.num_slots + 2 * self.num_slots
        self._host = [self._zeros(size, torch.int64) for _ in range(_HOST_TURNS)]
        self._replay_host = [
            self._zeros(embed.replay_rows, torch.int64) for _ in range(_HOST_TURNS)
        ]
        self._replay_host_extent = [0] * _HOST_TURNS
        self._turn = 0
        self._plan_dev = torch.zeros(2 * self.num_slots, dtype=torch.long, device=dev)
        self._newest_dirty = False
        self._replay_extent = 0
        self.plan: StepPlan | None = None
        self.processed: torch.Tensor | None = None  # [M, V] the sampler's logits (sampling prior)
        self.capture_rows: torch.Tensor | None = None
        # History staging (device -> host), drained without waiting.
        self._pending: collections.deque = collections.deque()
        self._ring = (
            [
                (
                    self._zeros((self.num_slots, self.width), torch.int32),
                    self._zeros((self.num_slots, self.width), torch.float32),
                )
                for _ in range(_HISTORY_RING)
            ]
            if self.pin
            else []
        )
        self._ring_next = 0
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
        config = self._config_of(req_id, sampling_params)
        if config is None:
            return
        if self.disabled is not None:
            logger.error("request %s asks for MoI: %s; decoding it without", req_id, self.disabled)
            return
        request = SlotRequest(req_id, config, history or MixtureHistory(self.width))
        self.holder[slot] = request
        self.slot_of[req_id] = slot
        self.is_moi[slot] = True
        # Device writes are ordered on the stream: a step still reading the slot's old values
        # finishes before these land.
        greedy = sampling_params.temperature < 1e-5
        sampling = config.prior == "sampling"
        # A greedy row's sampling distribution is a point mass on y: beta = inf feeds E[y].
        self.beta[slot] = float("inf") if (sampling and greedy) else config.beta
        self.direct[slot] = config.direct
        self.row_top_k[slot] = config.top_k
        self.sampling[slot] = sampling
        if sampling:
            top_k = sampling_params.top_k
            self.sampler_top_k[slot] = top_k if top_k and top_k > 0 else 0
            self.sampler_top_p[slot] = sampling_params.top_p
            self.num_sampling += 1

    def remove_request(self, req_id: str) -> None:
        """V2 frees the request's slot: it finished, or it is preempted (then its history is
        kept for the replay when it comes back)."""
        slot = self.slot_of.get(req_id)
        if slot is None:  # standard, or not running (V2 also removes before every add)
            return
        request = self.holder[slot]
        self._free_slot(slot)
        if req_id in self.preempting and request is not None:
            self._drain(block=False)
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
        self.slot_of.pop(request.req_id, None)
        if request.config.prior == "sampling":
            self.num_sampling -= 1

    def _config_of(self, req_id: str, params: Any) -> MoIConfig | None:
        if params is None:
            return None
        try:
            config = MoIConfig.from_request(params.extra_args, self.default)
            if config is not None and (config.top_k is None or config.top_k > self.max_top_k):
                raise MoIConfigError(
                    f"mixinputs_top_k={config.top_k} exceeds this engine's maximum "
                    f"{self.max_top_k} (MIXINPUTS_MAX_TOP_K)"
                )
        except MoIConfigError as e:  # the front end rejects these; never crash the engine
            logger.error("request %s: %s; decoding it without MoI", req_id, e)
            return None
        return config

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
        plan_np = host_np[self.num_slots :]
        plan_np[:m] = rows[keep]
        plan_np[m : 2 * m] = slots[keep]
        plan_dev = self._plan_dev[: 2 * m]
        plan_dev.copy_(host[self.num_slots : self.num_slots + 2 * m], non_blocking=True)
        self.plan = StepPlan(
            batch=batch,
            rows=plan_dev[:m],
            slots=plan_dev[m:],
            histories=[self.holder[s].history for s in slots[keep]],
            js=end[keep] - prompt[keep],
            sampling=self.num_sampling > 0,
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
        self._drain(block=True)
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

    def mix_after_sampling(
        self, plan: StepPlan, raw: torch.Tensor, sampled_all: torch.Tensor
    ) -> None:
        """Write the mixtures of this step's sampled tokens into their slots (device only).

        ``raw`` [M, V]: the MoI rows' logits before the sampler touched them;
        ``sampled_all`` [num_reqs, 1]: every row's sampled token (V2's ``SamplerOutput``).
        """
        slots = plan.slots
        # 1. The sampled tokens of the MoI rows.
        sampled = sampled_all[:, 0].index_select(0, plan.rows).long()  # [M]
        # 2. The prior: the raw logits, or for "sampling" rows what the sampler drew from.
        prior = raw
        sampling_rows = None
        if plan.sampling and self.processed is not None:
            sampling_rows = self.sampling.index_select(0, slots)  # [M] bool
            prior = torch.where(sampling_rows[:, None], self.processed.to(raw.dtype), raw)
        self.processed = None
        # 3-4. Candidates top-K ∪ {y} at the engine's one width, each row cut to its own K (a
        #    row's mixture never depends on the rest of the batch), weights, and the mixture
        #    written into each request's slot for the next forward (fused on CUDA).
        row_top_k = self.row_top_k.index_select(0, slots)
        masks = None
        if sampling_rows is not None:
            masks = SamplerMasks(
                sampling_rows,
                self.sampler_top_k.index_select(0, slots),
                self.sampler_top_p.index_select(0, slots),
            )
        beta = self.beta.index_select(0, slots)
        direct = self.direct.index_select(0, slots)
        ids, weights = self.step.mix_into_slots(
            prior, sampled, row_top_k, masks, beta, direct, slots
        )
        self._stage_history(plan, ids, weights)
        if self.trace is not None:  # tests only
            self.trace.append(
                {
                    "req_ids": [plan.batch.req_ids[r] for r in plan.rows.tolist()],
                    "js": plan.js.tolist(),
                    "prior": prior.float().cpu(),
                    "sampled": sampled.cpu(),
                    "beta": beta.cpu(),
                    "direct": direct.cpu(),
                    "top_k": row_top_k.cpu(),
                    "mixed": self.embed.slots.index_select(0, slots).cpu(),
                }
            )

    def record_processed(self, logits: torch.Tensor) -> None:
        """The sampler's logits after temperature / min-p, before top-k / top-p (``sampling``)."""
        if self.capture_rows is not None:
            self.processed = logits.index_select(0, self.capture_rows)

    # ------------------------------------------------------------------ replay history
    def _stage_history(self, plan: StepPlan, ids: torch.Tensor, weights: torch.Tensor) -> None:
        m, width = ids.shape
        if not self.pin:  # CPU: the tensors are already on the host
            host_ids, host_w = ids.to(torch.int32).numpy(), weights.float().numpy()
            self._pending.append((None, host_ids, host_w, plan.histories, plan.js))
            self._drain(block=False)
            return
        # Device -> pinned host copy in a ring of buffers; read only once its event completed.
        if len(self._pending) >= len(self._ring):
            self._drain(block=True, limit=1)
        host_ids, host_w = self._ring[self._ring_next]
        self._ring_next = (self._ring_next + 1) % len(self._ring)
        host_ids[:m, :width].copy_(ids, non_blocking=True)
        host_w[:m, :width].copy_(weights, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._pending.append(
            (event, host_ids[:m].numpy(), host_w[:m].numpy(), plan.histories, plan.js)
        )
        self._drain(block=False)

    def _drain(self, block: bool, limit: int | None = None) -> None:
        done = 0
        while self._pending and (limit is None or done < limit):
            event, ids, w, histories, js = self._pending[0]
            if event is not None:
                if not block and not event.query():
                    break
                event.synchronize()
            self._pending.popleft()
            done += 1
            for m, (history, j) in enumerate(zip(histories, js.tolist(), strict=True)):
                history.record(j, ids[m], w[m])
