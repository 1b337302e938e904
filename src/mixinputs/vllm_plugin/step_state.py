"""One engine's MoI state and the two things it does every step, for both vLLM model runners.

Each runner's adapter (``worker_state.py`` for V1, ``v2_state.py`` for Model Runner V2) only turns
its own batch into arrays and tells this state which request holds which *slot*: one row per
running MoI request in ``MixedInputEmbedding.slots`` and in ``SlotSettings``.

1. ``plan`` (host only, after the runner prepared its inputs; vectorised numpy over the MoI rows):
   which position of the flattened batch each slot's newest mixture overwrites (``newest_pos``),
   which positions replay a stored mixture, and which rows mix after sampling. A position feeds
   its slot when the slot holds that output token's mixture (made when it was sampled); any other
   output position (a request resumed after preemption recomputes its earlier output tokens) is
   *replayed* from the host history, so a resumed request sees exactly the inputs it saw the
   first time. The step's indices go to the device in one packed pinned upload.
2. ``sample`` (device, around the runner's sampler): keep the MoI rows' raw logits (the sampler
   may edit them in place), sample as usual, then build candidates ``top-K ∪ {y}``, apply each
   row's method, and write the mixtures into their slots (``mix_step.MixStep``). The state each
   row carries goes back into its slot's settings row; the tokens a method emits in place of the
   sampled ones (soft thinking's top-1, Cold Stop's think-end token and EOS, SwiReasoning's
   injections) are written into the sampler's output; the final weights go to the host history.
   Whole-vocabulary work (Cold Stop's entropy, soft thinking's Dirichlet draws over every kept
   token, SwiReasoning's p·E, Multiplex's draws) runs on the rows that need it only, whose
   indices travel in the plan's one upload. No host sync: the host only learns which rows mix
   and where, which it knows before the step.

Extra device memory: ``max_num_seqs`` slot rows of hidden size, a settings row each, two index
buffers and the replay rows (see ``embedding.py``). Per request the host keeps (K+1) ids and
weights and the carried state per output token for replays (``history.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mixinputs.config import MoIConfig
from mixinputs.mixing import (
    FAMILY_CODES,
    MEASURE_CODES,
    STATE_DTYPES,
    FamilyInputs,
    KeptDraws,
    kept_dirichlet,
    mask_top_k_top_p,
    row_settings,
    top_k_normalizer,
    vocab_entropy,
)
from mixinputs.mixing import _rows_at as rows_at
from mixinputs.vllm_plugin.embedding import MixedInputEmbedding
from mixinputs.vllm_plugin.history import HistoryStaging, MixtureHistory, new_seed
from mixinputs.vllm_plugin.host_turns import HostTurns
from mixinputs.vllm_plugin.mix_step import MixStep, SamplerMasks, StepRecord, force_tokens
from mixinputs.vllm_plugin.replay import Replays
from mixinputs.vllm_plugin.request_config import request_config
from mixinputs.vllm_plugin.slot_settings import SlotSettings, state_pack

logger = logging.getLogger("vllm.mixinputs")

# Per-slot host flags: which work a batch holding the slot needs.
_SAMPLING, _METHODS, _FORCES, _OWN_K, _SWIR, _SELAR, _MULTIPLEX, _MASKED_DRAWS = range(8)
_VOCAB, _KEPT, _KEPT_CUT, _RECIPE = range(8, 12)  # Cold Stop's entropy, Dirichlet, SeLaR greedy
_WIDE = 12  # a sampling-prior row whose sampler's top-k is wider than the engine's K
_NUM_FLAGS = 13
_FAMILY_FLAGS = {"swir": _SWIR, "selar": _SELAR, "multiplex": _MULTIPLEX}


@dataclass
class SlotRequest:
    """A MoI request: its config and, for replays, what each of its output tokens was fed."""

    req_id: str
    config: MoIConfig
    history: MixtureHistory
    next_j: int = 0  # output index of its next sample, set when it leaves a slot; > 0: resumed

    @classmethod
    def new(cls, req_id: str, config: MoIConfig, params: Any, width: int) -> SlotRequest:
        seed = getattr(params, "seed", None)
        return cls(req_id, config, MixtureHistory(width, new_seed() if seed is None else seed))


@dataclass
class StepPlan:
    """What ``sample`` does this step, decided on the host before the forward."""

    token: Any  # what the runner planned for (V2: its InputBatch); a sampler call for another skips
    rows: torch.Tensor  # [M] long, device: logits rows (batch order) that mix
    slots: torch.Tensor  # [M] long, device: their slots
    positions: torch.Tensor  # [M] long, device: output index j each row samples
    all_rows: bool  # rows == arange(num_reqs): every request of the batch mixes
    histories: list[MixtureHistory]
    js: np.ndarray  # [M]
    sampling: bool  # some row's prior is the sampler's distribution
    method_step: bool  # some row needs mixing.apply_methods (soft, region, noise)
    forces: bool  # some row may have its sampled token replaced (Cold Stop, SwiReasoning)
    own_k: bool  # some row asks less than the engine's width (cut to each row's K)
    family: frozenset[str]  # the family modes some row runs (SwiReasoning, SeLaR, Multiplex)
    dense_rows: torch.Tensor | None  # [S] long, device: SwiReasoning rows (their p·E)
    multiplex_rows: torch.Tensor | None  # [X] long, device: Multiplex rows (their draws over V)
    dense_js: list[int]  # which of plan's rows those are, on the host
    draws: int  # Multiplex draws beyond the sampled token (the largest K - 1)
    masked_draws: bool  # some Multiplex row samples under top-k / top-p (masks over V)
    vocab_rows: torch.Tensor | None = None  # [E] long, device: Cold Stop's whole-vocabulary rows
    kept_rows: torch.Tensor | None = None  # [Q] long, device: soft's Dirichlet-over-kept rows
    kept_cut: bool = False  # some of them sample under top-k / top-p (masks over V)
    greedy_recipe: bool = False  # some greedy SeLaR row reads the released recipe's distribution
    wide_rows: torch.Tensor | None = None  # [W] long, device: sampler top-k wider than K


class MoIStepState:
    """MoI for one engine: slots, the step plan, sample-then-mix."""

    def __init__(self, embed: MixedInputEmbedding, max_top_k: int):
        self.embed = embed
        self.max_top_k = max_top_k
        self.width = max_top_k + 1
        self.num_slots = embed.slots.shape[0]
        self.device = embed.slots.device
        self.step = MixStep(embed, max_top_k)  # the mixing step, fused on CUDA
        self.table = SlotSettings(self.num_slots, self.device)
        self.staging = HistoryStaging(self.num_slots, self.width, self.device)
        self.holders: list[SlotRequest | None] = [None] * self.num_slots
        self.is_open = np.zeros(self.num_slots, dtype=bool)
        self.latest = np.full(self.num_slots, -1, dtype=np.int64)  # j of the slot's mixture
        self.resumed = np.zeros(self.num_slots, dtype=bool)  # restore its state at its next sample
        self.flags = np.zeros((self.num_slots, _NUM_FLAGS), dtype=bool)
        self.draws = np.zeros(self.num_slots, dtype=np.int64)  # Multiplex's K - 1, per slot
        n = self.num_slots
        # Per turn, host -> device: newest_pos, rows, slots, js, SwiReasoning rows, Multiplex rows
        # (disjoint), Cold Stop's whole-vocabulary rows, soft thinking's Dirichlet rows.
        self._plan_host = HostTurns({"plan": (8 * n, torch.long)}, self.device)
        self._plan_dev = torch.zeros(7 * n, dtype=torch.long, device=self.device)
        self.plain_mask: torch.Tensor | None = None  # [V] bool: the math-symbol tokens
        self.replays = Replays(embed, self.width)  # resumed requests' earlier inputs
        self._newest_dirty = False  # newest_pos on the device may hold positions
        self._plan: StepPlan | None = None
        self._processed: torch.Tensor | None = None  # [M, V] the sampler's logits
        self._capture_rows: torch.Tensor | None = None
        self.observers: list[Callable[[StepRecord], None]] = []
        # Every request this engine runs, parsed once: its SlotRequest, or None (standard).
        self.requests: dict[str, SlotRequest | None] = {}
        self.num_alive = 0  # MoI requests among them: holding a slot, or paused / preempted
        self.disabled: str | None = None  # why this engine cannot mix after all, or None
        self.profiled: dict | None = None  # what the worst-case step added (worst_case.py)
        self.profile_next = False  # the next dummy sampler call is vLLM's memory profile

    # ------------------------------------------------------------------ requests
    def request(self, req_id: str, params: Any) -> SlotRequest | None:
        """The request's MoI state (read from its canonical settings once), or None."""
        if req_id in self.requests:
            return self.requests[req_id]
        config = request_config(req_id, params)
        request = None
        if config is not None and self.disabled is not None:
            logger.error("request %s asks for MoI: %s; decoding it without", req_id, self.disabled)
        elif config is not None and config.mode == "swir" and self.step.dense_weight is None:
            logger.error(
                "request %s asks for SwiReasoning, which needs the plain embedding matrix on one "
                "rank (no tensor parallel, quantization or scaling); decoding it without",
                req_id,
            )
        elif config is not None:
            request = SlotRequest.new(req_id, config, params, self.width)
            self.num_alive += 1
        self.requests[req_id] = request
        return request

    def forget(self, req_ids: Any) -> None:
        """Requests that finished (or were aborted, also while preempted) never come back."""
        for req_id in req_ids:
            self.num_alive -= self.requests.pop(req_id, None) is not None

    def disable(self, reason: str) -> None:
        """This engine cannot mix (found out after the state was built)."""
        self.disabled = reason
        logger.error("mixinputs: MoI is off for this engine: %s", reason)

    def contained(self, where: str, hook: Callable[..., Any], *args: Any) -> None:
        """Run one of the runner adapters' hooks (``where``: what it does, for the log); if it
        raises, MoI goes off (``fail``) instead of the engine. Does nothing once MoI is off."""
        if self.disabled is not None:
            return
        try:
            hook(*args)
        except Exception as e:
            self.fail(where, e)

    def fail(self, where: str, error: BaseException) -> None:
        """Something of ours raised during a step (``where``): MoI goes off for this engine, and
        every request goes on as a standard one from its next input (no position feeds a
        mixture again). The front end learns the reason from ``status`` and refuses new MoI
        requests with it."""
        logger.debug("mixinputs: the MoI step raised while %s", where, exc_info=error)
        self._plan = None
        self._processed = None
        self._capture_rows = None
        if self.disabled is None:
            self.disable(f"the MoI step raised while {where} ({type(error).__name__}: {error})")
        try:
            self.embed.newest_pos.zero_()
            self.replays.clear()
        except Exception:  # nothing more we can do; plan() feeds nothing from now on
            logger.debug("mixinputs: could not clear the MoI positions", exc_info=True)

    def stats(self) -> dict:
        """Counts for logs and tests."""
        alive, used = self.num_alive, self.num_open
        return {
            "requests": len(self.requests),
            "alive": alive,
            "slots_used": used,
            "parked": alive - used,
            "pending": self.staging.num_pending,
            "replayed": self.replays.count,
        }

    # ------------------------------------------------------------------ slots
    def open(self, slot: int, request: SlotRequest, params: Any) -> None:
        """``request`` takes ``slot``: new, or resumed with its history (its carried state is
        restored at its next sample). ``params``: vLLM's SamplingParams (greedy, top-k, top-p)."""
        self.close(slot)
        config = request.config
        settings = row_settings(
            config,
            seed=request.history.seed,
            greedy=params.temperature < 1e-5,
            temperature=params.temperature,
            max_tokens=getattr(params, "max_tokens", None),
        )
        self.table.assign(slot, settings, params.top_k, params.top_p)
        self.holders[slot] = request
        self.is_open[slot] = True
        self.latest[slot] = -1
        self.resumed[slot] = request.next_j > 0
        cut = params.top_k > 0 or params.top_p < 1.0  # the sampler's own top-k / top-p
        self.flags[slot] = (
            settings.sampling,
            config.needs_method_step,
            # It may emit another token than the sampled one.
            config.cold_stop_entropy is not None
            or bool(config.swir_max_switches)  # swir only
            or settings.soft_top1,
            config.top_k < self.max_top_k,
            *(settings.family == FAMILY_CODES[mode] for mode in _FAMILY_FLAGS),  # in column order
            config.mode == "multiplex" and cut,
            config.cold_stop_entropy is not None
            and settings.cold_stop_measure != MEASURE_CODES["candidates"],
            settings.dirichlet_kept,
            settings.dirichlet_kept and cut,
            settings.greedy_recipe,
            settings.sampling and max(int(params.top_k or 0), 0) > self.max_top_k,
        )
        self.draws[slot] = config.multiplex_width - 1 if config.mode == "multiplex" else 0
        if settings.plain_math and self.plain_mask is None:
            self._set_plain_mask(config.plain_ids)

    def close(self, slot: int) -> SlotRequest | None:
        """Free ``slot``; returns the request that held it (None if none did)."""
        request = self.holders[slot]
        if request is not None and self.latest[slot] >= 0:  # it sampled: a reopen resumes it
            request.next_j = int(self.latest[slot]) + 1
        self.holders[slot] = None
        self.is_open[slot] = False
        return request

    def _set_plain_mask(self, ids: tuple[int, ...]) -> None:
        """The engine's math-symbol tokens (every request of a model resolves the same list,
        from the front end's tokenizer); uploaded once, without a host sync."""
        vocab = self.embed.base.weight.shape[0] * getattr(self.embed.base, "tp_size", 1)
        host = torch.zeros(vocab, dtype=torch.bool)
        host[torch.tensor([i for i in ids if i < vocab], dtype=torch.long)] = True
        if self.device.type == "cuda":
            host = host.pin_memory()
        self.plain_mask = host.to(self.device, non_blocking=True)

    def owner(self, slot: int) -> str | None:
        """The request id holding ``slot``."""
        request = self.holders[slot]
        return None if request is None else request.req_id

    @property
    def num_open(self) -> int:
        """Slots held."""
        return int(self.is_open.sum())

    def memory(self) -> dict:
        """What MoI holds on the device for this engine, and on the host per output token."""
        embed = self.embed
        return {
            "device_bytes": embed.extra_bytes() + self.table.nbytes(),
            "hidden": embed.slots.shape[1],
            "dtype": str(embed.slots.dtype).removeprefix("torch."),
            "slot_rows": self.num_slots,
            "replay_rows": embed.replay_rows,
            "replay_in_vllm_buffer": not embed.owns_replay,
            "host_history_bytes_per_token": self.width * 8 + 8 * len(STATE_DTYPES),
            # vLLM's memory profile: the dummy sampler call alone, and what MoI's worst step
            # added to it (worst_case.py); None until vLLM profiled (eager CPU engines with a KV
            # cache in bytes skip it).
            "profiled": self.profiled,
        }

    # ------------------------------------------------------------------ 1. plan the forward
    def plan(
        self,
        rows: np.ndarray,
        slots: np.ndarray,
        computed: np.ndarray,
        scheduled: np.ndarray,
        start: np.ndarray,
        prompt: np.ndarray,
        keep_from: np.ndarray,
        num_reqs: int,
        token: Any = None,
    ) -> None:
        """Plan this step for its MoI rows [R] (open slots only): batch ``rows``, their ``slots``,
        tokens already ``computed`` and ``scheduled`` now, the ``start`` of each in the flattened
        batch, ``prompt`` lengths, and ``keep_from``: a row's sample is kept once
        ``computed + scheduled >= keep_from`` (a partial prefill chunk's sample is dropped)."""
        self._plan = None
        if rows.size == 0:
            self.clear()
            return
        end = computed + scheduled
        # Rows whose sample is kept, and the output index j it will have. A request resumed
        # after a preemption goes on from the state its last sampled token left.
        keep = np.flatnonzero(end >= keep_from)
        m = keep.size
        kept_slots = slots[keep]
        js = end[keep] - prompt[keep]
        holders = [self.holders[s] for s in kept_slots.tolist()]
        for k in np.flatnonzero(self.resumed[kept_slots]).tolist():  # after a preemption only
            self._restore(int(kept_slots[k]), holders[k], int(js[k]))
        self.table.upload()  # the settings of slots opened (or restored) since the last step
        buf = self._plan_host.next()["plan"]
        host = buf.numpy()
        n = self.num_slots
        newest = host[:n]
        newest[:] = 0
        # 1. The position holding the token whose mixture sits in the slot feeds it (0 means
        #    "no row", see embedding.py). In a decode step that is the row's one position.
        fresh_pos = prompt + self.latest[slots]
        fresh = (self.latest[slots] >= 0) & (fresh_pos >= computed) & (fresh_pos < end)
        newest[slots[fresh]] = (start + fresh_pos - computed)[fresh] + 1
        self.embed.newest_pos.copy_(buf[:n], non_blocking=True)
        self._newest_dirty = True
        # 2. The kept rows, their slots and js, and which of them run SwiReasoning, Multiplex,
        #    Cold Stop's entropy and soft thinking's Dirichlet draws (their whole-vocabulary work
        #    runs on those rows only), in the same upload.
        dense_js = np.flatnonzero(self.flags[kept_slots, _SWIR])
        mux_js = np.flatnonzero(self.flags[kept_slots, _MULTIPLEX])  # disjoint from dense_js
        vocab_js = np.flatnonzero(self.flags[kept_slots, _VOCAB])
        dirichlet_js = np.flatnonzero(self.flags[kept_slots, _KEPT])
        wide_js = np.flatnonzero(self.flags[kept_slots, _WIDE])
        d, x, e = dense_js.size, mux_js.size, vocab_js.size
        q, w = dirichlet_js.size, wide_js.size
        parts = [rows[keep], kept_slots, js, dense_js, mux_js, vocab_js, dirichlet_js, wide_js]
        indices = np.concatenate(parts)  # 3m + d + x + e + q + w
        host[n : n + indices.size] = indices
        plan_dev = self._plan_dev[: indices.size]
        if m:
            plan_dev.copy_(buf[n : n + indices.size], non_blocking=True)
        self._plan_host.queued()
        # 3. Every other output position replays its stored mixture (only after a preemption).
        outputs = np.clip(end - np.maximum(computed, prompt), 0, None)
        replaying = np.flatnonzero(outputs > fresh)
        if replaying.size:  # drained first: the history may still have copies on their way
            self.staging.drain(block=True)
        self.replays.write(
            [self.holders[s].history for s in slots[replaying].tolist()],
            *(a[replaying] for a in (computed, end, start, prompt, fresh_pos)),
        )
        if m == 0:
            return
        self.latest[kept_slots] = js
        flags = self.flags[kept_slots].any(axis=0)
        extra = 3 * m + d + x  # where the Cold Stop and Dirichlet rows start
        self._plan = StepPlan(
            token=token,
            rows=plan_dev[:m],
            slots=plan_dev[m : 2 * m],
            positions=plan_dev[2 * m : 3 * m],
            all_rows=m == num_reqs and bool((rows[keep] == np.arange(m)).all()),
            histories=[r.history for r in holders],
            js=js,
            sampling=bool(flags[_SAMPLING]),
            method_step=bool(flags[_METHODS]),
            forces=bool(flags[_FORCES]),
            own_k=bool(flags[_OWN_K]),
            family=frozenset(mode for mode, col in _FAMILY_FLAGS.items() if flags[col]),
            dense_rows=plan_dev[3 * m : 3 * m + d] if d else None,
            multiplex_rows=plan_dev[3 * m + d : extra] if x else None,
            dense_js=dense_js.tolist(),
            draws=int(self.draws[kept_slots].max()),
            masked_draws=bool(flags[_MASKED_DRAWS]),
            vocab_rows=plan_dev[extra : extra + e] if e else None,
            kept_rows=plan_dev[extra + e : extra + e + q] if q else None,
            wide_rows=plan_dev[extra + e + q : extra + e + q + w] if w else None,
            kept_cut=bool(flags[_KEPT_CUT]),
            greedy_recipe=bool(flags[_RECIPE]),
        )

    def clear(self) -> None:
        """No MoI row this step (or a dummy batch): no position may feed a mixture."""
        self._plan = None
        if self._newest_dirty:
            self.embed.newest_pos.zero_()
            self._newest_dirty = False
        self.replays.clear()

    def _restore(self, slot: int, request: SlotRequest, j: int) -> None:
        """A resumed request goes on from the state its last sampled token left."""
        self.resumed[slot] = False
        if j == 0 or not request.config.carries_state:
            return
        if request.history.length < j:
            self.staging.drain(block=True)
        carried = request.history.state_after(j - 1)
        if carried is not None:
            self.table.set_state(slot, carried)

    # ------------------------------------------------------------------ 2. sample and mix
    def sample(
        self,
        run_sampler: Callable[[torch.Tensor], Any],
        logits: torch.Tensor,
        token: Any = None,
        logits_kept: bool = False,
    ) -> Any:
        """``run_sampler(logits)`` -> vLLM's ``SamplerOutput``, then this step's mixtures.

        ``logits`` [num_reqs, V]; ``token``: what the runner planned for (a call for anything
        else, such as a dummy sampler run, just samples); ``logits_kept``: the sampler leaves
        ``logits`` untouched (it edits a float32 copy), so they need no copy when every row mixes.
        """
        plan, self._plan = self._plan, None
        if plan is None or plan.token is not token or self.disabled is not None:
            return run_sampler(logits)
        # 1. The raw (temperature-1) prior of the MoI rows, before the sampler edits the logits.
        try:
            raw = logits if plan.all_rows and logits_kept else logits.index_select(0, plan.rows)
        except Exception as e:  # ours: MoI goes off, the step samples as without the plugin
            self.fail("copying the prior", e)
            return run_sampler(logits)
        # 2. Sample as usual; the sampler's own distribution is recorded for "sampling" rows.
        self._capture_rows = plan.rows if plan.sampling else None
        self._processed = None
        try:
            output = run_sampler(logits)  # vLLM's: whatever it raises is vLLM's
        finally:
            self._capture_rows = None
        try:
            self._mix(plan, raw, output)
        except Exception as e:
            self.fail("mixing", e)
        return output

    def record_processed(self, logits: torch.Tensor) -> None:
        """Called by the sampler with the logits it samples from (after temperature and min-p,
        before top-k / top-p)."""
        if self._capture_rows is not None:
            self._processed = logits.index_select(0, self._capture_rows)

    def _mix(self, plan: StepPlan, raw: torch.Tensor, output: Any) -> None:
        slots = plan.slots
        # 3. The sampled tokens, each row's settings from its slot, and its prior: the raw
        #    logits, or for "sampling" rows (soft thinking among them) what the sampler drew
        #    from, cut to the sampler's top-k / top-p.
        sampled = output.sampled_token_ids[:, 0].index_select(0, plan.rows).long()  # [M]
        rows = self.table.gather(slots, plan.positions)
        prior, masks = raw, None
        if plan.sampling and self._processed is not None:
            prior = torch.where(rows.sampling[:, None], self._processed.to(raw.dtype), raw)
        if plan.greedy_recipe:  # greedy SeLaR rows read the released recipe's distribution
            recipe = (raw.float() / rows.methods.temperature[:, None]).to(raw.dtype)
            prior = torch.where(rows.greedy_recipe[:, None], recipe, prior)
        if plan.sampling:
            wide = None
            if plan.wide_rows is not None:  # top-p after a top-k wider than the candidates
                at = plan.wide_rows
                norm = top_k_normalizer(prior.index_select(0, at), rows.sampler_top_k[at])
                wide = torch.full_like(rows.sampler_top_p, float("nan")).index_copy(0, at, norm)
            masks = SamplerMasks(rows.sampling, rows.sampler_top_k, rows.sampler_top_p, wide)
        self._processed = None
        rows, kept = self._vocabulary_work(plan, rows, raw, prior)
        # 4. Candidates top-K ∪ {y} at the engine's one width, each row cut to its own K (a
        #    row's mixture never depends on the rest of the batch), the methods, the weights,
        #    and the mixture written into each request's slot for the next forward.
        family = None
        if plan.family:  # SwiReasoning, SeLaR, Multiplex read the whole distribution
            full, at = prior, plan.multiplex_rows
            if plan.masked_draws:  # Multiplex draws from what the sampler's top-k / top-p keep
                top_k, top_p = rows.sampler_top_k[at], rows.sampler_top_p[at]
                full = prior.index_copy(0, at, mask_top_k_top_p(prior[at], top_k, top_p))
            family = FamilyInputs(
                full, self.plain_mask, plan.draws, plan.family, plan.dense_rows, at
            )
        ids, weights, step = self.step.mix_into_slots(
            prior,
            sampled,
            rows.row_top_k if plan.own_k else None,
            masks,
            rows.methods.beta,
            rows.methods.direct,
            slots,
            (rows.methods, rows.state) if plan.method_step else None,
            family,
            plan.dense_rows,
            kept,
        )
        # 5. The state each row carries to its next step; the tokens emitted in place of the
        #    sampled ones (soft thinking's top-1, Cold Stop, SwiReasoning); the final weights to
        #    the host history, and SwiReasoning's inputs themselves (they hold p·E).
        if step is not None:
            self.table.store_state(slots, step.state)
            if plan.forces:
                force_tokens(output, plan.rows, step, raw)
        packed = state_pack(step.state) if step is not None else None
        fed = None
        if plan.dense_rows is not None:
            fed = (self.embed.slots.index_select(0, slots.index_select(0, plan.dense_rows)),
                   plan.dense_js)  # fmt: skip
        self.staging.stage(ids, weights, packed, plan.histories, plan.js, fed)
        if self.observers:
            owners = [self.owner(s) for s in slots.tolist()]
            record = StepRecord.of(
                owners, plan.js, prior, sampled, rows, step, self.embed, slots, family
            )
            for observer in self.observers:
                observer(record)

    def _vocabulary_work(self, plan: StepPlan, rows, raw: torch.Tensor, prior: torch.Tensor):
        """Cold Stop's whole-vocabulary entropy (into ``rows.methods.vocab_entropy``) and soft
        thinking's Dirichlet draws over every kept token, each on its own rows only.

        ``raw`` [M, V] the raw logits, ``prior`` [M, V] what each row samples from before the
        sampler's top-k / top-p. Returns (rows, ``KeptDraws`` or None)."""
        methods, kept = rows.methods, None
        if plan.vocab_rows is not None:  # softmax(raw / T) over V: one pass per such row
            at = plan.vocab_rows
            normalized = methods.cold_stop_measure == MEASURE_CODES["vocab_normalized"]
            h = vocab_entropy(
                raw.index_select(0, at),
                methods.temperature.index_select(0, at),
                normalized.index_select(0, at),
            )
            methods = methods._replace(vocab_entropy=methods.vocab_entropy.index_copy(0, at, h))
        if plan.kept_rows is not None:  # the tokens each row's sampler keeps, then the draws
            at = plan.kept_rows
            logits = prior.index_select(0, at)
            if plan.kept_cut:
                top_k, top_p = rows.sampler_top_k[at], rows.sampler_top_p[at]
                cut = ((top_k > 0) | (top_p < 1.0))[:, None]  # others keep every token as is
                logits = torch.where(cut, mask_top_k_top_p(logits, top_k, top_p), logits)
            draws = kept_dirichlet(logits, rows_at(methods, at), self.max_top_k)
            kept = KeptDraws(draws.ids, draws.scores, at)
        return rows._replace(methods=methods), kept
