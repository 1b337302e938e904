"""The vLLM plugin: MoI per request in vLLM's engine (both model runners), offline and served.

vLLM calls :func:`register` in every process it starts (the ``vllm.general_plugins`` entry
point), so nothing needs ``import mixinputs`` or a code change. A request turns MoI on with
``SamplingParams(extra_args={"mixinputs_beta": 1.0})`` (server: ``"vllm_xargs"``), and
``MIXINPUTS_BETA`` makes MoI every request's default, as in the original release.

The plugin follows vLLM: MoI runs on whichever model runner vLLM picks (Model Runner V2 on CUDA
from vLLM 0.32, the only one from 0.34; V1 where vLLM picks it), and no vLLM setting changes.
Whatever of ours fails turns MoI off for that engine only (``status``).

>>> from vllm import LLM, SamplingParams                          # doctest: +SKIP
>>> llm.generate(prompts, SamplingParams(extra_args={"mixinputs_beta": 1.0}))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger("vllm.mixinputs")

_registered = False


def register() -> None:
    """Install the patches in this process (idempotent, cheap after the first call).

    Never breaks vLLM: an unsupported vLLM, a malformed ``MIXINPUTS_*`` variable or a patch that
    cannot be installed turns MoI off with one error line, and the front end refuses MoI
    requests with it. Only when ``MIXINPUTS_BETA`` is set (MoI demanded for every request) is
    it a start-up error: ``MoIConfigError`` for a malformed variable, ``UnsupportedVLLMVersion``
    for an unsupported vLLM, ``MoIStartupError`` otherwise.
    """
    global _registered
    if _registered:
        return
    _registered = True
    from mixinputs.config import ENV_BETA, MoIConfigError
    from mixinputs.vllm_plugin import compat, status
    from mixinputs.vllm_plugin.attach import MoIStartupError
    from mixinputs.vllm_plugin.settings import PluginSettings

    demanded = bool(os.environ.get(ENV_BETA, "").strip())
    try:
        settings = PluginSettings.from_env()
    except MoIConfigError as e:
        if demanded:
            raise
        _turn_off(PluginSettings.fallback(), str(e))
        return
    version = compat.vllm_version()
    if not compat.is_supported(version):
        error = compat.UnsupportedVLLMVersion(
            f"mixinputs supports {compat.SUPPORTED_TEXT}; this is vLLM {version}, so MoI is off "
            "and requests that ask for it are refused"
        )
        if demanded:
            raise error
        _turn_off(settings, str(error), prefix="")
        return
    failed = _install(settings, version)
    if failed is None:
        logger.debug("mixinputs: registered on vLLM %s (default: %s)", version, settings.default)
        return
    if demanded:
        raise MoIStartupError(f"mixinputs: MIXINPUTS_BETA asks for MoI, but {failed}")
    status.record_registration_failure(failed)
    logger.error("mixinputs: MoI is off for this engine: %s", failed)


def _install(settings, version: str) -> str | None:
    """Install every patch; the first failure's description, or None."""
    from mixinputs.vllm_plugin import compat, status
    from mixinputs.vllm_plugin.attach import refusal_reason
    from mixinputs.vllm_plugin.patches import (
        compile_cache,
        engine_status,
        model_runner,
        model_runner_v2,
        openai_request,
        prefix_cache,
        request_validation,
    )

    def refusal(vllm_config):
        return status.registration_failure() or refusal_reason(vllm_config)

    # The request guard first: once it is in, any later failure still refuses MoI requests.
    steps = [
        ("request_validation", lambda: request_validation.apply(settings, refusal)),
        ("openai_request", openai_request.apply),  # never raises: a missing hook is logged
        ("engine_status", engine_status.apply),
        ("prefix_cache", prefix_cache.apply),
        ("compile_cache", compile_cache.apply),
    ]
    if compat.has_v1_runner():  # vLLM 0.26 to 0.33
        steps.append(("model_runner", lambda: model_runner.apply(settings)))
    if compat.has_module(compat.V2_RUNNER_MODULE):
        steps.append(("model_runner_v2", lambda: model_runner_v2.apply(settings)))
    for name, step in steps:
        try:
            step()
        except Exception as e:
            logger.debug("mixinputs: patch %s failed", name, exc_info=True)
            return (
                f"mixinputs could not install its {name} patch on vLLM {version} "
                f"({type(e).__name__}: {e})"
            )
    return None


def _turn_off(
    settings, reason: str, prefix: str = "mixinputs: MoI is off for this engine: "
) -> None:
    """Nothing of MoI is installed; the front end refuses MoI requests with ``reason``."""
    from mixinputs.vllm_plugin import status

    status.record_registration_failure(reason)
    logger.error("%s%s", prefix, reason)
    try:
        from mixinputs.vllm_plugin.patches import request_validation

        request_validation.apply(settings, lambda _config: reason)
    except Exception:  # an unknown layout: the log line above is all we can do
        logger.exception("mixinputs: could not install the request guard on this vLLM")
