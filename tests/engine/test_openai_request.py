"""The server-side guards without a server: top-level ``mixinputs_*`` keys refused, and every
request error naming its key in ``param`` (vLLM's ``VLLMValidationError.parameter``)."""

from __future__ import annotations

import logging

import pytest

pytest.importorskip("vllm")

from mixinputs.vllm_plugin.patches import openai_request
from mixinputs.vllm_plugin.patches import request_validation as rv


def test_a_top_level_key_is_refused_where_the_server_builds_the_request():
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest

    openai_request.apply()
    openai_request.apply()  # idempotent
    request = CompletionRequest(model="m", prompt="x", mixinputs_beta=1.0)
    with pytest.raises(ValueError) as err:
        request.to_sampling_params(8, {})
    assert err.value.parameter == "mixinputs_beta"
    assert "go inside vllm_xargs" in str(err.value)
    chat = ChatCompletionRequest(
        model="m", messages=[{"role": "user", "content": "hi"}], mixinputs_mode="soft"
    )
    with pytest.raises(ValueError, match="mixinputs_mode is a top-level field"):
        chat.to_sampling_params(8, {})
    fine = CompletionRequest(model="m", prompt="x", vllm_xargs={"mixinputs_beta": 1.0}, foo=1)
    assert fine.to_sampling_params(8, {}).extra_args == {"mixinputs_beta": 1.0}


def test_a_vllm_without_the_hook_keeps_serving(monkeypatch, caplog):
    monkeypatch.setattr(openai_request, "_CLASSES", (("vllm.no_such_module", "Request"),))
    with caplog.at_level(logging.WARNING, logger="vllm.mixinputs"):
        openai_request.apply()
    assert "are not refused" in caplog.text


def test_request_errors_name_the_key_and_suggest_a_known_one():
    error = rv.request_error("mixinputs_top_k=50 is out of range: this engine allows 1 to 20")
    assert isinstance(error, ValueError) and error.parameter == "mixinputs_top_k"
    typo = rv.request_error("unknown request key(s) ['mixinputs_bta']; known keys are [...]")
    assert typo.parameter == "mixinputs_bta" and "(did you mean 'mixinputs_beta'?)" in str(typo)
    assert rv.request_error("mode 'swir' needs more", "mixinputs_mode").parameter == (
        "mixinputs_mode"
    )


def test_an_error_class_without_parameter_still_gets_the_message(monkeypatch):
    class Older(ValueError):
        """A vLLM release whose validation error takes no ``parameter``."""

    monkeypatch.setattr(rv, "MoIRequestError", Older)
    error = rv.request_error("mixinputs_beta must be >= 0 (or inf), got -1.0")
    assert type(error) is Older and str(error) == "mixinputs_beta must be >= 0 (or inf), got -1.0"
