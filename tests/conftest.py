"""Fixtures shared by several test modules (each costs an engine start, so it runs once)."""

from __future__ import annotations

import contextlib

import pytest

# Session fixtures whose process is stopped right after the last test that uses them (the
# fixture's name -> what stops it; the last user is found once the tests are collected), so that
# an idle server does not sit beside every engine module that runs in between.
_STOPPED_AFTER_LAST_USE: dict[str, contextlib.ExitStack] = {"plugin_server": contextlib.ExitStack()}
_LAST_USER: dict[str, str] = {}


@pytest.hookimpl(trylast=True)  # after any reordering: the order the tests will run in
def pytest_collection_modifyitems(items):
    for item in items:
        for name in _STOPPED_AFTER_LAST_USE:
            if name in getattr(item, "fixturenames", ()):
                _LAST_USER[name] = item.nodeid


def pytest_runtest_teardown(item):
    for name, stack in _STOPPED_AFTER_LAST_USE.items():
        if _LAST_USER.get(name) == item.nodeid:
            stack.close()


@pytest.fixture(scope="session")
def no_plugin_run():
    """``REFERENCE_REQUESTS`` (the four prompts greedy, one seeded) in one batch on vLLM without
    the plugin (``VLLM_PLUGINS`` names no plugin), started when first asked for and run beside
    what follows (test_vllm_engine.py asks before it starts its own engine)."""
    from tests.vllm_support import REFERENCE_REQUESTS, EngineBeside, require_vllm

    require_vllm()
    return EngineBeside(
        REFERENCE_REQUESTS,
        env={"VLLM_PLUGINS": "none-at-all"},
        engine={"max_num_batched_tokens": 256},
    )


@pytest.fixture(scope="session")
def no_plugin_reference(no_plugin_run):
    """What standard requests must equal: ``no_plugin_run``'s outputs."""
    return no_plugin_run.result()


@pytest.fixture(scope="session")
def plugin_server_log(tmp_path_factory):
    """The log of ``plugin_server`` (what it printed since it started)."""
    return tmp_path_factory.mktemp("plugin-server") / "server.log"


@pytest.fixture(scope="session")
def plugin_server(plugin_server_log):
    """vLLM's OpenAI server with the plugin (``vllm_support.openai_server`` as it is, the README's
    ``vllm serve``), an ``openai.OpenAI`` client to it: one server for test_vllm_server.py and
    test_eval_openai.py, which only send it requests (no test changes how it serves; each
    request is independent of those before it). Started when first asked for, stopped after
    the last test that asks for it."""
    from tests.vllm_support import openai_server, require_vllm

    require_vllm()
    pytest.importorskip("openai")
    stack = _STOPPED_AFTER_LAST_USE["plugin_server"]
    yield stack.enter_context(openai_server(plugin_server_log))
    stack.close()
