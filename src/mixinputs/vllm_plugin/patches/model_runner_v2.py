"""Patch: Model Runner V2 feeds each MoI request's mixture instead of its sampled token.

Why: vLLM 0.32+ runs every model on Model Runner V2 (``vllm/v1/worker/gpu/``) on CUDA machines
    (0.26+ for the common architectures), and the V1 runner's hooks do nothing there.
How: V2 asks ``init_model_state`` (imported by name into ``vllm.v1.worker.gpu.model_runner``) for
    the model's ``ModelState`` right after loading the weights. That name is re-bound to a
    wrapper returning ``v2_model_state.MoIModelState`` around the state vLLM picked: it swaps the
    token embedding, keeps MoI settings in V2's request slots, plans each step in
    ``prepare_inputs`` and wraps the sampler through ``custom_sampler``. ``finish_requests`` is
    wrapped to tell a preempted request (its mixture history is kept for the replay when V2
    re-adds it with its full token history) from a finished one. The CPU V2 runner subclasses
    the GPU one and inherits both. Names and signatures are the same in vLLM 0.26, 0.32 and 0.33
    (``tests/test_vllm_v2_compat.py`` reads each release's source).
    Verified on the CPU V2 runner only: until it is verified on GPUs, the plugin keeps selecting
    V1 on engines where the user did not choose (``VLLM_USE_V2_MODEL_RUNNER`` unset); a user who
    sets ``VLLM_USE_V2_MODEL_RUNNER=1`` gets MoI on V2, and the log says it is not yet verified.
Upstream: a registry for ``ModelState`` wrappers (or an input-embedding hook) in V2 would remove
    the re-binding; a "preempted" flag on ``ModelState.remove_request`` the ``finish_requests``
    wrapper.
"""

from __future__ import annotations

import importlib
import logging
import os

from mixinputs.vllm_plugin.patches import mark_original, original_of, wrap_method
from mixinputs.vllm_plugin.settings import PluginSettings

logger = logging.getLogger("vllm.mixinputs")
ENV = "VLLM_USE_V2_MODEL_RUNNER"
RUNNER_MODULE = "vllm.v1.worker.gpu.model_runner"


def select_v1_runner() -> None:
    """Keep V1 where the user has not chosen: MoI on V2 is not yet verified on GPUs."""
    if os.environ.get(ENV) is None:
        os.environ[ENV] = "0"
        logger.info(
            "mixinputs: using vLLM's V1 model runner; MoI on Model Runner V2 works on the CPU V2 "
            "runner but is not yet verified on GPUs: set %s=1 to use it",
            ENV,
        )


def apply(settings: PluginSettings) -> None:
    try:
        runner_module = importlib.import_module(RUNNER_MODULE)
    except Exception:  # a build without V2 (or without a library it needs): nothing to hook
        logger.debug("mixinputs: no Model Runner V2 in this vLLM build", exc_info=True)
        return
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
                moi.state.forget(getattr(scheduler_output, "finished_req_ids", None) or ())

        return finish_requests

    wrap_method(runner_module.GPUModelRunner, "finish_requests", make_finish_requests)
