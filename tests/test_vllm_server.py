"""The OpenAI-compatible server with the plugin: per-request MoI through `vllm_xargs`."""

from __future__ import annotations

import pytest

from tests.vllm_support import openai_server, require_vllm

require_vllm()
openai = pytest.importorskip("openai")

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with openai_server(tmp_path_factory.mktemp("server") / "server.log") as api:
        yield api


def complete(api, xargs=None, **kw):
    extra = {"vllm_xargs": xargs} if xargs is not None else None
    return api.completions.create(
        model="smol",
        prompt="The capital of France is",
        max_tokens=24,
        temperature=0.0,
        extra_body=extra,
        **kw,
    )


def test_completions_per_request(client):
    standard = complete(client).choices[0].text
    assert complete(client, {"mixinputs_beta": "inf"}).choices[0].text == standard
    moi = complete(client, {"mixinputs_beta": 0.5}).choices[0].text
    assert moi and moi != standard
    assert complete(client, {"mixinputs_beta": 0.5}).choices[0].text == moi  # greedy: repeatable


def test_chat_streaming_and_non_streaming_agree(client):
    messages = [{"role": "user", "content": "Name three colours."}]
    body = {"vllm_xargs": {"mixinputs_beta": 1.0}}
    full = client.chat.completions.create(
        model="smol", messages=messages, max_tokens=24, temperature=0.0, extra_body=body
    )
    stream = client.chat.completions.create(
        model="smol",
        messages=messages,
        max_tokens=24,
        temperature=0.0,
        extra_body=body,
        stream=True,
    )
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert streamed == full.choices[0].message.content


@pytest.mark.parametrize(
    "xargs, key",
    [
        ({"mixinputs_beta": -2}, "mixinputs_beta"),
        ({"mixinputs_mode": "mixture"}, "mixinputs_mode"),
        ({"mixinputs_top_k": 100000}, "mixinputs_top_k"),
    ],
)
def test_bad_values_are_http_400_and_the_server_keeps_answering(client, xargs, key):
    with pytest.raises(openai.BadRequestError) as err:
        complete(client, xargs)
    assert err.value.status_code == 400 and key in str(err.value)
    assert complete(client, {"mixinputs_beta": 1.0}).choices[0].text
