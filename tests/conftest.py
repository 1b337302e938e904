"""Fixtures shared by several test modules (each costs an engine start, so it runs once)."""

from __future__ import annotations

import pytest


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
