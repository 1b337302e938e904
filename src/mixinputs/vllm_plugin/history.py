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

_RING = 4  # pinned staging buffers in flight before the oldest is waited for


def new_seed() -> int:
    """A noise seed for a request that did not set one (reproducible only when it did)."""
    return secrets.randbits(62)


class MixtureHistory:
    """One MoI request's candidates, weights and carried state per output token, on the host.

    >>> h = MixtureHistory(width=3, seed=5)
    >>> h.record(1, np.array([4, 5, 6]), np.array([0.5, 0.5, 0.0]), np.array([1, 2]))
    >>> h.length, h.ids[1].tolist(), h.state_after(1)
    (2, [4, 5, 6], (True, 2))
    """

    def __init__(self, width: int, seed: int):
        self.width = width
        self.seed = seed  # the request's noise seed: a resumed request keeps drawing the same
        self.ids = np.zeros((0, width), np.int32)
        self.w = np.zeros((0, width), np.float32)
        self.state = np.zeros((0, 2), np.int32)  # (thinking, low-entropy steps) after token j
        self.length = 0  # output tokens [0, length) may have a record; unset rows weigh 0

    def record(
        self, j: int, ids: np.ndarray, w: np.ndarray, state: np.ndarray | None = None
    ) -> None:
        """Output token ``j``'s candidates, weights and the state after it (default: still
        thinking, no low-entropy steps)."""
        if j >= self.ids.shape[0]:
            grow = max(16, self.ids.shape[0], j + 1 - self.ids.shape[0])
            self.ids = np.concatenate([self.ids, np.zeros((grow, self.width), np.int32)])
            self.w = np.concatenate([self.w, np.zeros((grow, self.width), np.float32)])
            self.state = np.concatenate([self.state, np.zeros((grow, 2), np.int32)])
        self.ids[j] = ids
        self.w[j] = w
        self.state[j] = (1, 0) if state is None else state
        self.length = max(self.length, j + 1)

    def state_after(self, j: int) -> tuple[bool, int] | None:
        """(thinking, low-entropy steps) after output token ``j``, or None if not recorded."""
        if j >= self.length:
            return None
        thinking, low = self.state[j]
        return bool(thinking), int(low)


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
                    torch.zeros((num_rows, 2), dtype=torch.int32).pin_memory(),
                )
                for _ in range(_RING)
            ]
            if self.pin
            else []
        )
        self._next = 0

    def stage(
        self,
        ids: torch.Tensor,
        weights: torch.Tensor,
        state: torch.Tensor | None,
        histories: Sequence[MixtureHistory],
        js: Sequence[int] | np.ndarray,
    ) -> None:
        """Queue row m's ``ids`` [M, W], ``weights`` [M, W] and ``state`` [M, 2] (or None: still
        thinking, no low-entropy steps) as output token ``js[m]`` of ``histories[m]``."""
        m, width = ids.shape
        if not self.pin:  # CPU: the tensors are already on the host
            self._pending.append(
                (
                    None,
                    ids.to(torch.int32).numpy(),
                    weights.float().numpy(),
                    None if state is None else state.to(torch.int32).numpy(),
                    histories,
                    js,
                )
            )
            self.drain(block=False)
            return
        if len(self._pending) >= len(self._ring):
            self.drain(block=True, limit=1)
        host_ids, host_w, host_state = self._ring[self._next]
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
            )
        )
        self.drain(block=False)

    def drain(self, block: bool, limit: int | None = None) -> None:
        """Record every completed copy (``block``: wait for the pending ones too)."""
        done = 0
        while self._pending and (limit is None or done < limit):
            event, ids, w, state, histories, js = self._pending[0]
            if event is not None:
                if not block and not event.query():
                    break
                event.synchronize()
            self._pending.popleft()
            done += 1
            for m, (history, j) in enumerate(zip(histories, np.asarray(js).tolist(), strict=True)):
                history.record(j, ids[m], w[m], None if state is None else state[m])
