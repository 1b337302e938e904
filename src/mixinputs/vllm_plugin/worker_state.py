"""MoI state of one vLLM worker, and the two things it does every step.

1. ``plan_forward`` (host only, after the runner prepared its inputs): which token position each
   mixture row overwrites (``newest_pos`` per slot, ``replay_pos`` per replay row; see
   ``embedding.py``). A MoI request's newest output token reads its slot (one row per running
   request, written on the device right after sampling). Older output tokens (a request resumed
   after preemption recomputes them) are *replayed* from the host copy of their candidates and
   weights, so a resumed request sees exactly the inputs it saw the first time.
2. ``sample`` (device, around the runner's ``_sample``): keep the prior's logits before the sampler
   edits them in place, sample, then build candidates ``top-K ∪ {y}``, weights and the mixture
   (``mixinputs.mixing``) for the MoI rows and write them into their slots. No host sync: the host
   only learns which rows mix and where, which it knows before the step.

Extra device memory: ``max_num_seqs`` slot rows of hidden size and a token map; the replay rows
reuse vLLM's own ``inputs_embeds`` buffer, which text-only models leave unused. Per request the
host keeps (K+1) ids and weights per output token (168 bytes at K = 20) for replays.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mixinputs.config import MoIConfig, MoIConfigError
from mixinputs.mixing import mix_rows
from mixinputs.vllm_plugin.embedding import MixedInputEmbedding
from mixinputs.vllm_plugin.mix_step import MixStep, SamplerMasks

logger = logging.getLogger("vllm.mixinputs")

_HISTORY_RING = 4  # pinned staging buffers in flight before the oldest is waited for


@dataclass
class RequestMoI:
    """One MoI request's worker-side state."""

    config: MoIConfig
    slot: int = -1  # its row in the table's slot region, -1 while it has none
    latest: int = -1  # output index j whose mixture sits in `slot`
    # History for replays: row j holds the candidates/weights that made output token j's input.
    hist_ids: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int32))
    hist_w: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    hist_len: int = 0

    def record(self, j: int, ids: np.ndarray, w: np.ndarray, width: int) -> None:
        if j >= self.hist_ids.shape[0]:
            cap = max(16, 2 * self.hist_ids.shape[0], j + 1)
            grown_ids = np.zeros((cap, width), np.int32)
            grown_w = np.zeros((cap, width), np.float32)
            if self.hist_len:
                grown_ids[: self.hist_len] = self.hist_ids[: self.hist_len]
                grown_w[: self.hist_len] = self.hist_w[: self.hist_len]
            self.hist_ids, self.hist_w = grown_ids, grown_w
        self.hist_ids[j, : ids.shape[0]] = ids
        self.hist_w[j, : w.shape[0]] = w
        self.hist_w[j, w.shape[0] :] = 0.0  # padding slots carry no weight
        self.hist_len = max(self.hist_len, j + 1)


@dataclass
class SamplePlan:
    """What ``sample`` does this step, all decided on the host before the forward."""

    rows: torch.Tensor  # [M] long: rows of the logits (batch order) that mix
    all_rows: bool  # rows == arange(num_reqs): every request of the batch mixes
    slots: torch.Tensor  # [M] long: their table rows
    beta: torch.Tensor  # [M] float32 (inf: exactly E[y])
    direct: torch.Tensor  # [M] bool
    top_k: int  # the candidates' width K: the engine's largest K, the same every step
    # [M] long: each row's own K (columns beyond it carry no weight); None when every row asks
    # the engine's width (cutting would change nothing, bit for bit, and costs a few launches)
    row_top_k: torch.Tensor | None
    sampling: torch.Tensor | None  # [M] bool: rows whose prior is the sampler's distribution
    sampler_top_k: torch.Tensor | None  # [M] long (0 = off), for the sampling prior
    sampler_top_p: torch.Tensor | None  # [M] float32 (1 = off)
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
        self._pending: collections.deque = collections.deque()
        self._ring = [self._staging() for _ in range(_HISTORY_RING)] if pin else []
        self._ring_next = 0
        self._warned: set[str] = set()
        self.step = MixStep(embed, max_top_k)  # steps 3-4 of `sample`: fused on CUDA
        self.trace: list[dict] | None = None  # per-step records, when tests ask for them
        self.num_replayed = 0  # output tokens whose mixture was rebuilt from the history

    # ------------------------------------------------------------------ request bookkeeping
    def _host_positions(self, pin: bool) -> tuple[torch.Tensor, torch.Tensor]:
        newest = torch.zeros(self.num_slots, dtype=torch.int64)
        replay = torch.zeros(self.embed.replay_rows, dtype=torch.int64)
        return (newest.pin_memory(), replay.pin_memory()) if pin else (newest, replay)

    def _staging(self):
        shape = (self.num_slots, self.width)
        return (
            torch.zeros(shape, dtype=torch.int32).pin_memory(),
            torch.zeros(shape, dtype=torch.float32).pin_memory(),
        )

    def state_of(self, req_id: str) -> RequestMoI | None:
        if req_id in self.requests:
            return self.requests[req_id]
        req = self.runner.requests.get(req_id)
        params = getattr(req, "sampling_params", None)
        config = None
        if params is not None:
            try:
                config = MoIConfig.from_request(params.extra_args, self.default)
                if config is not None and (config.top_k is None or config.top_k > self.max_top_k):
                    raise MoIConfigError(
                        f"mixinputs_top_k={config.top_k} exceeds this engine's maximum "
                        f"{self.max_top_k} (MIXINPUTS_MAX_TOP_K)"
                    )
            except MoIConfigError as e:  # the front end rejects these; never crash the engine
                logger.error("request %s: %s; decoding it without MoI", req_id, e)
                config = None
        state = RequestMoI(config) if config is not None else None
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
        for req_id, state in zip(self._req_ids(rows), states, strict=True):
            if state.slot < 0:
                state.slot = self.free_slots.pop()
                self.slot_holders.add(req_id)
        configs = [s.config for s in states]
        dev = self.device
        # One width for every batch (the engine's largest K): a row's candidates, weights and
        # mixture then depend on its own K only, never on what else is in the batch.
        row_k = [c.top_k for c in configs]
        row_top_k = None
        if min(row_k) < self.max_top_k:
            row_top_k = torch.tensor(row_k, dtype=torch.long).to(dev, non_blocking=True)
        sampling = sampler_top_k = sampler_top_p = None
        if any(c.prior == "sampling" for c in configs):
            params = [self.runner.requests[r].sampling_params for r in self._req_ids(rows)]
            sampling = torch.tensor([c.prior == "sampling" for c in configs]).to(dev)
            sampler_top_k = torch.tensor(
                [p.top_k if p.top_k and p.top_k > 0 else 0 for p in params]
            ).to(dev)
            sampler_top_p = torch.tensor([p.top_p for p in params], dtype=torch.float32).to(dev)
            greedy = [p.temperature < 1e-5 for p in params]
        else:
            greedy = [False] * len(rows)
        # A greedy row's sampling distribution is a point mass on y: beta = inf feeds E[y].
        beta = [
            float("inf") if (c.prior == "sampling" and g) else c.beta
            for c, g in zip(configs, greedy, strict=True)
        ]
        for state, j in zip(states, js, strict=True):
            state.latest = j
        return SamplePlan(
            rows=torch.tensor(rows, dtype=torch.long).to(dev, non_blocking=True),
            all_rows=rows == list(range(self.runner.input_batch.num_reqs)),
            slots=torch.tensor([s.slot for s in states], dtype=torch.long).to(
                dev, non_blocking=True
            ),
            beta=torch.tensor(beta, dtype=torch.float32).to(dev, non_blocking=True),
            direct=torch.tensor([c.direct for c in configs]).to(dev, non_blocking=True),
            top_k=self.max_top_k,
            row_top_k=row_top_k,
            sampling=sampling,
            sampler_top_k=sampler_top_k,
            sampler_top_p=sampler_top_p,
            req_states=states,
            js=js,
        )

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
        self._drain(block=True)
        usable = [(t, s, j) for t, s, j in replays if j < s.hist_len]
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
        ids = torch.from_numpy(np.stack([s.hist_ids[j] for _, s, j in usable]))
        w = torch.from_numpy(np.stack([s.hist_w[j] for _, s, j in usable]))
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
        self.capture_rows = plan.rows if plan.sampling is not None else None
        self.processed = None
        try:
            output = original_sample(logits, spec_decode_metadata)
        finally:
            self.capture_rows = None
        sampled = output.sampled_token_ids[:, 0].index_select(0, plan.rows).long()  # [M]
        # 3. Candidates top-K ∪ {y} and their scores, per row from its own prior.
        prior = raw
        if plan.sampling is not None and self.processed is not None:
            prior = torch.where(plan.sampling[:, None], self.processed.to(raw.dtype), raw)
        #    Every row is built at the engine's width K and cut to its own K (the sampler's
        #    top-k / top-p masks need the uncut columns first). Then the weights, and the
        #    mixture written into each request's slot for the next forward.
        masks = None
        if plan.sampling is not None and self.processed is not None:
            masks = SamplerMasks(plan.sampling, plan.sampler_top_k, plan.sampler_top_p)
        self.processed = None
        ids, weights = self.step.mix_into_slots(
            prior, sampled, plan.row_top_k, masks, plan.beta, plan.direct, plan.slots
        )
        self._stage_history(plan, ids, weights)
        if self.trace is not None:  # debugging / tests only (see `enable_trace`)
            self.trace.append(
                {
                    "req_ids": self._req_ids(plan.rows.tolist()),
                    "js": list(plan.js),
                    "prior": prior.float().cpu(),
                    "sampled": sampled.cpu(),
                    "beta": plan.beta.cpu(),
                    "direct": plan.direct.cpu(),
                    "mixed": self.embed.slots[plan.slots].cpu(),
                }
            )
        return output

    def record_processed(self, logits: torch.Tensor) -> None:
        """Called by the sampler's top-k/top-p stage with the logits it samples from."""
        if self.capture_rows is not None:
            self.processed = logits.index_select(0, self.capture_rows)

    # ------------------------------------------------------------------ replay history
    def _stage_history(self, plan: SamplePlan, ids: torch.Tensor, weights: torch.Tensor) -> None:
        m, width = ids.shape
        if self.device.type != "cuda":
            host_ids, host_w = ids.to(torch.int32).cpu().numpy(), weights.float().cpu().numpy()
            self._pending.append((None, host_ids, host_w, plan.req_states, plan.js))
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
            (
                event,
                host_ids[:m, :width].numpy(),
                host_w[:m, :width].numpy(),
                plan.req_states,
                plan.js,
            )
        )
        self._drain(block=False)

    def _drain(self, block: bool, limit: int | None = None) -> None:
        done = 0
        while self._pending and (limit is None or done < limit):
            event, ids, w, states, js = self._pending[0]
            if event is not None:
                if not block and not event.query():
                    break
                event.synchronize()
            self._pending.popleft()
            done += 1
            for m, (state, j) in enumerate(zip(states, js, strict=True)):
                state.record(j, ids[m], w[m], self.width)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message)
