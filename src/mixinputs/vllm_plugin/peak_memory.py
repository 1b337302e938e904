"""The peak of the memory that tensors allocated inside a block hold, on any device.

``torch.cuda.max_memory_allocated`` exists on CUDA only; the profiling of MoI's worst-case step
(``worst_case.py``) and its tests need the same answer on a CPU. ``PeakBytes`` watches every
operator call in the block (a ``TorchDispatchMode``) and counts the storages the calls create:
an output whose storage is new adds its bytes until the last tensor viewing it is freed.
Storages that existed before the block (inputs, in-place results, views of inputs) never count.
What a kernel allocates and frees internally (workspaces) is not seen.

>>> import torch
>>> with PeakBytes() as peak:
...     a = torch.zeros(1024)        # 4 KiB
...     b = a * 2                    # 4 KiB more
...     del a, b
...     c = torch.ones(256)          # 1 KiB, after both were freed
>>> peak.peak, peak.live
(8192, 1024)
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class PeakBytes(TorchDispatchMode):
    """``live``: bytes held now by storages made inside the block; ``peak``: their maximum."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._refs: dict[int, list[int]] = {}  # storage address -> [tensors alive, bytes]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        existing = {_address(t) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                self._track(tensor, existing)
        return out

    def _track(self, tensor: torch.Tensor, existing: set[int]) -> None:
        address = _address(tensor)
        if address == 0:
            return
        ref = self._refs.get(address)
        if ref is None:
            if address in existing:  # an input's storage (in place, or a view of it)
                return
            ref = self._refs[address] = [0, tensor.untyped_storage().nbytes()]
            self.live += ref[1]
            self.peak = max(self.peak, self.live)
        ref[0] += 1
        weakref.finalize(tensor, self._release, address)

    def _release(self, address: int) -> None:
        ref = self._refs.get(address)
        if ref is None:
            return
        ref[0] -= 1
        if ref[0] == 0:
            self.live -= ref[1]
            del self._refs[address]


def _address(tensor: Any) -> int:
    try:
        return tensor.untyped_storage().data_ptr()
    except Exception:  # tensors without storage (meta, some subclasses)
        return 0
