"""Each running MoI request's settings and carried state, on the device, one row per slot.

Both model runners keep a running MoI request in a slot (V2: vLLM's own request slot; V1: a row
the worker assigns). A request's settings are written once, when it takes its slot; each step
then gathers its rows by slot with two ``index_select`` calls, however many methods the batch
mixes, and writes the state it carries to the next step (thinking, low-entropy steps) back
in place. Nothing here syncs with the host.

Table layout: ``floats`` [num_slots, 4] float32 and ``ints`` [num_slots, 11] int64, columns below.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from mixinputs.config import MoIConfig
from mixinputs.mixing import NO_THINK_END, NOISE_CODES, MethodRows, RegionState

# float32 columns
_BETA, _TOP_P, _NOISE_TEMP, _COLD_TAU = range(4)
# int64 columns
(
    _DIRECT,
    _SOFT,
    _TOP_K,
    _SAMPLING,
    _SAMPLER_TOP_K,
    _NOISE,
    _SEED,
    _THINK_END,
    _COLD_STEPS,
    _THINKING,
    _LOW_STEPS,
) = range(11)


class SlotRows(NamedTuple):
    """One step's gathered settings of its M mixing rows."""

    methods: MethodRows
    state: RegionState
    row_top_k: torch.Tensor  # [M] long
    sampling: torch.Tensor  # [M] bool: the prior is the sampler's distribution
    sampler_top_k: torch.Tensor  # [M] long (0 = off)
    sampler_top_p: torch.Tensor  # [M] float32 (1 = off)


def is_greedy(sampling_params: Any) -> bool:
    return sampling_params.temperature < 1e-5


class SlotSettings:
    """Per-slot MoI settings on ``device``.

    >>> table = SlotSettings(4, torch.device("cpu"))
    >>> table.assign(2, MoIConfig(mode="soft"), _Params(), seed=7)
    >>> rows = table.gather(torch.tensor([2]), torch.tensor([0]))
    >>> rows.methods.soft.tolist(), rows.row_top_k.tolist(), rows.sampling.tolist()
    ([True], [10], [True])
    """

    def __init__(self, num_slots: int, device: torch.device):
        self.device = device
        self.floats = torch.zeros((num_slots, 4), dtype=torch.float32, device=device)
        self.ints = torch.zeros((num_slots, 11), dtype=torch.long, device=device)

    def assign(
        self,
        slot: int,
        config: MoIConfig,
        sampling_params: Any,
        seed: int,
        state: tuple[bool, int] = (True, 0),
    ) -> None:
        """Write a request's settings into ``slot`` (a new request, or one resumed with the
        ``state`` it had). Device writes are ordered on the stream: a step still reading the
        slot's old values finishes before these land."""
        sampling = config.prior == "sampling"
        # A greedy row's sampling distribution is a point mass on y: beta = inf feeds E[y].
        point_mass = sampling and is_greedy(sampling_params)
        top_k = sampling_params.top_k if sampling else 0
        floats = [
            float("inf") if point_mass else config.beta,
            sampling_params.top_p if sampling else 1.0,
            config.noise_temperature or 1.0,
            config.cold_stop_entropy or 0.0,
        ]
        think_end = config.think_end if config.region == "thinking" else NO_THINK_END
        ints = [0] * 11
        ints[_DIRECT] = int(config.direct and not point_mass)
        ints[_SOFT] = int(config.soft and not point_mass)
        ints[_TOP_K] = int(config.top_k)
        ints[_SAMPLING] = int(sampling)
        ints[_SAMPLER_TOP_K] = top_k if top_k and top_k > 0 else 0
        ints[_NOISE] = NOISE_CODES[config.noise]
        ints[_SEED] = seed
        ints[_THINK_END] = int(think_end)
        ints[_COLD_STEPS] = config.cold_stop_steps
        ints[_THINKING] = int(state[0])
        ints[_LOW_STEPS] = int(state[1])
        self.floats[slot] = torch.tensor(floats, dtype=torch.float32).to(self.device)
        self.ints[slot] = torch.tensor(ints, dtype=torch.long).to(self.device)

    def set_state(self, slot: int, state: tuple[bool, int]) -> None:
        """Give ``slot`` the (thinking, low-entropy steps) a resumed request carries."""
        row = torch.tensor([int(state[0]), int(state[1])], dtype=torch.long)
        self.ints[slot, _THINKING : _LOW_STEPS + 1] = row.to(self.device)

    def gather(self, slots: torch.Tensor, positions: torch.Tensor | None) -> SlotRows:
        """The settings of ``slots`` [M]; ``positions`` [M]: each row's output index j (None
        when no row draws noise)."""
        if positions is None:
            positions = torch.zeros_like(slots)
        # Transposed to [columns, M], so each setting is a contiguous [M] row (the fused kernels
        # index them with unit stride).
        f = self.floats.index_select(0, slots).t().contiguous()  # [4, M]
        i = self.ints.index_select(0, slots).t().contiguous()  # [11, M]
        methods = MethodRows(
            beta=f[_BETA],
            direct=i[_DIRECT].bool(),
            soft=i[_SOFT].bool(),
            noise=i[_NOISE],
            noise_temperature=f[_NOISE_TEMP],
            seed=i[_SEED],
            position=positions,
            think_end=i[_THINK_END],
            cold_stop_entropy=f[_COLD_TAU],
            cold_stop_steps=i[_COLD_STEPS],
        )
        return SlotRows(
            methods=methods,
            state=RegionState(i[_THINKING].bool(), i[_LOW_STEPS]),
            row_top_k=i[_TOP_K],
            sampling=i[_SAMPLING].bool(),
            sampler_top_k=i[_SAMPLER_TOP_K],
            sampler_top_p=f[_TOP_P],
        )

    def store_state(self, slots: torch.Tensor, state: RegionState) -> None:
        """Carry ``state`` [M] to the slots' next step."""
        self.ints[slots, _THINKING] = state.thinking.long()
        self.ints[slots, _LOW_STEPS] = state.low_entropy_steps


def state_pack(state: RegionState) -> torch.Tensor:
    """[M, 2] int32 (thinking, low-entropy steps), as the history records it."""
    return torch.stack([state.thinking.int(), state.low_entropy_steps.int()], dim=-1)


class _Params:  # doctest stand-in for vLLM's SamplingParams
    temperature, top_k, top_p = 1.0, 0, 1.0
