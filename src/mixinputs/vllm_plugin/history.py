"""What a MoI request fed after each of its output tokens, kept on the host for replays.

Both model runners share this. After a preemption vLLM recomputes a request's earlier output
tokens; their inputs must be the mixtures fed the first time, not plain embeddings, or a resumed
request would drift from an uninterrupted one. So each step's candidate ids and final weights
(noise and all) go from the device to the host, and with them the row's carried state (still in
its thinking region, low-entropy steps), which a request that gets a new slot starts from.

``HistoryStaging`` moves them without a host sync: device -> pinned host buffers in a ring, each
read only once its CUDA event completed (CPU engines copy directly).
"""

from __future__ import annotations

import collections
import secrets
from collections.abc import Sequence

import numpy as np
import torch

from mixinputs.core.rows import STATE_DTYPES, fresh_values

_STATE = len(STATE_DTYPES)  # carried-state values recorded per output token
_FRESH = np.array(fresh_values(), np.float64)
_RING = 4  # pinned staging buffers in flight before the oldest is waited for


def new_seed() -> int:
    """A noise seed for a request that did not set one (reproducible only when it did)."""
    return secrets.randbits(62)


class MixtureHistory:
    """One MoI request's candidates, weights and carried state per output token, on the host.

    >>> h = MixtureHistory(width=3, seed=5)
    >>> h.record(1, np.array([4, 5, 6]), np.array([0.5, 0.5, 0.0]))
    >>> h.length, h.ids[1].tolist(), h.state_after(1)[:2]
    (2, [4, 5, 6], (True, 0))
    """

    def __init__(self, width: int, seed: int):
        self.width = width
        self.seed = seed  # the request's noise seed: a resumed request keeps drawing the same
        self.ids = np.zeros((0, width), np.int32)
        self.w = np.zeros((0, width), np.float32)
        self.state = np.zeros((0, _STATE), np.float64)  # the carried state after token j
        self.length = 0  # output tokens [0, length) may have a record; unset rows weigh 0
        # SwiReasoning's inputs hold p·E over the whole vocabulary, which (ids, weights) cannot
        # replay: the input itself is kept, float32 [D] per output token that had one.
        self.fed: dict[int, np.ndarray] = {}

    def record(
        self, j: int, ids: np.ndarray, w: np.ndarray, state: np.ndarray | None = None
    ) -> None:
        """Output token ``j``'s candidates, weights and the carried state after it (default:
        a fresh state)."""
        if j >= self.ids.shape[0]:
            grow = max(16, self.ids.shape[0], j + 1 - self.ids.shape[0])
            self.ids = np.concatenate([self.ids, np.zeros((grow, self.width), np.int32)])
            self.w = np.concatenate([self.w, np.zeros((grow, self.width), np.float32)])
            self.state = np.concatenate([self.state, np.zeros((grow, _STATE), np.float64)])
        self.ids[j] = ids
        self.w[j] = w
        self.state[j] = _FRESH if state is None else state
        self.length = max(self.length, j + 1)

    def state_after(self, j: int) -> tuple | None:
        """The carried state (``CarriedState`` values) after output token ``j``, or None if not
        recorded."""
        if j >= self.length:
            return None
        return tuple(
            bool(v) if d == torch.bool else float(v) if d.is_floating_point else int(v)
            for v, d in zip(self.state[j].tolist(), STATE_DTYPES.values(), strict=True)
        )


class HistoryStaging:
    """Device -> host copies of each step's (ids, weights, state), drained without waiting."""

    def __init__(self, num_rows: int, width: int, device: torch.device):
        self.width = width
        self.pin = device.type == "cuda"
        self._pending: collections.deque = collections.deque()
        self._ring = (
            [
                (
                    torch.zeros((num_rows, width), dtype=torch.int32).pin_memory(),
                    torch.zeros((num_rows, width), dtype=torch.float32).pin_memory(),
                    torch.zeros((num_rows, _STATE), dtype=torch.float64).pin_memory(),
                )
                for _ in range(_RING)
            ]
            if self.pin
            else []
        )
        self._next = 0
        self._num_rows = num_rows
        self._fed: list[torch.Tensor | None] = [None] * _RING

    def stage(
        self,
        ids: torch.Tensor,
        weights: torch.Tensor,
        state: torch.Tensor | None,
        histories: Sequence[MixtureHistory],
        js: Sequence[int] | np.ndarray,
        fed: tuple[torch.Tensor, list[int]] | None = None,
    ) -> None:
        """Queue row m's ``ids`` [M, W], ``weights`` [M, W] and carried ``state`` [M, S] float64
        (or None: a fresh state) as output token ``js[m]`` of ``histories[m]``; ``fed``: the
        inputs [S, D] of rows ``fed[1]`` themselves (SwiReasoning's)."""
        m, width = ids.shape
        fed_rows = [] if fed is None else fed[1]
        if not self.pin:  # CPU: the tensors are already on the host
            self._pending.append(
                (
                    None,
                    ids.to(torch.int32).numpy(),
                    weights.float().numpy(),
                    None if state is None else state.numpy(),
                    histories,
                    js,
                    None if fed is None else fed[0].float().numpy(),
                    fed_rows,
                )
            )
            self.drain(block=False)
            return
        if len(self._pending) >= len(self._ring):
            self.drain(block=True, limit=1)
        host_ids, host_w, host_state = self._ring[self._next]
        host_fed = None
        if fed is not None:
            host_fed = self._fed_buffer(self._next, fed[0].shape[1])[: fed[0].shape[0]]
            host_fed.copy_(fed[0], non_blocking=True)
        self._next = (self._next + 1) % len(self._ring)
        host_ids[:m, :width].copy_(ids, non_blocking=True)
        host_w[:m, :width].copy_(weights, non_blocking=True)
        if state is not None:
            host_state[:m].copy_(state, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._pending.append(
            (
                event,
                host_ids[:m, :width].numpy(),
                host_w[:m, :width].numpy(),
                None if state is None else host_state[:m].numpy(),
                histories,
                js,
                None if host_fed is None else host_fed.numpy(),
                fed_rows,
            )
        )
        self.drain(block=False)

    def _fed_buffer(self, turn: int, hidden: int) -> torch.Tensor:
        """Pinned [num_rows, D] float32 for ring entry ``turn`` (made when first needed)."""
        buffer = self._fed[turn]
        if buffer is None or buffer.shape[1] != hidden:
            buffer = torch.zeros((self._num_rows, hidden), dtype=torch.float32).pin_memory()
            self._fed[turn] = buffer
        return buffer

    @property
    def num_pending(self) -> int:
        """Steps staged and not yet recorded."""
        return len(self._pending)

    def drain(self, block: bool, limit: int | None = None) -> None:
        """Record every completed copy (``block``: wait for the pending ones too)."""
        done = 0
        while self._pending and (limit is None or done < limit):
            event, ids, w, state, histories, js, fed, fed_rows = self._pending[0]
            if event is not None and not event.query():  # query: never a host sync
                if not block:
                    break
                event.synchronize()
            self._pending.popleft()
            done += 1
            js = np.asarray(js).tolist()
            for m, (history, j) in enumerate(zip(histories, js, strict=True)):
                history.record(j, ids[m], w[m], None if state is None else state[m])
            for row, m in enumerate(fed_rows):
                histories[m].fed[js[m]] = fed[row].copy()
