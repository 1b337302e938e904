"""Fixtures shared by several test modules (each costs an engine start, so it runs once)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def no_plugin_reference():
    """``REFERENCE_REQUESTS`` (the four prompts greedy, one seeded) in one batch on vLLM without
    the plugin (``VLLM_PLUGINS`` names no plugin): what standard requests must equal."""
    from tests.vllm_support import REFERENCE_REQUESTS, require_vllm, run_engine_subprocess

    require_vllm()
    return run_engine_subprocess(
        REFERENCE_REQUESTS,
        env={"VLLM_PLUGINS": "none-at-all"},
        engine={"max_num_batched_tokens": 256},
    )
