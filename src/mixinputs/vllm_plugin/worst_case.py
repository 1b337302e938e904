"""MoI's worst step, run while vLLM profiles memory, so the KV cache leaves room for it.

vLLM sizes the KV cache from the peak memory of a profiling run (a dummy forward of
``max_num_batched_tokens`` and a dummy sampler call on ``max_num_seqs`` rows). Dummy batches hold
no MoI request, so without this the step's temporaries (the raw logits copy, the candidates, a
family method's whole-vocabulary work) would never be in that peak, and a full batch of MoI
requests could run out of memory where standard ones do not (vLLM 0.34's extensible KV cache takes
all the memory the profile leaves).

``profile(state, run_sampler, logits)`` runs, in place of the dummy sampler call, the sampler
alone and then one real MoI step per heavy method with every row of the dummy batch mixing at the
engine's widest K: Soft Thinking with Cold Stop, Dirichlet noise and the sampler's masks (the
sampling prior's [M, V] copy), SeLaR, Multiplex Thinking at width K + 1 drawing under top-k /
top-p (masks and draws over V), and SwiReasoning (softmax, entropy and p·E over V) where the engine
can run it. Each goes through ``MoIStepState.sample`` itself, so the profile measures the code
that runs. Afterwards the slots are empty again. The peak each adds (``peak_memory.PeakBytes``,
any device) is kept in ``state.profiled`` for logs, tests and the bench.

>>> sorted(WORST_CASES)
['multiplex', 'selar', 'soft', 'swir']
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from mixinputs.config import MoIConfig
from mixinputs.methods import MODES
from mixinputs.methods import SEQUENCES as _SEQUENCES
from mixinputs.vllm_plugin.peak_memory import PeakBytes
from mixinputs.vllm_plugin.step_state import MoIStepState, SlotRequest

logger = logging.getLogger("vllm.mixinputs")

WORST_CASES: dict[str, Callable[[int], MoIConfig]] = {
    m.name: (lambda k, m=m: MoIConfig(mode=m.name, top_k=k, **m.worst_case(k)))
    for m in MODES
    if m.worst_case(1) is not None
}
"""The methods whose step costs most (``Method.worst_case``), as a config at the engine's widest
K."""
_DENSE = {m.name for m in MODES if m.dense}


def _resolved(config: MoIConfig) -> MoIConfig:
    """``config`` with every token it names set to id 0 (what the front end would resolve) and
    no math-symbol list (a profile must not leave the engine's math mask behind)."""
    ids: dict[str, Any] = {
        name: (0,) if name in _SEQUENCES else 0 for name in config.tokens_to_resolve
    }
    if any(f.name == "plain_math" for f in dataclasses.fields(config)):
        ids["plain_math"] = False
    return dataclasses.replace(config, **ids)


def _params(temperature: float = 0.7):
    """Sampling parameters of the synthetic rows: sampled (not greedy) at a temperature other
    than 1, with top-k and top-p on, so the sampler's masks, the rescaled distributions and the
    methods that read them do their whole work."""
    from vllm import SamplingParams

    return SamplingParams(temperature=temperature, top_k=50, top_p=0.9, max_tokens=1024, seed=0)


def profile(state: MoIStepState, run_sampler: Callable[[torch.Tensor], Any], logits: torch.Tensor):
    """The dummy sampler call of vLLM's profiling run, with MoI's worst steps (module doc).
    Returns the last sampler output. Any failure turns MoI off (``state.fail``) and samples."""
    if state.disabled is not None:
        return run_sampler(logits)
    # The dummy forward's logits are only shapes: rows of padding can hold NaN or inf (seen on
    # CPU), which a sampling kernel or a draw may reject. Finite in place: no memory added.
    torch.nan_to_num_(logits, nan=0.0, posinf=0.0, neginf=0.0)
    m = min(logits.shape[0], state.num_slots)
    with PeakBytes() as alone:
        output = run_sampler(logits)
    report = {"rows": m, "vocab": logits.shape[1], "sampler_bytes": alone.peak, "methods": {}}
    for name, make in WORST_CASES.items():
        if name in _DENSE and state.step.dense_weight is None:
            continue  # refused on this engine (tensor parallel, quantized embedding)
        try:
            with PeakBytes() as peak:
                output = _one_step(state, _resolved(make(state.max_top_k)), run_sampler, logits, m)
        except Exception as e:
            state.fail(f"profiling the worst-case {name} step", e)
        _reset(state, m)
        if state.disabled is not None:  # the step failed (``sample`` contains its own errors)
            return run_sampler(logits)
        report["methods"][name] = peak.peak
    extra = max(report["methods"].values(), default=alone.peak) - alone.peak
    report["extra_bytes"] = max(extra, 0)
    state.profiled = report
    logger.info(
        "mixinputs: profiled MoI's worst step: %d rows mixing add %.1f MiB to the sampler's "
        "%.1f MiB (%s)",
        m,
        report["extra_bytes"] / 2**20,
        alone.peak / 2**20,
        ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in report["methods"].items()),
    )
    return output


def _one_step(state, config, run_sampler, logits, m):
    params = _params()
    for slot in range(m):
        request = SlotRequest.new(f"mixinputs-profile-{slot}", config, params, state.width)
        state.open(slot, request, params)
    rows = np.arange(m)
    ones = np.ones(m, dtype=np.int64)
    token = object()
    # Each row samples its first output token (j = 0) after a one-token prompt: nothing replays.
    state.plan(rows, rows, ones * 0, ones, rows.astype(np.int64), ones, ones, m, token)
    return state.sample(run_sampler, logits, token=token)


def _reset(state: MoIStepState, m: int) -> None:
    """The slots as they were before the profile: closed, zeroed, nothing planned or staged."""
    for slot in range(m):
        state.close(slot)
    state.staging.drain(block=True)
    state.clear()
    state.embed.slots[:m].zero_()
