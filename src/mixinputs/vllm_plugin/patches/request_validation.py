"""Patch: a request's MoI fields are validated and resolved once, in the front end.

Why: a bad ``mixinputs_*`` value must come back to its sender (HTTP 400 from the server, streamed
    or not; a ``ValueError`` from ``LLM.generate``) and never reach, let alone stop, the engine.
    And everything behind the front end (engine core, workers) should read one resolved form
    instead of parsing the request again in every process.
How: wrap ``InputProcessor.process_inputs`` (process 0; every request passes it) to resolve the
    request: parse ``SamplingParams.extra_args`` with ``MoIConfig.from_request`` (falling back to
    ``MIXINPUTS_BETA``'s default), refuse it when this engine cannot mix or K exceeds the
    engine's limit, look token settings' text up in the tokenizer (``tokens.resolve_tokens``),
    and write
    ``MoIConfig.to_resolved()`` under ``KEY_RESOLVED`` into the engine's own copy of the
    sampling params (``EngineCoreRequest.sampling_params``; the caller's object is untouched).
    Errors are ``MoIRequestError``: both vLLM's ``VLLMValidationError`` (HTTP 400) and a
    ``ValueError``. The server only calls ``process_inputs`` once its response has started to
    stream, so ``AsyncLLM.generate`` is wrapped too: it resolves the request when it is called,
    before the server returns a stream, and ``process_inputs`` then reuses that resolution.
Upstream: a validation hook for ``extra_args`` in vLLM (run before a stream starts) would remove
    this patch.
"""

from __future__ import annotations

from typing import Any

from mixinputs.config import KEY_RESOLVED, KEY_TOP_K, MoIConfig, MoIConfigError
from mixinputs.core.rows import max_width
from mixinputs.tokens import resolve_tokens
from mixinputs.vllm_plugin import status
from mixinputs.vllm_plugin.patches import wrap_method
from mixinputs.vllm_plugin.settings import PluginSettings

_CACHE = "_mixinputs_resolution"  # on a SamplingParams: (its mixinputs_* fields, resolution)


def _error_class() -> type[Exception]:
    try:
        from vllm.exceptions import VLLMValidationError
    except ImportError:  # older layouts: a plain ValueError is what vLLM raised there
        return MoIConfigError
    if issubclass(VLLMValidationError, ValueError):
        return VLLMValidationError
    return type(
        "MoIRequestError",
        (VLLMValidationError, MoIConfigError),
        {
            "__doc__": "A bad mixinputs_* request field (HTTP 400; also a ValueError).",
            "__module__": __name__,
        },
    )


MoIRequestError = _error_class()


def request_error(message: str, key: str | None = None) -> Exception:
    """A ``MoIRequestError`` whose HTTP 400 names the offending key in ``param`` (``key``, else
    the first ``mixinputs_*`` key the message names); an unknown key gets a "did you mean".
    A vLLM whose error class takes no ``parameter`` gets the message alone."""
    import re

    from mixinputs.config import REQUEST_KEYS, did_you_mean

    if key is None:
        found = re.search(r"mixinputs_\w+", message)
        key = found.group(0) if found else None
    if key is not None and key not in REQUEST_KEYS and "unknown request key" in message:
        message += did_you_mean(key, REQUEST_KEYS)
    if key is not None:
        try:
            return MoIRequestError(message, parameter=key)
        except TypeError:  # MoIConfigError, or an error class without ``parameter``
            pass
    return MoIRequestError(message)


def check_request(
    params: Any, settings: PluginSettings, engine_refusal: str | None
) -> MoIConfig | None:
    """The request's config (None: standard decoding), or ``MoIRequestError`` naming the key
    when its MoI fields are unusable on this engine."""
    extra = getattr(params, "extra_args", None)
    asks = bool(extra) and any(str(k).startswith("mixinputs_") for k in extra)
    if not asks and settings.default is None:
        return None
    try:
        config = MoIConfig.from_request(extra, settings.default)
    except MoIConfigError as e:
        raise request_error(str(e)) from None
    if config is None:
        return None
    if engine_refusal is not None:  # also MIXINPUTS_BETA's default: every request asks then
        raise MoIRequestError(f"this engine cannot serve MoI requests: {engine_refusal}")
    limit = settings.max_top_k
    if config.top_k is None or config.top_k > limit:
        raise request_error(
            f"{KEY_TOP_K}={config.top_k} is out of range: this engine allows 1 to "
            f"{limit} (start it with MIXINPUTS_MAX_TOP_K=<K> for more)",
            KEY_TOP_K,
        )
    # A method's input lives in the engine's K + 1 candidate columns.
    need = max_width(config)
    if need > limit + 1:
        key, value = config.method.width_key, None
        if key is not None:
            value = getattr(config, key)
            message = (
                f"mixinputs_{key}={value} is out of range: this engine allows 1 to {limit + 1} "
                "(start it with MIXINPUTS_MAX_TOP_K=<K> for more)"
            )
        else:
            key = "mode"
            message = (
                f"mode {config.mode!r} needs MIXINPUTS_MAX_TOP_K >= {need - 1} (it feeds {need} "
                f"tokens); this engine has {limit}"
            )
        raise request_error(message, f"mixinputs_{key}")
    return config


def resolve(processor: Any, params: Any, settings: PluginSettings, engine_refusal) -> dict | None:
    """The request's resolved config (``MoIConfig.to_resolved()``), or None for standard
    decoding; ``MoIRequestError`` for a bad one. Computed once per request: kept on ``params``
    (a Python attribute, which no client can send and vLLM never serializes) together with the
    fields it was computed from."""
    extra = getattr(params, "extra_args", None) or {}
    fields = {k: v for k, v in extra.items() if str(k).startswith("mixinputs_")}
    cached = getattr(params, "__dict__", {}).get(_CACHE)
    if cached is not None and cached[0] == fields:
        if cached[1] is not None:  # the engine may have turned MoI off since
            _refuse_if_off(processor, engine_refusal)
        return cached[1]
    config = check_request(params, settings, None)
    if config is not None:
        _refuse_if_off(processor, engine_refusal)
    resolved = None
    if config is not None and config.method.dense and _tensor_parallel(processor) > 1:
        raise request_error(
            f"mode {config.mode!r} feeds p·E over the whole vocabulary from the plain embedding "
            "matrix, which this engine shards (tensor parallel): serve it with "
            "tensor_parallel_size 1",
            "mixinputs_mode",
        )
    if config is not None:
        try:
            config = resolve_tokens(config, processor.tokenizer, _vocab_size(processor))
        except MoIConfigError as e:
            raise request_error(str(e)) from None
        resolved = config.to_resolved()
    if hasattr(params, "__dict__"):
        params.__dict__[_CACHE] = (fields, resolved)
    return resolved


def engine_refusal_of(processor: Any, engine_refusal) -> str | None:
    """Why this front end's engine cannot mix, or None: its configuration (read once per front
    end: it is fixed) and what its workers said last (``status``)."""
    if "_mixinputs_refusal" not in processor.__dict__:
        processor._mixinputs_refusal = engine_refusal(processor.vllm_config)
    if processor._mixinputs_refusal is not None:
        return processor._mixinputs_refusal
    cell = status.cell_of(processor)
    return None if cell is None else cell.current()


def _refuse_if_off(processor: Any, engine_refusal) -> None:
    reason = engine_refusal_of(processor, engine_refusal)
    if reason is not None:
        raise MoIRequestError(f"this engine cannot serve MoI requests: {reason}")


def apply(settings: PluginSettings, engine_refusal) -> None:
    """``engine_refusal(vllm_config) -> str | None`` says why an engine cannot mix at all."""
    from vllm.v1.engine.input_processor import InputProcessor

    def make_process_inputs(original):
        def process_inputs(self, request_id, prompt, params, *args, **kwargs):
            resolved = resolve(self, params, settings, engine_refusal)
            request = original(self, request_id, prompt, params, *args, **kwargs)
            if resolved is not None:  # the request's own copy of the params, read by the engine
                own = request.sampling_params
                own.extra_args = {**(own.extra_args or {}), KEY_RESOLVED: resolved}
            return request

        return process_inputs

    wrap_method(InputProcessor, "process_inputs", make_process_inputs)
    try:
        from vllm.v1.engine.async_llm import AsyncLLM
    except ImportError:  # a build without the async engine: offline use only
        return

    def make_generate(original):
        # ``generate`` is an async generator function: calling it runs nothing until the server
        # iterates it, inside a response that has already started (HTTP 200). Resolve first.
        def generate(self, prompt, sampling_params, *args, **kwargs):
            processor = getattr(self, "input_processor", None)
            resolved = None
            if processor is not None and hasattr(sampling_params, "extra_args"):
                resolved = resolve(processor, sampling_params, settings, engine_refusal)
            stream = original(self, prompt, sampling_params, *args, **kwargs)
            cell = status.cell_of(processor) if resolved is not None else None
            if cell is not None and not cell.known:
                return _after_first_status(stream, cell, processor, engine_refusal)
            return stream

        return generate

    wrap_method(AsyncLLM, "generate", make_generate)


async def _after_first_status(stream, cell, processor, engine_refusal):
    """A MoI request that reached a just-built ``AsyncLLM`` before its workers' first status
    answer waits for it (then a refusal is an error of the stream, not yet a 400)."""
    try:
        await cell.wait()
        _refuse_if_off(processor, engine_refusal)
        async for item in stream:
            yield item
    finally:
        await stream.aclose()


def _tensor_parallel(processor: Any) -> int:
    parallel = getattr(processor.vllm_config, "parallel_config", None)
    return int(getattr(parallel, "tensor_parallel_size", 1) or 1)


def _vocab_size(processor: Any) -> int | None:
    try:
        return int(processor.vllm_config.model_config.get_vocab_size())
    except Exception:  # an unusual config: the worker still checks the id against its logits
        return None
