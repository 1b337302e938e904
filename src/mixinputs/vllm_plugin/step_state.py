"""One engine's MoI state and the two things it does every step, for both vLLM model runners.

Each runner's adapter (``v1_state.py`` for V1, ``v2_state.py`` for Model Runner V2) only turns
its own batch into arrays and tells this state which request holds which *slot*: one row per
running MoI request in ``MixedInputEmbedding.slots`` and in ``SlotSettings``.

The step, one numbered recipe (the same numbers mark the code):

1. **Plan** (``plan``, host only, after the runner prepared its inputs; vectorised numpy over the
   MoI rows): 1a. which position of the flattened batch each slot's newest mixture overwrites
   (``newest_pos``); 1b. which rows mix after sampling, their slots and output indices, and the
   rows of each piece of optional work, in one packed pinned upload; 1c. which positions replay
   a stored mixture: any output position that is not a slot's newest (a request resumed after
   preemption recomputes its earlier output tokens) is replayed from the host history, so a
   resumed request sees exactly the inputs it saw the first time.
2. **Keep the prior** (``sample``, device, around the runner's sampler): the MoI rows' raw
   (temperature-1) logits, before the sampler edits them.
3. **Sample** as usual (the sampler's own distribution is recorded for "sampling" rows).
4. **Gather**: the rows' settings from their slots, their prior (raw, or what the sampler drew
   from, cut to its top-k / top-p), and the optional whole-vocabulary work on the rows that need
   it (``core.rows.WORK``: Cold Stop's entropy, Dirichlet draws over every kept token).
5. **Mix** (``mix_step.MixStep``, 5a-5c): candidates, the methods' stages, weights, and the
   mixtures written into the slots, each row once.
6. **Carry**: the state each row carries back into its slot's settings row, the tokens a method
   emits in place of the sampled ones into the sampler's output, the final weights to the host
   history.

No host sync: the host only learns which rows mix and where, which it knows before the step.

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
from mixinputs.core.candidates import mask_top_k_top_p, top_k_normalizer
from mixinputs.core.rows import STATE_DTYPES, WORK, row_settings
from mixinputs.core.select import rows_at
from mixinputs.core.step import MethodInputs
from mixinputs.methods import (
    FAMILY,
    MODES,
    KeptDraws,
    draw_kept,
    math_mask,
    measure_entropy,
    work_of,
)
from mixinputs.vllm_plugin.embedding import MixedInputEmbedding
from mixinputs.vllm_plugin.history import HistoryStaging, MixtureHistory, new_seed
from mixinputs.vllm_plugin.host_turns import HostTurns
from mixinputs.vllm_plugin.mix_step import (
    MixStep,
    SamplerMasks,
    StepInputs,
    StepRecord,
    force_tokens,
)
from mixinputs.vllm_plugin.replay import Replays
from mixinputs.vllm_plugin.request_config import request_config
from mixinputs.vllm_plugin.slot_settings import SlotSettings, state_pack

logger = logging.getLogger("vllm.mixinputs")

# Per-slot host flags: which work a batch holding the slot needs. The core's own: its prior is
# the sampler's, it needs the methods' stages, it asks less than the engine's K, it is greedy yet
# reads its mode's recipe, its sampler's top-k is wider than the engine's K; then the methods'
# optional work (``core.rows.WORK``).
FLAGS = ("sampling", "methods", "own_k", "recipe", "wide", *WORK)
_F = {name: column for column, name in enumerate(FLAGS)}
# Family methods whose whole-vocabulary work runs on their own rows (their indices travel in the
# plan's upload), and the one whose input holds p·E.
_OWN = tuple(m for m in FAMILY if m.own_rows)
_DENSE = tuple(m for m in _OWN if m.dense)
assert len(_DENSE) <= 1, "the engine adds p·E for one method's rows"


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
    method_step: bool  # some row needs the methods' stages (core.step.apply_methods)
    forces: bool  # some row may emit another token than the sampled one
    own_k: bool  # some row asks less than the engine's width (cut to each row's K)
    family: frozenset[str]  # the family modes some row runs (their input replaces the core's)
    family_rows: torch.Tensor | None  # [F] long, device: the rows of those modes
    own_rows: dict[str, torch.Tensor]  # mode -> [S] long, device: its rows (its work over V)
    dense_rows: torch.Tensor | None  # [S] long, device: the rows whose input holds p·E
    dense_at: torch.Tensor | None  # [S] long, device: where those are among family_rows
    dense_js: list[int]  # which of plan's rows the p·E rows are, on the host
    draws: int  # draws beyond the sampled token (the largest of the rows' K - 1)
    masked_prior: bool  # some row draws from its sampler's top-k / top-p cut (masks over V)
    vocab_rows: torch.Tensor | None = None  # [E] long, device: Cold Stop's whole-vocabulary rows
    kept_rows: torch.Tensor | None = None  # [Q] long, device: Dirichlet-over-kept rows
    kept_cut: bool = False  # some of them sample under top-k / top-p (masks over V)
    greedy_recipe: bool = False  # some greedy row reads its mode's recipe distribution
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
        self.flags = np.zeros((self.num_slots, len(FLAGS)), dtype=bool)
        self.family = np.zeros(self.num_slots, dtype=np.int64)  # the mode's family_code
        self.draws = np.zeros(self.num_slots, dtype=np.int64)  # draws beyond y, per slot
        n = self.num_slots
        # Per turn, host -> device: newest_pos, then rows, slots, js, the own rows of each family
        # method (disjoint), Cold Stop's whole-vocabulary rows, the Dirichlet rows, the wide
        # rows, the family rows and where the p·E rows sit among them: at most 9 per row.
        self._plan_host = HostTurns({"plan": (10 * n, torch.long)}, self.device)
        self._plan_dev = torch.zeros(9 * n, dtype=torch.long, device=self.device)
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
        elif config is not None and config.method.dense and self.step.dense_weight is None:
            logger.error(
                "request %s asks for %s, which needs the plain embedding matrix on one rank (no "
                "tensor parallel, quantization or scaling); decoding it without",
                req_id,
                config.method.title,
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
        top_k, top_p = params.top_k, params.top_p
        if settings.greedy_recipe:  # vLLM resets a greedy request's own: the recipe's cut
            top_k, top_p = config.method.greedy_recipe(config)[1:]
        self.table.assign(slot, settings, top_k, top_p)
        self.holders[slot] = request
        self.is_open[slot] = True
        self.latest[slot] = -1
        self.resumed[slot] = request.next_j > 0
        cut = params.top_k > 0 or params.top_p < 1.0  # the sampler's own top-k / top-p
        work = work_of(config, settings, cut)
        self.flags[slot] = (
            settings.sampling,
            config.needs_method_step,
            config.top_k < self.max_top_k,
            settings.greedy_recipe,
            settings.sampling and max(int(params.top_k or 0), 0) > self.max_top_k,
            *(name in work for name in WORK),
        )
        self.family[slot] = settings.family
        self.draws[slot] = sum(m.draws(config) for m in MODES)
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
        self.plain_mask = math_mask(ids, vocab, self.device)

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
        # 1a. The position holding the token whose mixture sits in the slot feeds it (0 means
        #    "no row", see embedding.py). In a decode step that is the row's one position.
        fresh_pos = prompt + self.latest[slots]
        fresh = (self.latest[slots] >= 0) & (fresh_pos >= computed) & (fresh_pos < end)
        newest[slots[fresh]] = (start + fresh_pos - computed)[fresh] + 1
        self.embed.newest_pos.copy_(buf[:n], non_blocking=True)
        self._newest_dirty = True
        # 1b. The kept rows, their slots and js, and the rows of each piece of work that runs on
        #    its rows only (a family method's over the vocabulary, Cold Stop's entropy, the
        #    Dirichlet draws, a wide top-k), in the same upload.
        flags, family = self.flags[kept_slots], self.family[kept_slots]
        own_js = [np.flatnonzero(family == m.family_code) for m in _OWN]  # disjoint
        family_js = np.flatnonzero(family > 0)
        dense_js = own_js[_OWN.index(_DENSE[0])] if _DENSE else family_js[:0]
        parts = {
            "rows": rows[keep],
            "slots": kept_slots,
            "js": js,
            **{m.name: rows_js for m, rows_js in zip(_OWN, own_js, strict=True)},
            "vocab": np.flatnonzero(flags[:, _F["vocab_entropy"]]),
            "kept": np.flatnonzero(flags[:, _F["kept_draws"]]),
            "wide": np.flatnonzero(flags[:, _F["wide"]]),
            "family": family_js,
            "dense_at": np.searchsorted(family_js, dense_js),
        }
        indices = np.concatenate(list(parts.values()))
        host[n : n + indices.size] = indices
        plan_dev = self._plan_dev[: indices.size]
        if m:
            plan_dev.copy_(buf[n : n + indices.size], non_blocking=True)
        self._plan_host.queued()
        # 1c. Every other output position replays its stored mixture (only after a preemption).
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
        on = flags.any(axis=0)
        device: dict[str, torch.Tensor | None] = {}
        start = 0
        for name, part in parts.items():  # each part's slice of the one upload (None: empty)
            device[name] = plan_dev[start : start + part.size] if part.size else None
            start += part.size
        own = {m.name: device[m.name] for m in _OWN if device[m.name] is not None}
        self._plan = StepPlan(
            token=token,
            rows=device["rows"],
            slots=device["slots"],
            positions=device["js"],
            all_rows=m == num_reqs and bool((rows[keep] == np.arange(m)).all()),
            histories=[r.history for r in holders],
            js=js,
            sampling=bool(on[_F["sampling"]]),
            method_step=bool(on[_F["methods"]]),
            forces=bool(on[_F["forces"]]),
            own_k=bool(on[_F["own_k"]]),
            family=frozenset(m.name for m in FAMILY if (family == m.family_code).any()),
            family_rows=device["family"],
            own_rows=own,
            dense_rows=device[_DENSE[0].name] if _DENSE else None,
            dense_at=device["dense_at"],
            dense_js=dense_js.tolist(),
            draws=int(self.draws[kept_slots].max()),
            masked_prior=bool(on[_F["masked_prior"]]),
            vocab_rows=device["vocab"],
            kept_rows=device["kept"],
            wide_rows=device["wide"],
            kept_cut=bool(on[_F["kept_cut"]]),
            greedy_recipe=bool(on[_F["recipe"]]),
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

    # ------------------------------------------------------------------ 2.-6. sample, mix, carry
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
        # 2. The raw (temperature-1) prior of the MoI rows, before the sampler edits the logits.
        try:
            raw = logits if plan.all_rows and logits_kept else logits.index_select(0, plan.rows)
        except Exception as e:  # ours: MoI goes off, the step samples as without the plugin
            self.fail("copying the prior", e)
            return run_sampler(logits)
        # 3. Sample as usual; the sampler's own distribution is recorded for "sampling" rows.
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
        # 4. The sampled tokens, each row's settings from its slot, and its prior: the raw
        #    logits, or for "sampling" rows (soft thinking among them) what the sampler drew
        #    from, cut to the sampler's top-k / top-p; the optional whole-vocabulary work.
        sampled = output.sampled_token_ids[:, 0].index_select(0, plan.rows).long()  # [M]
        rows = self.table.gather(slots, plan.positions)
        prior, masks = raw, None
        if plan.sampling and self._processed is not None:
            prior = torch.where(rows.sampling[:, None], self._processed.to(raw.dtype), raw)
        if plan.greedy_recipe:  # greedy rows reading their mode's recipe distribution
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
        inputs = None
        if plan.family or kept is not None:  # the family methods read the whole distribution
            full = prior
            if plan.masked_prior:  # draws from what the sampler's top-k / top-p keep
                for m in _OWN:
                    at = plan.own_rows.get(m.name) if m.masks_prior else None
                    if at is not None:
                        top_k, top_p = rows.sampler_top_k[at], rows.sampler_top_p[at]
                        full = full.index_copy(0, at, mask_top_k_top_p(full[at], top_k, top_p))
            inputs = MethodInputs(
                full if plan.family else None,
                self.plain_mask,
                plan.draws,
                plan.family,
                plan.own_rows,
                kept,
            )
        # 5. Mix: candidates top-K ∪ {y} at the engine's one width, each row cut to its own K (a
        #    row's mixture never depends on the rest of the batch), the methods' stages, the
        #    weights, and the mixture written into each request's slot for the next forward.
        ids, weights, step = self.step.mix_into_slots(
            StepInputs(
                prior=prior,
                sampled=sampled,
                slots=slots,
                rows=rows,
                own_k=plan.own_k,
                masks=masks,
                method_step=plan.method_step,
                inputs=inputs,
                family_rows=plan.family_rows if plan.family else None,
                dense_rows=plan.dense_rows,
                dense_at=plan.dense_at,
            )
        )
        # 6. Carry: the state each row carries to its next step; the tokens emitted in place of
        #    the sampled ones; the final weights to the host history, and the inputs of the p·E
        #    rows themselves (their weights alone do not hold p·E).
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
                owners, plan.js, prior, sampled, rows, step, self.embed, slots, inputs
            )
            for observer in self.observers:
                observer(record)

    def _vocabulary_work(self, plan: StepPlan, rows, raw: torch.Tensor, prior: torch.Tensor):
        """The optional whole-vocabulary work, each on its own rows only: Cold Stop's entropy
        (into ``rows.methods.vocab_entropy``) and the Dirichlet draws over every kept token.

        ``raw`` [M, V] the raw logits, ``prior`` [M, V] what each row samples from before the
        sampler's top-k / top-p. Returns (rows, ``KeptDraws`` or None)."""
        methods, kept = rows.methods, None
        if plan.vocab_rows is not None:  # softmax(raw / T) over V: one pass per such row
            at = plan.vocab_rows
            h = measure_entropy(methods, raw, at)
            methods = methods._replace(vocab_entropy=methods.vocab_entropy.index_copy(0, at, h))
        if plan.kept_rows is not None:  # the tokens each row's sampler keeps, then the draws
            at = plan.kept_rows
            logits = prior.index_select(0, at)
            if plan.kept_cut:
                top_k, top_p = rows.sampler_top_k[at], rows.sampler_top_p[at]
                cut = ((top_k > 0) | (top_p < 1.0))[:, None]  # others keep every token as is
                logits = torch.where(cut, mask_top_k_top_p(logits, top_k, top_p), logits)
            draws = draw_kept(logits, rows_at(methods, at), self.max_top_k)
            kept = KeptDraws(draws.ids, draws.scores, at)
        return rows._replace(methods=methods), kept
