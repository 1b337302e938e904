"""Each running MoI request's settings and carried state, on the device, one row per slot.

Both model runners keep a running MoI request in a slot (V2: vLLM's own request slot; V1: a row
the worker assigns). A request's settings (``core.rows.row_settings``) are written once, when it
takes its slot; each step then gathers its rows by slot with two ``index_select`` calls, however
many methods the batch mixes, and writes the state it carries to the next step (thinking,
low-entropy steps) back in place.

Writes never make the host wait: a row goes into a host mirror, and every dirty row is uploaded
at the next ``upload`` (once per step, before the step reads the table) from pinned memory with
``non_blocking`` copies, ordered on the stream after the steps that still read the old values.

Table layout: ``floats`` [num_slots, F] float32 and ``ints`` [num_slots, I] int64, one column per
field of ``RowSettings``, the sampler's top-k / top-p, and ``CarriedState`` (``COLUMNS``; each
method's columns come from its module, ``mixinputs.methods``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from mixinputs.core.rows import (
    ROW_DTYPES,
    ROW_WIDTHS,
    STATE_DTYPES,
    STEP_COLUMNS,
    CarriedState,
    MethodRows,
    RowSettings,
    fresh_values,
)
from mixinputs.vllm_plugin.host_turns import HostTurns

# Every column and its dtype: the method's settings, the sampler's own cut (the "sampling" prior
# follows it), and the state a row carries from step to step.
COLUMNS = {
    **ROW_DTYPES,
    "sampler_top_k": torch.long,  # 0 = off
    "sampler_top_p": torch.float32,  # 1 = off
    **STATE_DTYPES,
}
# A sequence field takes one column per element: "swir_convergence.0", ".1", ...
FLOAT_COLUMNS = [n for n, d in COLUMNS.items() if d.is_floating_point]
INT_COLUMNS = [
    f"{n}.{i}" if n in ROW_WIDTHS else n
    for n, d in COLUMNS.items()
    if not d.is_floating_point
    for i in range(ROW_WIDTHS.get(n, 1))
]
_FRESH = fresh_values()


class SlotRows(NamedTuple):
    """One step's gathered settings of its M mixing rows."""

    methods: MethodRows
    state: CarriedState
    row_top_k: torch.Tensor  # [M] long
    sampling: torch.Tensor  # [M] bool: the prior is the sampler's distribution
    sampler_top_k: torch.Tensor  # [M] long (0 = off)
    sampler_top_p: torch.Tensor  # [M] float32 (1 = off)
    greedy_recipe: torch.Tensor  # [M] bool: greedy, its prior read at the recipe's temperature


class SlotSettings:
    """Per-slot MoI settings on ``device``.

    >>> from mixinputs.config import MoIConfig
    >>> from mixinputs.core.rows import row_settings
    >>> table = SlotSettings(4, torch.device("cpu"))
    >>> table.assign(2, row_settings(MoIConfig(mode="soft", think_end=5), seed=7))
    >>> table.upload()
    >>> rows = table.gather(torch.tensor([2]), torch.tensor([0]))
    >>> rows.methods.soft.tolist(), rows.row_top_k.tolist(), rows.sampling.tolist()
    ([True], [10], [True])
    """

    def __init__(self, num_slots: int, device: torch.device):
        self.device = device
        self.floats = torch.zeros(
            (num_slots, len(FLOAT_COLUMNS)), dtype=torch.float32, device=device
        )
        self.ints = torch.zeros((num_slots, len(INT_COLUMNS)), dtype=torch.long, device=device)
        self._col = {n: (True, FLOAT_COLUMNS.index(n)) for n in FLOAT_COLUMNS}
        self._col.update({n: (False, INT_COLUMNS.index(n)) for n in INT_COLUMNS})
        # The host mirror holds each slot's last written row; only dirty rows are uploaded.
        self._host_floats = torch.zeros_like(self.floats, device="cpu")
        self._host_ints = torch.zeros_like(self.ints, device="cpu")
        self._dirty: dict[int, None] = {}  # slots written since the last upload, in order
        f, i = len(FLOAT_COLUMNS), len(INT_COLUMNS)
        self._turns = HostTurns(
            {"slots": (num_slots, torch.long), "ints": (num_slots * i, torch.long),
             "floats": (num_slots * f, torch.float32)},
            device,
        )  # fmt: skip

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.floats, self.ints))

    def assign(
        self,
        slot: int,
        settings: RowSettings,
        sampler_top_k: int = 0,
        sampler_top_p: float = 1.0,
    ) -> None:
        """A request takes ``slot``: its settings and a fresh carried state (on the device from
        the next ``upload``); ``sampler_top_k`` / ``sampler_top_p``: what its sampler keeps (a
        greedy request reading its mode's recipe: the recipe's, ``Method.greedy_recipe``)."""
        values = settings._asdict()
        values["sampler_top_k"] = max(int(sampler_top_k or 0), 0) if settings.sampling else 0
        values["sampler_top_p"] = float(sampler_top_p) if settings.sampling else 1.0
        values.update(zip(STATE_DTYPES, _FRESH, strict=True))
        self._write(slot, values)

    def set_state(self, slot: int, state: tuple) -> None:
        """Give ``slot`` the carried state (``CarriedState`` values) a resumed request had."""
        self._write(slot, dict(zip(STATE_DTYPES, state, strict=True)))

    def _write(self, slot: int, values: dict) -> None:
        for name, value in values.items():
            for key, item in zip(
                _names(name), value if name in ROW_WIDTHS else [value], strict=True
            ):
                is_float, col = self._col[key]
                (self._host_floats if is_float else self._host_ints)[slot, col] = item
        self._dirty[slot] = None

    def upload(self) -> None:
        """Queue the rows written since the last upload (no host sync)."""
        if not self._dirty:
            return
        slots = list(self._dirty)
        self._dirty.clear()
        n, f, i = len(slots), len(FLOAT_COLUMNS), len(INT_COLUMNS)
        host = self._turns.next()
        index = torch.tensor(slots, dtype=torch.long)
        host["slots"][:n] = index
        host["ints"][: n * i] = self._host_ints.index_select(0, index).view(-1)
        host["floats"][: n * f] = self._host_floats.index_select(0, index).view(-1)
        dev = self.device
        slots_dev = host["slots"][:n].to(dev, non_blocking=True)
        self.ints.index_copy_(
            0, slots_dev, host["ints"][: n * i].to(dev, non_blocking=True).view(n, i)
        )
        self.floats.index_copy_(
            0, slots_dev, host["floats"][: n * f].to(dev, non_blocking=True).view(n, f)
        )
        self._turns.queued()

    def gather(self, slots: torch.Tensor, positions: torch.Tensor | None) -> SlotRows:
        """The settings of ``slots`` [M]; ``positions`` [M]: each row's output index j (None
        when no row draws noise)."""
        if positions is None:
            positions = torch.zeros_like(slots)
        # Transposed to [columns, M], so each setting is a contiguous [M] row (the fused kernels
        # index them with unit stride).
        f = self.floats.index_select(0, slots).t().contiguous()  # [F, M]
        i = self.ints.index_select(0, slots).t().contiguous()  # [I, M]

        def col(name: str) -> torch.Tensor:
            if name in ROW_WIDTHS:  # [M, width]
                return torch.stack([i[self._col[key][1]] for key in _names(name)], dim=-1)
            is_float, c = self._col[name]
            if is_float:
                return f[c]
            return i[c].bool() if COLUMNS[name] == torch.bool else i[c]

        fields = {n: col(n) for n in MethodRows._fields if n not in STEP_COLUMNS}
        unmeasured = torch.full_like(f[0], float("nan"))  # the step measures it (Cold Stop)
        return SlotRows(
            methods=MethodRows(position=positions, vocab_entropy=unmeasured, **fields),
            state=CarriedState(*(col(n) for n in STATE_DTYPES)),
            row_top_k=fields["top_k"],
            sampling=fields["sampling"],
            sampler_top_k=col("sampler_top_k"),
            sampler_top_p=col("sampler_top_p"),
            greedy_recipe=fields["greedy_recipe"],
        )

    def store_state(self, slots: torch.Tensor, state: CarriedState) -> None:
        """Carry ``state`` [M] to the slots' next step."""
        for name, value in zip(STATE_DTYPES, state, strict=True):
            is_float, c = self._col[name]
            table = self.floats if is_float else self.ints
            table[slots, c] = value.to(table.dtype)


def _names(name: str) -> list[str]:
    return [f"{name}.{i}" for i in range(ROW_WIDTHS[name])] if name in ROW_WIDTHS else [name]


def state_pack(state: CarriedState) -> torch.Tensor:
    """[M, S] float64 (exact for every field: flags, counts, float32 values), as the history
    records each row's carried state."""
    return torch.stack([t.double() for t in state], dim=-1)
