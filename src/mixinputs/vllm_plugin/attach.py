"""Start-up work both model runners share: may this engine mix, and attaching MoI to its model.

``refusal_reason`` is asked in every process (the front end refuses MoI requests with it, the
worker attaches nothing); ``attach`` runs in the worker right after the weights are loaded, before
vLLM profiles memory, compiles or captures CUDA graphs: it swaps the token embedding for
``MixedInputEmbedding`` and builds the engine's ``MoIStepState``.

>>> step_state_of(object()) is None   # a runner without MoI
True
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from mixinputs.vllm_plugin.embedding import MixedInputEmbedding, find_input_embedding
from mixinputs.vllm_plugin.settings import PluginSettings
from mixinputs.vllm_plugin.step_state import MoIStepState

logger = logging.getLogger("vllm.mixinputs")


def uses_v2_runner(vllm_config: Any) -> bool:
    """Whether the engine runs Model Runner V2 (``vllm/v1/worker/gpu/``)."""
    try:
        return bool(vllm_config.use_v2_model_runner)
    except Exception:  # older releases without the property: always V1
        return False


def refusal_reason(vllm_config: Any) -> str | None:
    """Why this engine cannot serve MoI requests, or None (the same answer in every process)."""
    if getattr(vllm_config, "speculative_config", None) is not None:
        return "speculative decoding is on (MoI needs one sampled token per step)"
    parallel = getattr(vllm_config, "parallel_config", None)
    if parallel is not None and getattr(parallel, "pipeline_parallel_size", 1) > 1:
        return "pipeline parallelism is on (the last stage samples, the first embeds)"
    if parallel is not None and getattr(parallel, "tensor_parallel_size", 1) > 1:
        # Tensor parallel works when every rank holds the full logits and samples the same
        # tokens (all-gathered logits, vLLM's default): each rank then builds the same
        # candidates and calls the vocab-parallel embedding (masked lookup + all-reduce) in step.
        from vllm.platforms import current_platform

        if not current_platform.use_all_gather():
            return "tensor parallel on a platform that gathers logits to one rank only"
    model_config = getattr(vllm_config, "model_config", None)
    if model_config is not None and getattr(model_config, "enable_prompt_embeds", False):
        return "prompt embeddings are enabled (the runner then embeds only part of the batch)"
    if not uses_v2_runner(vllm_config):
        return None
    # Model Runner V2 only: features that replace or split its sampler.
    if getattr(vllm_config, "watermark_config", None) is not None:
        return "watermarking is on (it replaces vLLM's sampler)"
    if getattr(parallel, "enable_batch_sharded_sampling", False):
        return "batch-sharded sampling is on (each rank samples only part of the batch)"
    if getattr(model_config, "runner_type", "generate") != "generate":
        return "this is not a generative model"
    return None


def runs_eagerly(vllm_config: Any) -> bool:
    """True when the forward is neither compiled nor captured in CUDA graphs, so the embedding
    wrapper may scatter a different number of replay rows each step."""
    if getattr(getattr(vllm_config, "model_config", None), "enforce_eager", False):
        return True
    compilation = getattr(vllm_config, "compilation_config", None)
    # ``mode`` from vLLM 0.27 on, ``level`` before.
    mode = getattr(compilation, "mode", getattr(compilation, "level", None))
    graphs = getattr(compilation, "cudagraph_mode", None)
    return mode is not None and int(mode) == 0 and (graphs is None or int(graphs.value) == 0)


def attach(
    model: torch.nn.Module,
    vllm_config: Any,
    num_slots: int,
    max_num_tokens: int,
    settings: PluginSettings,
    runner_name: str,
    replay_buffer: Callable[[torch.nn.Module], torch.Tensor | None] | None = None,
) -> MoIStepState | None:
    """Swap ``model``'s token embedding and build the engine's MoI state, or return None (with a
    warning naming the reason) when this engine cannot mix. ``replay_buffer(embedding)``: a
    device buffer vLLM leaves unused that replayed mixtures may live in (V1's ``inputs_embeds``)."""
    reason = refusal_reason(vllm_config)
    if reason is not None:
        logger.warning("mixinputs: MoI is off for this engine: %s", reason)
        return None
    parent, attr, base = find_input_embedding(model)
    replay = replay_buffer(base) if replay_buffer is not None else None
    # Eager engines scatter exactly this step's replay rows; compiled / graph-captured ones a
    # fixed number (MIXINPUTS_REPLAY_ROWS), which every step pays for.
    replay_rows = None if runs_eagerly(vllm_config) else settings.replay_rows
    embed = MixedInputEmbedding(base, num_slots, max_num_tokens, replay, replay_rows)
    setattr(parent, attr, embed)
    state = MoIStepState(embed, settings.max_top_k)
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
