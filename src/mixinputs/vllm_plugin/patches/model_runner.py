"""Patch: the V1 model runner feeds each MoI request's mixture instead of its sampled token.

Why: vLLM has no hook that changes a step's input embeddings from the previous step's
    distribution and sampled token, which is what MoI needs.
How: wrap four methods of ``GPUModelRunner`` (the CPU runner inherits three and overrides
    ``load_model``, which is wrapped on both):
    - ``load_model``: swap the token embedding for ``MixedInputEmbedding`` (persistent buffers,
      allocated before vLLM profiles memory and captures graphs) and attach the worker state;
    - ``_update_states``: read new requests' settings, forget finished ones;
    - ``_prepare_inputs``: map this step's tokens to mixture rows (host only);
    - ``_sample``: compute the mixtures of the sampled tokens on the device.
    Signatures are the same in vLLM 0.26 to 0.33 (checked against each release's source).
Upstream: an input-embedding hook in the runner would remove this patch; Model Runner V2's
    ``ModelState.prepare_inputs_embeds`` is close to one.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from mixinputs.vllm_plugin.embedding import MixedInputEmbedding, find_input_embedding
from mixinputs.vllm_plugin.patches import wrap_method
from mixinputs.vllm_plugin.settings import PluginSettings
from mixinputs.vllm_plugin.worker_state import MoIWorkerState

logger = logging.getLogger("vllm.mixinputs")


def unsupported_reason(vllm_config: Any) -> str | None:
    """Why this engine cannot serve MoI requests, or None."""
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
    return None


def install(runner: Any, settings: PluginSettings) -> None:
    """Attach MoI to a runner whose model was just loaded."""
    if getattr(runner, "_mixinputs", None) is not None:
        return
    reason = unsupported_reason(runner.vllm_config)
    if reason is not None:
        runner._mixinputs = None
        logger.warning("mixinputs: MoI is off for this engine: %s", reason)
        return
    parent, attr, base = find_input_embedding(runner.get_model())
    replay = _unused_inputs_embeds(runner, base)
    # Eager engines scatter exactly this step's replay rows; compiled / graph-captured ones a
    # fixed number (MIXINPUTS_REPLAY_ROWS), which every step pays for.
    replay_rows = None if _runs_eagerly(runner.vllm_config) else settings.replay_rows
    wrapper = MixedInputEmbedding(
        base, runner.max_num_reqs, runner.max_num_tokens, replay, replay_rows
    )
    setattr(parent, attr, wrapper)
    state = MoIWorkerState(runner, wrapper, settings.default, settings.max_top_k)
    runner._mixinputs = state
    _record_sampler_distribution(runner, state)
    where = "its own buffer" if wrapper.owns_replay else "vLLM's unused inputs_embeds buffer"
    logger.info(
        "mixinputs: MoI ready (embedding %s.%s, %d slot rows, %d replay rows a step in %s; "
        "%.2f MiB added; mixing step: %s; default: %s)",
        type(parent).__name__,
        attr,
        runner.max_num_reqs,
        wrapper.replay_rows,
        where,
        wrapper.extra_bytes() / 2**20,
        "fused Triton" if state.step.fused else "PyTorch",
        settings.default or "standard unless a request asks",
    )


def _runs_eagerly(vllm_config: Any) -> bool:
    """True when the model's forward is neither compiled nor captured in CUDA graphs, so the
    embedding wrapper may use shapes that change from step to step."""
    if getattr(getattr(vllm_config, "model_config", None), "enforce_eager", False):
        return True
    compilation = getattr(vllm_config, "compilation_config", None)
    mode = getattr(compilation, "mode", getattr(compilation, "level", None))
    graphs = getattr(compilation, "cudagraph_mode", None)
    return mode is not None and int(mode) == 0 and (graphs is None or int(graphs.value) == 0)


def _unused_inputs_embeds(runner: Any, base: Any):
    """vLLM's ``inputs_embeds`` device buffer [max_num_batched_tokens, D] when this runner never
    uses it (a text-only model without prompt embeddings): replayed mixtures then cost nothing."""
    if getattr(runner, "supports_mm_inputs", True) or getattr(runner, "enable_prompt_embeds", True):
        return None
    buffer = getattr(getattr(runner, "inputs_embeds", None), "gpu", None)
    weight = base.weight
    fits = (
        isinstance(buffer, torch.Tensor)
        and buffer.dim() == 2
        and buffer.shape[0] >= runner.max_num_tokens
        and buffer.shape[1] == weight.shape[1]
        and buffer.dtype == weight.dtype
        and buffer.device == weight.device
    )
    return buffer if fits else None


def _record_sampler_distribution(runner: Any, state: MoIWorkerState) -> None:
    """The sampling prior needs the logits the top-k/top-p stage samples from."""
    stage = getattr(getattr(runner, "sampler", None), "topk_topp_sampler", None)
    if stage is None:
        return
    original = stage.forward

    def forward(logits, *args, **kwargs):
        state.record_processed(logits)
        return original(logits, *args, **kwargs)

    stage.forward = forward


def apply(settings: PluginSettings) -> None:
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    owners = [GPUModelRunner]
    try:
        from vllm.v1.worker.cpu_model_runner import CPUModelRunner

        owners.append(CPUModelRunner)
    except ImportError:  # a build without the CPU runner
        pass

    def make_load_model(original):
        def load_model(self, *args, **kwargs):
            result = original(self, *args, **kwargs)
            install(self, settings)
            return result

        return load_model

    for owner in owners:
        if "load_model" in owner.__dict__:
            wrap_method(owner, "load_model", make_load_model)

    def make_update_states(original):
        def _update_states(self, scheduler_output, *args, **kwargs):
            result = original(self, scheduler_output, *args, **kwargs)
            state = getattr(self, "_mixinputs", None)
            if state is not None:
                state.on_update_states(scheduler_output)
            return result

        return _update_states

    def make_prepare_inputs(original):
        def _prepare_inputs(self, scheduler_output, num_scheduled_tokens, *args, **kwargs):
            result = original(self, scheduler_output, num_scheduled_tokens, *args, **kwargs)
            state = getattr(self, "_mixinputs", None)
            if state is not None:
                state.plan_forward(num_scheduled_tokens)
            return result

        return _prepare_inputs

    def make_sample(original):
        def _sample(self, logits, spec_decode_metadata, *args, **kwargs):
            state = getattr(self, "_mixinputs", None)
            if state is None or logits is None:
                return original(self, logits, spec_decode_metadata, *args, **kwargs)
            return state.sample(
                lambda lg, sd: original(self, lg, sd, *args, **kwargs),
                logits,
                spec_decode_metadata,
            )

        return _sample

    wrap_method(GPUModelRunner, "_update_states", make_update_states)
    wrap_method(GPUModelRunner, "_prepare_inputs", make_prepare_inputs)
    wrap_method(GPUModelRunner, "_sample", make_sample)
