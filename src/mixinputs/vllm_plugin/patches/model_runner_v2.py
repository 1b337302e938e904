"""Patch: Model Runner V2 feeds each MoI request's mixture instead of its sampled token.

Why: vLLM picks Model Runner V2 (``vllm/v1/worker/gpu/``) on CUDA from 0.32 (0.26+ for the common
    architectures), and it is the only runner from 0.34; the V1 runner's hooks do nothing there.
    The plugin follows whichever runner vLLM picks and never sets ``VLLM_USE_V2_MODEL_RUNNER``.
How: V2 asks ``init_model_state`` (imported by name into ``vllm.v1.worker.gpu.model_runner``) for
    the model's ``ModelState`` right after loading the weights. That name is re-bound to a
    wrapper returning ``v2_model_state.MoIModelState`` around the state vLLM picked: it swaps the
    token embedding, keeps MoI settings in V2's request slots, plans each step in
    ``prepare_inputs``, wraps the sampler through ``custom_sampler`` and, in vLLM's memory
    profile, runs MoI's worst step (``dummy_sampler_run`` from 0.34; before it, the runner's
    ``_dummy_sampler_run`` is wrapped for the same purpose). ``finish_requests`` is wrapped to
    tell a preempted request (its mixture history is kept for the replay when V2 re-adds it
    with its full token history) from a finished one. The CPU V2 runner subclasses the GPU one
    and inherits all of it. Names and signatures are read from each release's source (0.26 to
    0.34: ``source_checks``).
Upstream: a registry for ``ModelState`` wrappers (or an input-embedding hook) in V2 would remove
    the re-binding; a "preempted" flag on ``ModelState.remove_request`` the ``finish_requests``
    wrapper.
"""

from __future__ import annotations

import importlib
import logging

from mixinputs.vllm_plugin import compat
from mixinputs.vllm_plugin.patches import mark_original, original_of, wrap_method
from mixinputs.vllm_plugin.settings import PluginSettings

logger = logging.getLogger("vllm.mixinputs")
RUNNER_MODULE = compat.V2_RUNNER_MODULE
INTERFACE_MODULE = "vllm.v1.worker.gpu.model_states.interface"


def apply(settings: PluginSettings) -> None:
    runner_module = importlib.import_module(RUNNER_MODULE)
    from mixinputs.vllm_plugin.v2_model_state import MoIModelState, wrap_model_state

    original = runner_module.init_model_state
    if original_of(original) is None:

        def init_model_state(vllm_config, model, encoder_cache, device, *args, **kwargs):
            inner = original(vllm_config, model, encoder_cache, device, *args, **kwargs)
            return wrap_model_state(inner, vllm_config, model, device, settings)

        mark_original(init_model_state, original)
        runner_module.init_model_state = init_model_state

    def make_finish_requests(original_finish):
        def finish_requests(self, scheduler_output, *args, **kwargs):
            model_state = getattr(self, "model_state", None)
            if not isinstance(model_state, MoIModelState):
                return original_finish(self, scheduler_output, *args, **kwargs)
            moi = model_state.mixinputs
            moi.preempting = frozenset(getattr(scheduler_output, "preempted_req_ids", None) or ())
            try:
                return original_finish(self, scheduler_output, *args, **kwargs)
            finally:
                moi.preempting = frozenset()
                finished = getattr(scheduler_output, "finished_req_ids", None) or ()
                moi.state.contained("forgetting finished requests", moi.state.forget, finished)

        return finish_requests

    wrap_method(runner_module.GPUModelRunner, "finish_requests", make_finish_requests)
    if not _has_dummy_sampler_hook():  # vLLM 0.26 to 0.33

        def make_dummy_sampler_run(original_run):
            def _dummy_sampler_run(self, *args, **kwargs):
                model_state = getattr(self, "model_state", None)
                if isinstance(model_state, MoIModelState):
                    model_state.mixinputs.arm_profile()
                return original_run(self, *args, **kwargs)

            return _dummy_sampler_run

        wrap_method(runner_module.GPUModelRunner, "_dummy_sampler_run", make_dummy_sampler_run)


def _has_dummy_sampler_hook() -> bool:
    """Whether V2's ``ModelState`` has ``dummy_sampler_run`` (vLLM 0.34+)."""
    interface = importlib.import_module(INTERFACE_MODULE)
    return hasattr(interface.ModelState, "dummy_sampler_run")
