"""MoI on Model Runner V2: a ``ModelState`` that wraps the one vLLM picked, and a sampler wrapper.

V2 puts everything model-specific behind ``ModelState`` (``vllm/v1/worker/gpu/model_states``).
``MoIModelState`` delegates every attribute to the state vLLM chose for the model (default,
Mamba hybrid, encoder-decoder, ...) and adds MoI at four of its hooks:

- construction (``wrap_model_state``, right after the model is loaded, before memory profiling
  and graph capture): swap the token embedding for ``MixedInputEmbedding``;
- ``add_request`` / ``remove_request``: a request's MoI settings live in its V2 slot;
- ``prepare_inputs`` (every real and dummy step, before the forward): plan where mixtures go;
  ``prepare_dummy_inputs`` (graph capture): clear the plan, so captures see no stale positions;
- ``custom_sampler``: wrap V2's sampler in ``MoISampler``, which keeps the MoI rows' raw logits
  (the sampler may edit them in place), samples as usual, then writes the mixtures.

>>> MoIModelState.__mro__[1] is object   # delegation, not inheritance: any ModelState fits
True
"""

from __future__ import annotations

import logging
from typing import Any

from mixinputs.vllm_plugin.embedding import MixedInputEmbedding, find_input_embedding
from mixinputs.vllm_plugin.settings import PluginSettings
from mixinputs.vllm_plugin.v2_state import V2MoIState

logger = logging.getLogger("vllm.mixinputs")


class MoIModelState:
    """A V2 ``ModelState`` with MoI; everything else is the wrapped state's."""

    def __init__(self, inner: Any, state: V2MoIState):
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "mixinputs", state)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._inner, name, value)  # vLLM resets attributes of its state (profiling)

    def __delattr__(self, name: str) -> None:
        delattr(self._inner, name)

    def add_request(self, req_index: int, new_req_data: Any) -> None:
        self._inner.add_request(req_index, new_req_data)
        self.mixinputs.add_request(req_index, new_req_data.req_id, new_req_data.sampling_params)

    def remove_request(self, req_id: str) -> None:
        self.mixinputs.remove_request(req_id)
        self._inner.remove_request(req_id)

    def prepare_inputs(self, input_batch: Any, req_states: Any) -> dict[str, Any]:
        model_inputs = self._inner.prepare_inputs(input_batch, req_states)
        self.mixinputs.plan_step(input_batch, req_states)
        return model_inputs

    def prepare_dummy_inputs(self, num_reqs: int, num_tokens: int) -> dict[str, Any]:
        self.mixinputs.plan = None
        self.mixinputs._clear_positions()
        return self._inner.prepare_dummy_inputs(num_reqs, num_tokens)

    def custom_sampler(self, sampler: Any) -> tuple[Any, Any] | None:
        custom = self._inner.custom_sampler(sampler)
        if custom is not None:  # the model brings its own sampler: MoI cannot sit around it
            self.mixinputs.disable(
                f"{type(self._inner).__name__} replaces vLLM's sampler (custom_sampler)"
            )
            return custom
        return MoISampler(sampler, self.mixinputs), None


class MoISampler:
    """V2's sampler, plus the mixtures of the MoI rows' sampled tokens.

    Called as ``sampler(logits [num_reqs, V], input_batch) -> SamplerOutput``; every other
    attribute (``add_request``, ``sampling_states``, ``penalties_state``, ...) is the wrapped
    sampler's.
    """

    def __init__(self, base: Any, state: V2MoIState):
        object.__setattr__(self, "_base", base)
        object.__setattr__(self, "mixinputs", state)
        _record_sampler_distribution(base, state)

    def __call__(self, logits: Any, input_batch: Any, *args: Any, **kwargs: Any) -> Any:
        state = self.mixinputs
        plan = state.take_plan(input_batch)
        if plan is None:  # no MoI row, or a dummy batch
            return self._base(logits, input_batch, *args, **kwargs)
        # 1. The MoI rows' raw logits: V2's sampler may edit ``logits`` in place (0.26 does).
        raw = logits.index_select(0, plan.rows)  # [M, V]
        # 2. Sample as usual; the sampler's own distribution is recorded for "sampling" rows.
        state.capture_rows = plan.rows if plan.sampling else None
        state.processed = None
        try:
            output = self._base(logits, input_batch, *args, **kwargs)
        finally:
            state.capture_rows = None
        # 3. Candidates, weights, mixtures into the slots (device only; no host sync).
        state.mix_after_sampling(plan, raw, output)
        return output

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._base, name, value)


def _record_sampler_distribution(sampler: Any, state: V2MoIState) -> None:
    """The sampling prior needs the logits V2 samples from: ``apply_sampling_params`` with
    ``skip_top_k_top_p=True`` returns them after temperature and min-p (top-k / top-p are then
    applied to the candidates, as on V1)."""
    original = getattr(sampler, "apply_sampling_params", None)
    if original is None:
        return

    def apply_sampling_params(logits, *args, **kwargs):
        processed = original(logits, *args, **kwargs)
        if kwargs.get("skip_top_k_top_p"):
            state.record_processed(processed)
        return processed

    sampler.apply_sampling_params = apply_sampling_params


def v2_unsupported_reason(vllm_config: Any) -> str | None:
    """Why a V2 engine cannot serve MoI requests, or None (checked in every process)."""
    from mixinputs.vllm_plugin.patches.model_runner import unsupported_reason

    reason = unsupported_reason(vllm_config)
    if reason is not None:
        return reason
    if getattr(vllm_config, "watermark_config", None) is not None:
        return "watermarking is on (it replaces vLLM's sampler)"
    parallel = getattr(vllm_config, "parallel_config", None)
    if getattr(parallel, "enable_batch_sharded_sampling", False):
        return "batch-sharded sampling is on (each rank samples only part of the batch)"
    model_config = getattr(vllm_config, "model_config", None)
    if getattr(model_config, "runner_type", "generate") != "generate":
        return "this is not a generative model"
    return None


def runs_eagerly(vllm_config: Any) -> bool:
    """True when the forward is neither compiled nor captured in CUDA graphs, so the embedding
    wrapper may scatter a different number of replay rows each step."""
    if getattr(getattr(vllm_config, "model_config", None), "enforce_eager", False):
        return True
    compilation = getattr(vllm_config, "compilation_config", None)
    mode = getattr(compilation, "mode", None)
    graphs = getattr(compilation, "cudagraph_mode", None)
    return mode is not None and int(mode) == 0 and (graphs is None or int(graphs.value) == 0)


def wrap_model_state(
    inner: Any, vllm_config: Any, model: Any, device: Any, settings: PluginSettings
) -> Any:
    """The model state V2 will use: ``inner`` with MoI, or ``inner`` itself when this engine
    cannot mix (the front end then refuses MoI requests with the same reason)."""
    reason = v2_unsupported_reason(vllm_config)
    if reason is not None:
        logger.warning("mixinputs: MoI is off for this engine: %s", reason)
        return inner
    parent, attr, base = find_input_embedding(model)
    replay_rows = None if runs_eagerly(vllm_config) else settings.replay_rows
    embed = MixedInputEmbedding(base, inner.max_num_reqs, inner.max_num_tokens, None, replay_rows)
    setattr(parent, attr, embed)
    state = V2MoIState(embed, settings.default, settings.max_top_k)
    if getattr(device, "type", str(device)) == "cuda":
        logger.warning(
            "mixinputs: MoI on Model Runner V2 is not yet verified on GPUs (CUDA graphs, async "
            "scheduling); unset VLLM_USE_V2_MODEL_RUNNER to use the V1 runner, which is"
        )
    logger.info(
        "mixinputs: MoI ready on Model Runner V2 (%s; embedding %s.%s, %d slot rows, %d replay "
        "rows a step; %.2f MiB added; default: %s)",
        type(inner).__name__,
        type(parent).__name__,
        attr,
        inner.max_num_reqs,
        embed.replay_rows,
        embed.extra_bytes() / 2**20,
        settings.default or "standard unless a request asks",
    )
    return MoIModelState(inner, state)
