"""Patch: bad MoI request fields are rejected in the front end, before the engine sees them.

Why: a bad ``mixinputs_*`` value must come back to its sender (HTTP 400 from the server, a
    ``ValueError`` from ``LLM.generate``) and never reach, let alone stop, the engine.
How: wrap ``InputProcessor.process_inputs`` (process 0) to parse ``SamplingParams.extra_args``
    with ``MoIConfig.from_request``; errors are raised as ``MoIRequestError``, which is both
    vLLM's ``VLLMValidationError`` (mapped to HTTP 400) and a ``ValueError``. A think-end token
    given as text (``mixinputs_think_end``, default ``</think>``) is looked up in the front end's
    tokenizer here and written as its id into the request's own copy of the sampling params
    (``EngineCoreRequest.sampling_params``; the caller's object is never touched), so workers
    need no tokenizer.
Upstream: a validation hook for ``extra_args`` in vLLM would remove this patch.
"""

from __future__ import annotations

from typing import Any

from mixinputs.config import (
    DEFAULT_THINK_END,
    KEY_REGION,
    KEY_THINK_END,
    KEY_TOP_K,
    MoIConfig,
    MoIConfigError,
)
from mixinputs.vllm_plugin.patches import wrap_method
from mixinputs.vllm_plugin.settings import PluginSettings


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


def check_request(
    params: Any, settings: PluginSettings, engine_refusal: str | None
) -> MoIConfig | None:
    """Raise ``MoIRequestError`` naming the key when a request's MoI fields are unusable;
    otherwise the request's config (None: standard decoding)."""
    extra = getattr(params, "extra_args", None)
    asks = bool(extra) and any(str(k).startswith("mixinputs_") for k in extra)
    if not asks and (settings.default is None or engine_refusal is None):
        return None  # standard decoding, or the valid engine-wide default on an engine that mixes
    try:
        config = MoIConfig.from_request(extra, settings.default)
    except MoIConfigError as e:
        raise MoIRequestError(str(e)) from None
    if config is None:
        return None
    if engine_refusal is not None:
        raise MoIRequestError(f"this engine cannot serve MoI requests: {engine_refusal}")
    if config.top_k is None or config.top_k > settings.max_top_k:
        raise MoIRequestError(
            f"{KEY_TOP_K}={config.top_k} is out of range: this engine allows 1 to "
            f"{settings.max_top_k} (start it with MIXINPUTS_MAX_TOP_K=<K> for more)"
        )
    return config


def think_end_id(config: MoIConfig, tokenizer: Any, vocab_size: int | None) -> int:
    """The think-end token's id: given as one, or the text looked up as exactly one token."""
    value = config.think_end
    if isinstance(value, int):
        token = value
    elif tokenizer is None:
        raise MoIRequestError(
            f"{KEY_REGION}='thinking' needs the think-end token, and this engine has no "
            f"tokenizer to look up {value!r}: pass its id as {KEY_THINK_END}"
        )
    else:
        ids = tokenizer.encode(value, add_special_tokens=False)
        if len(ids) != 1:
            hint = " (is this a reasoning model?)" if value == DEFAULT_THINK_END else ""
            raise MoIRequestError(
                f"{KEY_THINK_END}={value!r} is {len(ids)} tokens in this model's tokenizer, not "
                f"one{hint}: name the model's think-end token, or pass its id"
            )
        token = int(ids[0])
    if vocab_size is not None and token >= vocab_size:
        raise MoIRequestError(
            f"{KEY_THINK_END}={token} is not a token of this model (vocabulary size {vocab_size})"
        )
    return token


def apply(settings: PluginSettings, engine_refusal) -> None:
    """``engine_refusal(vllm_config) -> str | None`` says why an engine cannot mix at all."""
    from vllm.v1.engine.input_processor import InputProcessor

    def make(original):
        def process_inputs(self, request_id, prompt, params, *args, **kwargs):
            # The engine's configuration is fixed: ask once per front end, not per request.
            if "_mixinputs_refusal" not in self.__dict__:
                self._mixinputs_refusal = engine_refusal(self.vllm_config)
            config = check_request(params, settings, self._mixinputs_refusal)
            think_end = None
            if config is not None and config.needs_think_end:
                think_end = think_end_id(config, self.tokenizer, _vocab_size(self))
            request = original(self, request_id, prompt, params, *args, **kwargs)
            if think_end is not None:  # the request's own copy of the params, read by workers
                own = request.sampling_params
                own.extra_args = {**(own.extra_args or {}), KEY_THINK_END: think_end}
            return request

        return process_inputs

    wrap_method(InputProcessor, "process_inputs", make)


def _vocab_size(processor: Any) -> int | None:
    try:
        return int(processor.vllm_config.model_config.get_vocab_size())
    except Exception:  # an unusual config: the worker still checks the id against its logits
        return None
