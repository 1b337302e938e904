"""Patch: the front end learns from its workers whether they can mix.

Why: attaching MoI to the loaded model, and every MoI step, run in the workers; the requests
    that must then be refused arrive in the front end, another process. Without this, a worker
    that could not attach MoI would decode MoI requests as standard ones without a word to their
    senders.
How: add ``mixinputs_status`` to vLLM's ``WorkerWrapperBase`` (a new attribute, called by name
    over ``collective_rpc``; no vLLM method changes) and wrap ``LLMEngine.__init__`` and
    ``AsyncLLM.__init__`` to ask it once the engine is built (``status.watch_engine``); the
    request validation then reads the answer (``status.WorkerStatusCell``).
Upstream: a way for a plugin to veto requests from the engine core (or to return a status with
    the engine's start-up handshake) would remove this patch.
"""

from __future__ import annotations

import logging

from mixinputs.vllm_plugin import status
from mixinputs.vllm_plugin.patches import wrap_method

logger = logging.getLogger("vllm.mixinputs")


def apply() -> None:
    from vllm.v1.engine.async_llm import AsyncLLM
    from vllm.v1.engine.llm_engine import LLMEngine

    status.install_worker_method()

    def make_init(asynchronous: bool):
        def make(original):
            def __init__(self, *args, **kwargs):
                original(self, *args, **kwargs)
                try:
                    status.watch_engine(self, asynchronous)
                except Exception:  # never the engine's problem: MoI requests go unchecked
                    logger.exception("mixinputs: could not watch this engine's MoI status")

            return __init__

        return make

    wrap_method(LLMEngine, "__init__", make_init(False))
    wrap_method(AsyncLLM, "__init__", make_init(True))
