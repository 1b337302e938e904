"""MoI on Model Runner V2: a ``ModelState`` that wraps the one vLLM picked, and a sampler wrapper.

V2 puts everything model-specific behind ``ModelState`` (``vllm/v1/worker/gpu/model_states``).
``MoIModelState`` delegates every attribute to the state vLLM chose for the model (default,
Mamba hybrid, encoder-decoder, ...) and adds MoI at these of its hooks, each named here on
purpose (the rest reach the wrapped state through ``__getattr__``):

- construction (``wrap_model_state``, right after the model is loaded, before memory profiling
  and graph capture): swap the token embedding for ``MixedInputEmbedding`` (``attach.attach``);
- ``add_request`` / ``remove_request``: a request's MoI settings live in its V2 slot;
- ``prepare_inputs`` (every real and dummy step, before the forward): plan where mixtures go;
  ``prepare_dummy_inputs`` (graph capture): clear the plan, so captures see no stale positions;
- ``custom_sampler``: wrap V2's sampler in ``MoISampler``, which runs ``MoIStepState.sample``;
- ``dummy_sampler_run`` (vLLM 0.34+, memory profiling): the next sampler call runs MoI's worst
  step (``worst_case.py``); before 0.34 the patch arms it from the runner's ``_dummy_sampler_run``;
- ``compute_sample_logits`` (0.34+): the wrapped state's logits, unchanged: ``MoISampler`` reads
  the logits the sampler receives, whoever projected them;
- ``capture_inner_cudagraphs`` (its ``stream`` argument from 0.34): passed through unchanged;
  MoI captures nothing of its own (its buffers are written between graph replays).

>>> MoIModelState.__mro__[1] is object   # delegation, not inheritance: any ModelState fits
True
"""

from __future__ import annotations

import logging
from typing import Any

from mixinputs.vllm_plugin.attach import attach, failed
from mixinputs.vllm_plugin.settings import PluginSettings
from mixinputs.vllm_plugin.step_state import MoIStepState
from mixinputs.vllm_plugin.v2_state import V2MoI

logger = logging.getLogger("vllm.mixinputs")


class MoIModelState:
    """A V2 ``ModelState`` with MoI; everything else is the wrapped state's."""

    def __init__(self, inner: Any, moi: V2MoI):
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "mixinputs", moi)

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
        self.mixinputs.plan(input_batch, req_states)
        return model_inputs

    def prepare_dummy_inputs(self, num_reqs: int, num_tokens: int) -> dict[str, Any]:
        self.mixinputs.state.clear()
        return self._inner.prepare_dummy_inputs(num_reqs, num_tokens)

    def custom_sampler(self, sampler: Any) -> tuple[Any, Any] | None:
        custom = self._inner.custom_sampler(sampler)
        if custom is not None:  # the model brings its own sampler: MoI cannot sit around it
            self.mixinputs.state.disable(
                f"{type(self._inner).__name__} replaces vLLM's sampler (custom_sampler)"
            )
            return custom
        return MoISampler(sampler, self.mixinputs.state), None

    def compute_sample_logits(self, hidden_states: Any) -> Any:
        return self._inner.compute_sample_logits(hidden_states)

    def dummy_sampler_run(self, sampler: Any, hidden_states: Any) -> bool:
        # Armed first: if the wrapped state runs its own profiling pass through the sampler, or
        # returns False and the runner's default pass follows, MoI's worst step is in it.
        self.mixinputs.arm_profile()
        return self._inner.dummy_sampler_run(sampler, hidden_states)

    def capture_inner_cudagraphs(self, *args: Any, **kwargs: Any) -> None:
        return self._inner.capture_inner_cudagraphs(*args, **kwargs)


class MoISampler:
    """V2's sampler, plus the mixtures of the MoI rows' sampled tokens.

    Called as ``sampler(logits [num_reqs, V], input_batch) -> SamplerOutput``; every other
    attribute (``add_request``, ``sampling_states``, ``penalties_state``, ...) is the wrapped
    sampler's.
    """

    def __init__(self, base: Any, state: MoIStepState):
        object.__setattr__(self, "_base", base)
        object.__setattr__(self, "mixinputs", state)
        state.contained(
            "hooking the sampler's distribution", _record_sampler_distribution, base, state
        )

    def __call__(self, logits: Any, input_batch: Any, *args: Any, **kwargs: Any) -> Any:
        state = self.mixinputs

        def run(lg):
            return self._base(lg, input_batch, *args, **kwargs)

        if state.profile_next:  # vLLM's memory profile: the dummy call runs MoI's worst step
            state.profile_next = False
            from mixinputs.vllm_plugin.worst_case import profile

            return profile(state, run, logits)
        # V2's sampler may edit ``logits`` in place (0.26 does): the raw rows are copied.
        return state.sample(run, logits, token=input_batch)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._base, name, value)


def _record_sampler_distribution(sampler: Any, state: MoIStepState) -> None:
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


def wrap_model_state(
    inner: Any, vllm_config: Any, model: Any, device: Any, settings: PluginSettings
) -> Any:
    """The model state V2 will use: ``inner`` with MoI, or ``inner`` itself when this engine
    cannot mix (the front end then refuses MoI requests with the same reason)."""
    try:
        num_slots, num_tokens = inner.max_num_reqs, inner.max_num_tokens
    except Exception as e:  # a ModelState without V2's sizes: not one MoI knows
        return failed(f"reading {type(inner).__name__}'s sizes", e, settings) or inner
    state = attach(model, vllm_config, num_slots, num_tokens, settings, "Model Runner V2")
    if state is None:
        return inner
    return MoIModelState(inner, V2MoI(state))
