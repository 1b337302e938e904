"""Patch: a ``mixinputs_*`` key at the top level of an OpenAI request is an HTTP 400.

Why: the server reads MoI settings from ``vllm_xargs`` only. The OpenAI request models accept
    any other field (``extra="allow"``) and drop it with a DEBUG log line, so a body such as
    ``{"prompt": ..., "mixinputs_beta": 1}`` (what ``extra_body={"mixinputs_beta": 1}`` sends with
    the openai client, the easiest mistake there is) got standard decoding with an HTTP 200: a
    "MoI" result that is not one, and nothing said.
How: wrap ``to_sampling_params`` of ``CompletionRequest`` and ``ChatCompletionRequest`` (and
    ``to_beam_search_params``): the serving code calls it for every request, streamed or not,
    before it hands the engine anything and before any response starts. When the request's
    extra fields (``model_extra``) hold ``mixinputs_*`` keys, it raises the plugin's
    ``MoIRequestError`` (vLLM's ``VLLMValidationError``: HTTP 400, ``param`` the key) saying
    they go inside ``vllm_xargs``. Idempotent; a vLLM without these classes or methods keeps
    serving (one log line says the guard is missing).
Upstream: a way for plugins to declare request fields (or an option to refuse unknown fields
    with a 400 instead of ignoring them) would remove this patch.
"""

from __future__ import annotations

import logging
from typing import Any

from mixinputs.vllm_plugin.patches import wrap_method

logger = logging.getLogger("vllm.mixinputs")

_PREFIX = "mixinputs_"
# Where the request models live: vLLM 0.26 and later, then the older single module.
_CLASSES = (
    ("vllm.entrypoints.openai.completion.protocol", "CompletionRequest"),
    ("vllm.entrypoints.openai.chat_completion.protocol", "ChatCompletionRequest"),
    ("vllm.entrypoints.openai.protocol", "CompletionRequest"),
    ("vllm.entrypoints.openai.protocol", "ChatCompletionRequest"),
)
_METHODS = ("to_sampling_params", "to_beam_search_params")


def top_level_keys(request: Any) -> list[str]:
    """The ``mixinputs_*`` keys a request model holds outside ``vllm_xargs``.

    >>> from types import SimpleNamespace
    >>> top_level_keys(SimpleNamespace(model_extra={"mixinputs_beta": 1, "foo": 2}))
    ['mixinputs_beta']
    """
    extra = getattr(request, "model_extra", None) or {}
    return sorted(k for k in extra if isinstance(k, str) and k.startswith(_PREFIX))


def refusal(keys: list[str]) -> str:
    """What the 400 says.

    >>> refusal(["mixinputs_beta"])[:60]
    'mixinputs_beta is a top-level field of this request, where '
    """
    key = keys[0]
    one = len(keys) == 1
    return (
        f"{', '.join(keys)} {'is a top-level field' if one else 'are top-level fields'} of this "
        f"request, where vLLM ignores {'it' if one else 'them'}: mixinputs keys go inside "
        f'vllm_xargs, e.g. {{"vllm_xargs": {{"{key}": ...}}}} (with the openai client: '
        f'extra_body={{"vllm_xargs": {{"{key}": ...}}}})'
    )


def check(request: Any) -> None:
    """Raise the plugin's request error (HTTP 400 naming the key) for top-level MoI keys."""
    keys = top_level_keys(request)
    if keys:
        from mixinputs.vllm_plugin.patches.request_validation import request_error

        raise request_error(refusal(keys), keys[0])


def apply() -> None:
    """Guard each request model's ``to_sampling_params`` (idempotent; never stops a server)."""
    import importlib

    guarded = 0
    for module_name, class_name in _CLASSES:
        try:
            owner = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):
            continue
        for name in _METHODS:
            if name not in vars(owner):
                continue
            try:
                wrap_method(owner, name, _guarded)
                guarded += 1
            except Exception as e:  # an unexpected layout: serve anyway, say what is missing
                logger.warning("mixinputs: cannot guard %s.%s (%s)", class_name, name, e)
    if not guarded:
        logger.warning(
            "mixinputs: this vLLM has no OpenAI request models where expected; mixinputs_* keys "
            "at the top level of a request (instead of inside vllm_xargs) are not refused"
        )


def _guarded(original):
    def method(self, *args, **kwargs):
        check(self)
        return original(self, *args, **kwargs)

    return method
