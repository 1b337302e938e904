"""The OpenAI-compatible backend: retries, and a real vLLM server on a loopback port, with and
without the plugin."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from mixinputs.backends import SamplingSettings
from mixinputs.backends.openai_backend import OpenAIBackend, ServerError
from mixinputs.cli import main
from mixinputs.config import MoIConfig
from mixinputs.eval import runner

pytest.importorskip("httpx")


class _Flaky(BaseHTTPRequestHandler):
    """Answers ``status`` (with ``Retry-After``) to the first ``failures`` POSTs, then echoes the
    request body; ``arrived`` keeps each POST's arrival time."""

    failures = 2
    status = 503
    retry_after_s = 1.2  # longer than the client's own first backoffs (at most 0.5 s and 1 s)
    seen: ClassVar[list[dict]] = []
    arrived: ClassVar[list[float]] = []

    def do_POST(self):
        import time

        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append(body)
        type(self).arrived.append(time.monotonic())
        if len(type(self).seen) <= type(self).failures:
            data = json.dumps({"error": {"message": "busy", "code": self.status}}).encode()
            self.send_response(self.status)
            self.send_header("retry-after", str(self.retry_after_s))
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        data = json.dumps({"echo": body}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky_server():
    _Flaky.seen, _Flaky.arrived, _Flaky.failures, _Flaky.status = [], [], 2, 503
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_5xx_is_retried_as_retry_after_asks(flaky_server):
    """The openai client's retries: a 503 is retried after the server's Retry-After (1.2 s here,
    longer than the client's own backoff would wait: the gaps can only have come from the header;
    a busy machine makes them longer, never shorter)."""
    backend = OpenAIBackend(flaky_server, model="m", check_server=False)
    assert backend._post("/v1/completions", {"x": 1}) == {"echo": {"x": 1}}
    assert len(_Flaky.seen) == 3  # two 503s, then the answer
    gaps = [b - a for a, b in zip(_Flaky.arrived, _Flaky.arrived[1:], strict=False)]
    assert all(gap >= 1.1 for gap in gaps), gaps
    _Flaky.seen = []
    impatient = OpenAIBackend(flaky_server, model="m", max_retries=1, check_server=False)
    with pytest.raises(ServerError, match="answered 503") as err:
        impatient._post("/v1/completions", {"x": 1})
    assert err.value.status == 503 and len(_Flaky.seen) == 2


def test_a_refusal_is_not_retried(flaky_server):
    _Flaky.status = 400  # e.g. a bad MoI setting: the answer, not a hiccup
    backend = OpenAIBackend(flaky_server, model="m", check_server=False)
    with pytest.raises(ServerError, match="answered 400") as err:
        backend._post("/v1/completions", {"x": 1})
    assert err.value.status == 400 and len(_Flaky.seen) == 1


def test_connection_errors_are_retried_then_reported():
    from tests.vllm_support import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    backend = OpenAIBackend(url, model="m", max_retries=1, check_server=False)
    with pytest.raises(ServerError, match="failed 2 times, last: Connect"):
        backend._post("/v1/completions", {})
    with pytest.raises(ServerError, match="cannot list the models served"):
        OpenAIBackend(url, max_retries=0)


def test_requests_carry_moi_per_request():
    backend = OpenAIBackend("http://127.0.0.1:9/v1", model="m", check_server=False)
    standard = backend.body("p", SamplingSettings(max_tokens=5, temperature=0.6, seed=3))
    assert standard["vllm_xargs"] == {"mixinputs_mode": "off"} and standard["seed"] == 3
    moi = backend.body("p", SamplingSettings(moi=MoIConfig(beta=0.5, top_k=7)))
    assert moi["vllm_xargs"]["mixinputs_beta"] == 0.5 and moi["vllm_xargs"]["mixinputs_top_k"] == 7
    assert "seed" not in moi and moi["prompt"] == "p"


def test_cli_needs_a_base_url(capsys):
    assert main(["eval", "--task", "countdown", "--backend", "openai"]) == 2
    assert "--base-url" in capsys.readouterr().err


# -- a real vLLM server -------------------------------------------------------------------------
@pytest.mark.vllm
@pytest.mark.slow
def test_eval_through_a_real_mixinputs_server(tmp_path, plugin_server):
    """On the plugin's server (``plugin_server``, tests/conftest.py, shared with
    test_vllm_server.py)."""
    from transformers import AutoTokenizer

    from tests.vllm_support import model_path

    url = str(plugin_server.base_url)
    backend = OpenAIBackend(url, concurrency=4)  # checks the server is mixinputs-enabled
    assert backend.model == "smol"
    message = "Name three colours."
    local = AutoTokenizer.from_pretrained(model_path()).apply_chat_template(
        [{"role": "user", "content": message}], tokenize=False, add_generation_prompt=True
    )
    assert backend.chat_prompt(message) == local

    out = tmp_path / "openai.jsonl"
    argv = f"eval --task countdown --backend openai --base-url {url} --concurrency 4 "
    argv += "--limit 3 --temperature 0 --beta 0.5 --max-tokens 16 --out"
    assert main([*argv.split(), str(out)]) == 0
    records = runner.read_records(out)
    assert len(records) == 3 * 2 and {r["backend"] for r in records} == {"openai"}
    by = {(r["item_id"], r["config"]["method"]): r["completion"] for r in records}
    assert all(0 < r["tokens"] <= 16 for r in records)
    # Greedy: MoI (beta 0.5) changes the text; repeating a request repeats it.
    assert any(by[(i, "moi")] != by[(i, "standard")] for i, _ in by)
    moi = next(r for r in records if r["config"]["method"] == "moi")
    settings = SamplingSettings(max_tokens=16, seed=0, moi=MoIConfig(beta=0.5))
    assert backend.generate([moi["prompt"]], settings)[0].text == moi["completion"]
    # A bad MoI setting is the server's 400, reported, not retried.
    with pytest.raises(ServerError, match=r"answered 400.*mixinputs_top_k"):
        backend.generate(
            ["Hi"], SamplingSettings(max_tokens=2, extra={"vllm_xargs": {"mixinputs_top_k": 0}})
        )


@pytest.mark.vllm
@pytest.mark.slow
def test_a_server_without_the_plugin_is_refused(tmp_path, monkeypatch):
    from tests.vllm_support import openai_server, require_vllm

    require_vllm()
    monkeypatch.setenv("VLLM_PLUGINS", "not-mixinputs")  # vLLM loads only plugins it names
    with openai_server(tmp_path / "server.log") as api:
        with pytest.raises(ServerError, match="not a mixinputs-enabled vLLM"):
            OpenAIBackend(str(api.base_url))
        assert (
            main(
                [
                    "eval",
                    "--task",
                    "countdown",
                    "--backend",
                    "openai",
                    "--base-url",
                    str(api.base_url),
                    "--limit",
                    "1",
                    "--out",
                    str(tmp_path / "x.jsonl"),
                ]
            )
            == 2
        )
