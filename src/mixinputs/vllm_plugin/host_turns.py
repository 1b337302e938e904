"""Host buffers for host -> device uploads that never make the host wait on the GPU.

A copy from pageable memory synchronises the host with the stream; a copy from pinned memory
with ``non_blocking=True`` is queued on the stream like a kernel. The host may then not rewrite
that pinned buffer until the copy has run. With async scheduling vLLM prepares step N+1 while
step N runs, and waits for step N's sampled tokens before it prepares step N+2, so two turns of
buffers are enough: the host fills turn ``N % 2`` for step N. Each turn also records an event
after its copies, checked before the turn is filled again; it is complete by then, so the check
never waits in practice (it would, rather than corrupt a queued copy, if that ever changed).

CPU engines use plain tensors (host and device are the same memory; nothing is queued).

>>> turns = HostTurns({"ids": (4, torch.int64)}, torch.device("cpu"))
>>> buffers = turns.next(); buffers["ids"][:2] = torch.tensor([7, 9]); turns.queued()
>>> buffers["ids"][:2].tolist()
[7, 9]
"""

from __future__ import annotations

import torch

TURNS = 2


class HostTurns:
    """``TURNS`` sets of host buffers, each a dict of name -> tensor of a fixed shape and dtype."""

    def __init__(self, shapes: dict[str, tuple[int, torch.dtype]], device: torch.device):
        self.pinned = device.type == "cuda"
        self._buffers = [
            {name: self._zeros(size, dtype) for name, (size, dtype) in shapes.items()}
            for _ in range(TURNS)
        ]
        self._events: list[torch.cuda.Event | None] = [None] * TURNS
        self._turn = TURNS - 1

    def _zeros(self, size: int, dtype: torch.dtype) -> torch.Tensor:
        t = torch.zeros(size, dtype=dtype)
        return t.pin_memory() if self.pinned else t

    @property
    def turn(self) -> int:
        """The turn ``next`` handed out last."""
        return self._turn

    def next(self) -> dict[str, torch.Tensor]:
        """The next turn's buffers, once every copy queued from them before has run."""
        self._turn = (self._turn + 1) % TURNS
        event = self._events[self._turn]
        if event is not None and not event.query():
            event.synchronize()  # not reached with vLLM's one step in flight (see above)
        return self._buffers[self._turn]

    def queued(self) -> None:
        """The copies from this turn's buffers are queued on the current stream."""
        if self.pinned:
            event = self._events[self._turn] or torch.cuda.Event()
            event.record()
            self._events[self._turn] = event
