"""Patch: MoI runs on vLLM's V1 model runner; a V2 runner never silently ignores MoI.

Why: vLLM 0.32+ picks Model Runner V2 on every CUDA machine, and the V1 hooks do nothing there.
How: when the user has not chosen (``VLLM_USE_V2_MODEL_RUNNER`` unset), set it to ``0`` in
    process 0 before the engine config exists; the engine and workers inherit it, and the log
    says so. A user who sets ``VLLM_USE_V2_MODEL_RUNNER=1`` keeps V2: MoI requests are then
    refused in the front end, and V2's ``add_requests`` raises if one ever reaches it.
Upstream: MoI support in Model Runner V2 (``ModelState.prepare_inputs_embeds`` /
    ``postprocess_state``) would replace this patch.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from mixinputs.config import MoIConfig, MoIConfigError
from mixinputs.vllm_plugin.patches import wrap_method
from mixinputs.vllm_plugin.settings import PluginSettings

logger = logging.getLogger("vllm.mixinputs")
ENV = "VLLM_USE_V2_MODEL_RUNNER"


def select_v1_runner() -> None:
    if os.environ.get(ENV) is None:
        os.environ[ENV] = "0"
        logger.info(
            "mixinputs: using vLLM's V1 model runner (MoI hooks it); set %s=1 to keep "
            "Model Runner V2 without MoI",
            ENV,
        )


def uses_v2_runner(vllm_config: Any) -> bool:
    try:
        return bool(vllm_config.use_v2_model_runner)
    except Exception:  # older releases without the property: always V1
        return False


def apply(settings: PluginSettings) -> None:
    import importlib

    def make(original):
        def add_requests(self, scheduler_output, *args, **kwargs):
            for new in scheduler_output.scheduled_new_reqs:
                params = getattr(new, "sampling_params", None)
                try:
                    moi = (
                        params is not None
                        and MoIConfig.from_request(params.extra_args, settings.default) is not None
                    )
                except MoIConfigError:
                    moi = True
                if moi:
                    raise RuntimeError(
                        f"mixinputs: request {new.req_id} asks for MoI but Model Runner V2 is "
                        f"serving it, which MoI does not hook; unset {ENV} (or set it to 0)"
                    )
            return original(self, scheduler_output, *args, **kwargs)

        return add_requests

    for name in ("vllm.v1.worker.gpu.model_runner", "vllm.v1.worker.cpu.model_runner"):
        try:
            module = importlib.import_module(name)
        except Exception:  # not in this release, or needs a GPU library this build lacks
            continue
        for owner in vars(module).values():
            if isinstance(owner, type) and "add_requests" in owner.__dict__:
                wrap_method(owner, "add_requests", make)
