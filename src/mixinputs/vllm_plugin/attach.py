"""Start-up work both model runners share: may this engine mix, and attaching MoI to its model.

``refusal_reason`` is asked in every process (the front end refuses MoI requests with it, the
worker attaches nothing); it reads the configuration only and never raises. ``attach`` runs in
the worker right after the weights are loaded, before vLLM profiles memory, compiles or captures
CUDA graphs: it swaps the token embedding for ``MixedInputEmbedding`` and builds the engine's
``MoIStepState``. Anything in it that raises leaves the model as vLLM built it and turns MoI off
for the engine (``status``); only ``MIXINPUTS_BETA`` (MoI demanded for every request) makes it a
start-up error.

>>> step_state_of(object()) is None   # a runner without MoI
True
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from mixinputs.vllm_plugin import compat, status
from mixinputs.vllm_plugin.embedding import MixedInputEmbedding, find_input_embedding
from mixinputs.vllm_plugin.settings import PluginSettings
from mixinputs.vllm_plugin.step_state import MoIStepState

logger = logging.getLogger("vllm.mixinputs")


class MoIStartupError(RuntimeError):
    """``MIXINPUTS_BETA`` asks for MoI on every request, and this engine cannot mix."""


def uses_v2_runner(vllm_config: Any) -> bool:
    """Whether the engine runs Model Runner V2 (``vllm/v1/worker/gpu/``), as vLLM decides it:
    always from 0.34 (V1 is deleted), else ``VllmConfig.use_v2_model_runner``."""
    if not compat.has_v1_runner():
        return True
    try:
        return bool(vllm_config.use_v2_model_runner)
    except AttributeError:  # a release without the property: V1
        return False
    except Exception:  # the property refuses the configuration (vLLM stops the start itself)
        return True


def _positive(obj: Any, name: str) -> int:
    value = getattr(obj, name, 1)
    return value if isinstance(value, int) else 1


def _config_refusal(vllm_config: Any) -> str | None:
    if getattr(vllm_config, "speculative_config", None) is not None:
        return "speculative decoding is on (MoI needs one sampled token per step)"
    parallel = getattr(vllm_config, "parallel_config", None)
    if _positive(parallel, "pipeline_parallel_size") > 1:
        return "pipeline parallelism is on (the last stage samples, the first embeds)"
    for name in ("prefill_context_parallel_size", "decode_context_parallel_size"):
        if _positive(parallel, name) > 1:
            kind = name.split("_")[0]
            return (
                f"{kind} context parallelism is on ({name} > 1: each rank holds part of a sequence)"
            )
    model_config = getattr(vllm_config, "model_config", None)
    if getattr(model_config, "runner_type", "generate") != "generate":
        return "this is not a generative model"
    if getattr(model_config, "enable_prompt_embeds", False):
        return "prompt embeddings are enabled (the runner then embeds only part of the batch)"
    from vllm.platforms import current_platform

    if _positive(parallel, "tensor_parallel_size") > 1 and not current_platform.use_all_gather():
        # Tensor parallel works when every rank holds the full logits and samples the same
        # tokens (all-gathered logits, vLLM's default): each rank then builds the same
        # candidates and calls the vocab-parallel embedding (masked lookup + all-reduce) in step.
        return "tensor parallel on a platform that gathers logits to one rank only"
    standalone = getattr(current_platform, "uses_standalone_cpu_model_runner", None)
    if callable(standalone) and standalone():  # vLLM 0.34+, CPUs without Triton (non-x86)
        return "the standalone CPU model runner (no Triton) has no sampler hook for MoI"
    if not uses_v2_runner(vllm_config):
        return None
    # Model Runner V2 only: features that replace or split its sampler.
    if getattr(vllm_config, "watermark_config", None) is not None:
        return "watermarking is on (it replaces vLLM's sampler)"
    if getattr(parallel, "enable_batch_sharded_sampling", False):
        return "batch-sharded sampling is on (each rank samples only part of the batch)"
    return None


def refusal_reason(vllm_config: Any) -> str | None:
    """Why this engine cannot serve MoI requests, or None (the same answer in every process).

    Reads the configuration only, and never raises: a configuration it cannot read is a reason.
    """
    try:
        return _config_refusal(vllm_config)
    except Exception as e:
        return f"mixinputs could not read this engine's configuration ({type(e).__name__}: {e})"


def _graphs_on(graphs: Any) -> bool:
    """Whether a ``CUDAGraphMode`` captures anything: composite modes (``FULL_DECODE_ONLY`` is
    ``(2, 0)``, ``FULL_AND_PIECEWISE`` ``(2, 1)``) count when any part is on."""
    if graphs is None:
        return False
    value = getattr(graphs, "value", graphs)
    parts = value if isinstance(value, tuple) else (value,)
    return any(int(getattr(part, "value", part)) != 0 for part in parts)


def _compiles(compilation: Any) -> bool:
    """Whether torch.compile runs (``mode``, from vLLM 0.27 on; ``level`` before)."""
    mode = getattr(compilation, "mode", None)
    if mode is None:
        mode = getattr(compilation, "level", None)
    if mode is None:
        return True  # unknown: assume compiled (a fixed-shape scatter is right either way)
    return int(getattr(mode, "value", mode)) != 0


def runs_eagerly(vllm_config: Any) -> bool:
    """True when the forward is neither compiled nor captured in CUDA graphs, so the embedding
    wrapper may scatter a different number of replay rows each step. Compilation mode NONE with
    CUDA graphs on (breakable CUDA graphs, vLLM 0.32+) is not eager. Never raises (unknown: not
    eager, whose fixed-shape scatter is valid in every mode)."""
    try:
        if getattr(getattr(vllm_config, "model_config", None), "enforce_eager", False):
            return True
        compilation = getattr(vllm_config, "compilation_config", None)
        if compilation is None:
            return False
        return not _compiles(compilation) and not _graphs_on(
            getattr(compilation, "cudagraph_mode", None)
        )
    except Exception:
        return False


def attach(
    model: torch.nn.Module,
    vllm_config: Any,
    num_slots: int,
    max_num_tokens: int,
    settings: PluginSettings,
    runner_name: str,
    replay_buffer: Callable[[torch.nn.Module], torch.Tensor | None] | None = None,
) -> MoIStepState | None:
    """Swap ``model``'s token embedding and build the engine's MoI state, or return None with
    one log line naming the reason when this engine cannot mix (the reason also goes to
    ``status``, so the front end refuses MoI requests with it). ``replay_buffer(embedding)``: a
    device buffer vLLM leaves unused that replayed mixtures may live in (V1's ``inputs_embeds``).
    Raises ``MoIStartupError`` instead when ``MIXINPUTS_BETA`` asks for MoI on every request."""
    reason = status.registration_failure() or refusal_reason(vllm_config)
    if reason is not None:
        return refuse(reason, settings, logging.WARNING)
    try:
        state = _attach(
            model, vllm_config, num_slots, max_num_tokens, settings, runner_name, replay_buffer
        )
    except Exception as e:
        return failed(f"attaching MoI to {type(model).__name__}", e, settings)
    status.record_attach(None)
    return state


def failed(what: str, error: Exception, settings: PluginSettings) -> None:
    """``what`` raised ``error`` while MoI was being attached: MoI is off (``refuse``)."""
    logger.debug("mixinputs: %s failed", what, exc_info=error)
    return refuse(f"{what} failed ({type(error).__name__}: {error})", settings, logging.ERROR)


def refuse(reason: str, settings: PluginSettings, level: int = logging.ERROR) -> None:
    """This engine will not mix, for ``reason``: one log line, and the front end refuses MoI
    requests with it; ``MoIStartupError`` instead when ``MIXINPUTS_BETA`` demands MoI."""
    status.record_attach(reason)
    if settings.default is not None:
        raise MoIStartupError(
            f"mixinputs: MIXINPUTS_BETA asks for MoI on every request, but this engine cannot "
            f"mix: {reason}"
        )
    logger.log(level, "mixinputs: MoI is off for this engine: %s", reason)
    return None


def _attach(model, vllm_config, num_slots, max_num_tokens, settings, runner_name, replay_buffer):
    parent, attr, base = find_input_embedding(model)
    replay = replay_buffer(base) if replay_buffer is not None else None
    # Eager engines scatter exactly this step's replay rows; compiled / graph-captured ones a
    # fixed number (MIXINPUTS_REPLAY_ROWS), which every step pays for.
    replay_rows = None if runs_eagerly(vllm_config) else settings.replay_rows
    embed = MixedInputEmbedding(base, num_slots, max_num_tokens, replay, replay_rows)
    state = MoIStepState(embed, settings.max_top_k)
    setattr(parent, attr, embed)  # last: nothing before it changes vLLM's model
    where = "its own buffer" if embed.owns_replay else "vLLM's unused inputs_embeds buffer"
    logger.info(
        "mixinputs: MoI ready on %s (embedding %s.%s, %d slot rows, %d replay rows a step in %s; "
        "%.2f MiB added; mixing step: %s; default: %s)",
        runner_name,
        type(parent).__name__,
        attr,
        num_slots,
        embed.replay_rows,
        where,
        state.memory()["device_bytes"] / 2**20,
        "fused Triton" if state.step.fused else "PyTorch",
        settings.default or "standard unless a request asks",
    )
    return state


def step_state_of(runner: Any) -> MoIStepState | None:
    """The ``MoIStepState`` attached to a model runner (V1 ``GPUModelRunner`` / ``CPUModelRunner``,
    or Model Runner V2), or None when the plugin attached none (no plugin, or an engine that
    cannot mix). Tests and the bench reach a worker's MoI state through this one function."""
    adapter = getattr(runner, "_mixinputs", None)
    if adapter is None:
        adapter = getattr(getattr(runner, "model_state", None), "mixinputs", None)
    return getattr(adapter, "state", None)
