"""The OpenAI-compatible server with the plugin: per-request MoI through `vllm_xargs`. The
server is ``plugin_server`` (tests/conftest.py), shared with test_eval_openai.py: these tests only
send it requests."""

from __future__ import annotations

import pytest

from tests.vllm_support import require_vllm

require_vllm()
openai = pytest.importorskip("openai")

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture
def client(plugin_server):
    return plugin_server


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


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("endpoint", ["completions", "chat"])
def test_bad_values_are_400_before_any_byte_of_a_stream(
    client, plugin_server_log, endpoint, stream
):
    """Streamed or not, completions or chat: the same HTTP 400 (``BadRequestError``) with the same
    message, before the stream starts, and no traceback in the server's log."""
    xargs = {"mixinputs_mode": "swir", "mixinputs_swir_window": 0}

    def send():
        body = {"vllm_xargs": xargs}
        if endpoint == "chat":
            messages = [{"role": "user", "content": "Hi"}]
            reply = client.chat.completions.create(
                model="smol", messages=messages, max_tokens=4, extra_body=body, stream=stream
            )
        else:
            reply = client.completions.create(
                model="smol", prompt="Hi", max_tokens=4, extra_body=body, stream=stream
            )
        return list(reply) if stream else reply

    before = plugin_server_log.read_text()
    with pytest.raises(openai.BadRequestError) as err:
        send()
    assert err.value.status_code == 400
    assert "mixinputs_swir_window must be an int >= 1, got 0" in str(err.value)
    log = plugin_server_log.read_text()[len(before) :]
    assert "Traceback" not in log and "ERROR" not in log, log[-2000:]
    assert complete(client, {"mixinputs_beta": 1.0}).choices[0].text  # still serving


def _send(client, endpoint, stream, **body):
    if endpoint == "chat":
        reply = client.chat.completions.create(
            model="smol",
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=4,
            extra_body=body,
            stream=stream,
        )
    else:
        reply = client.completions.create(
            model="smol", prompt="Hi", max_tokens=4, extra_body=body, stream=stream
        )
    return list(reply) if stream else reply


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("endpoint", ["completions", "chat"])
def test_a_top_level_mixinputs_key_is_400_saying_it_goes_in_vllm_xargs(client, endpoint, stream):
    """``extra_body={"mixinputs_beta": 1}`` (no ``vllm_xargs``) was standard decoding with a 200:
    now a 400 before any stream starts, naming the key in ``param``."""
    with pytest.raises(openai.BadRequestError) as err:
        _send(client, endpoint, stream, mixinputs_beta=1.0)
    assert err.value.status_code == 400 and err.value.param == "mixinputs_beta"
    assert "mixinputs_beta is a top-level field of this request" in str(err.value)
    assert '{"vllm_xargs": {"mixinputs_beta": ...}}' in str(err.value)
    assert _send(client, endpoint, False, vllm_xargs={"mixinputs_beta": 1.0}).choices


@pytest.mark.parametrize(
    "xargs, key, says",
    [
        ({"mixinputs_top_k": 0}, "mixinputs_top_k", "mixinputs_top_k"),
        ({"mixinputs_bta": 1}, "mixinputs_bta", "(did you mean 'mixinputs_beta'?)"),
        (
            {"mixinputs_mode": "moi", "mixinputs_selar_threshold": 0.7},
            "mixinputs_selar_threshold",
            "belongs to mode 'selar'",
        ),
    ],
)
def test_400s_name_the_key_in_param(client, xargs, key, says):
    with pytest.raises(openai.BadRequestError) as err:
        complete(client, xargs)
    assert err.value.param == key and says in str(err.value)
