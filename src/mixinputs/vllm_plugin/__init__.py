"""The vLLM plugin: MoI per request in vLLM's engine (both model runners), offline and served.

vLLM calls :func:`register` in every process it starts (the ``vllm.general_plugins`` entry
point), so nothing needs ``import mixinputs`` or a code change. A request turns MoI on with
``SamplingParams(extra_args={"mixinputs_beta": 1.0})`` (server: ``"vllm_xargs"``), and
``MIXINPUTS_BETA`` makes MoI every request's default, as in the original release.

>>> from vllm import LLM, SamplingParams                          # doctest: +SKIP
>>> llm.generate(prompts, SamplingParams(extra_args={"mixinputs_beta": 1.0}))  # doctest: +SKIP
"""

from __future__ import annotations

import logging

logger = logging.getLogger("vllm.mixinputs")

_registered = False


def register() -> None:
    """Install the patches in this process (idempotent, cheap after the first call).

    Raises ``MoIConfigError`` for a malformed ``MIXINPUTS_BETA`` / ``MIXINPUTS_MAX_TOP_K``, and
    ``UnsupportedVLLMVersion`` when ``MIXINPUTS_BETA`` asks for MoI on a vLLM the plugin was not
    built for; otherwise an unsupported vLLM only gets a loud error in the log and keeps working.
    """
    global _registered
    if _registered:
        return
    from mixinputs.vllm_plugin import compat
    from mixinputs.vllm_plugin.settings import PluginSettings

    settings = PluginSettings.from_env()  # a malformed variable stops the engine start here
    version = compat.vllm_version()
    if not compat.is_supported(version):
        error = compat.UnsupportedVLLMVersion(
            f"mixinputs supports {compat.SUPPORTED_TEXT}; this is vLLM {version}, so MoI is off "
            "and requests that ask for it are refused"
        )
        if settings.default is not None:
            raise error
        logger.error("%s", error)
        _refuse_moi_requests(settings, str(error))
        _registered = True
        return

    from mixinputs.vllm_plugin.attach import refusal_reason
    from mixinputs.vllm_plugin.patches import (
        compile_cache,
        model_runner,
        model_runner_v2,
        prefix_cache,
        request_validation,
    )

    model_runner_v2.select_v1_runner()
    request_validation.apply(settings, refusal_reason)
    prefix_cache.apply()
    compile_cache.apply()
    model_runner.apply(settings)
    model_runner_v2.apply(settings)
    _registered = True
    logger.debug("mixinputs: plugin registered on vLLM %s (default: %s)", version, settings.default)


def _refuse_moi_requests(settings, reason: str) -> None:
    try:
        from mixinputs.vllm_plugin.patches import request_validation

        request_validation.apply(settings, lambda _config: reason)
    except Exception:  # an unknown layout: the log line above is all we can do
        logger.exception("mixinputs: could not install the request guard on this vLLM")
