"""Fixtures shared by several test modules (each costs an engine start, so it runs once)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def no_plugin_reference():
    """The engine modules' four prompts greedy (24 tokens) and one seeded, in one batch, on vLLM
    without the plugin (``VLLM_PLUGINS`` names no plugin): what standard requests must equal."""
    from tests.vllm_support import PROMPTS, require_vllm, run_engine_subprocess

    require_vllm()
    requests = [{"prompt": p, "params": {"max_tokens": 24, "temperature": 0.0}} for p in PROMPTS]
    requests.append(
        {"prompt": PROMPTS[1], "params": {"max_tokens": 24, "temperature": 0.8, "seed": 7}}
    )
    return run_engine_subprocess(
        requests, env={"VLLM_PLUGINS": "none-at-all"}, engine={"max_num_batched_tokens": 256}
    )
