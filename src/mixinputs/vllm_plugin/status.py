"""Whether an engine can serve MoI, as its front end learns it from every process of the engine.

The plugin is loaded into every vLLM process of an environment, MoI or not, so anything of ours
that fails (a hook that moved in a new vLLM, an odd configuration, an unknown model layout, an
exception in the MoI step) must turn MoI off for that engine and nothing else: standard requests
are served exactly as without the plugin, and MoI requests get an HTTP 400 (a ``ValueError``
offline) naming the cause. Three places can find such a cause:

1. **The configuration**, in every process alike (``attach.refusal_reason``).
2. **Registration** in this process (a patch that could not be installed):
   ``record_registration_failure``.
3. **A worker**: attaching MoI to the loaded model failed, or a later MoI step raised
   (``record_attach`` / ``MoIStepState.fail``). The front end runs in another process, so it
   asks the workers: ``worker_status`` is added to vLLM's ``WorkerWrapperBase`` as
   ``mixinputs_status`` and called by name with ``collective_rpc`` once when the engine is built
   (``LLMEngine`` synchronously; ``AsyncLLM`` in a task on its event loop), then at most every
   ``REFRESH_S`` seconds while MoI requests arrive and the engine was last seen healthy. Once a
   cause is known it stays: MoI is off for the rest of that engine's life.

A MoI request that reaches the front end of an ``AsyncLLM`` before its first answer has arrived
waits for it (the server builds its engine and awaits its own start-up calls first, so in
practice the answer is always there before the first request).

>>> record_registration_failure("a test")
>>> registration_failure()
'a test'
>>> record_registration_failure(None)
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger("vllm.mixinputs")

RPC_METHOD = "mixinputs_status"
"""The method added to vLLM's ``WorkerWrapperBase``, called by name over ``collective_rpc``."""
REFRESH_S = 10.0
"""How old a healthy answer may be before a MoI request triggers another question (each one costs
the engine core one round trip to its workers between two steps)."""
RPC_TIMEOUT_S = 30.0
CELL = "_mixinputs_worker_status"  # the attribute on the front end's InputProcessor

_registration_failure: str | None = None
_attach_refusal: str | None = None  # this worker process: why MoI was not attached


# ---------------------------------------------------------------------------- every process
def record_registration_failure(reason: str | None) -> None:
    """A patch could not be installed in this process (None: clear, for tests)."""
    global _registration_failure
    _registration_failure = reason


def registration_failure() -> str | None:
    return _registration_failure


# ---------------------------------------------------------------------------- workers
def record_attach(reason: str | None) -> None:
    """This worker attached MoI (None) or did not, for ``reason``."""
    global _attach_refusal
    _attach_refusal = reason


def worker_status(wrapper: Any) -> str | None:
    """Why this worker cannot mix, or None (``WorkerWrapperBase.mixinputs_status``)."""
    from mixinputs.vllm_plugin.attach import step_state_of

    if _registration_failure is not None:
        return _registration_failure
    worker = getattr(wrapper, "worker", wrapper)
    runner = getattr(worker, "model_runner", None)
    state = step_state_of(runner)
    if state is not None:
        return state.disabled
    if _attach_refusal is not None:
        return _attach_refusal
    if runner is None:  # not loaded yet: nothing to say
        return None
    return f"mixinputs does not hook {type(runner).__name__}, so it attached no MoI to it"


def install_worker_method() -> None:
    """Give vLLM's ``WorkerWrapperBase`` the ``mixinputs_status`` method (a new attribute; no
    vLLM method changes)."""
    from vllm.v1.worker.worker_base import WorkerWrapperBase

    if RPC_METHOD not in WorkerWrapperBase.__dict__:
        setattr(WorkerWrapperBase, RPC_METHOD, worker_status)


# ---------------------------------------------------------------------------- the front end
def _first_reason(results: Any) -> str | None:
    """The first cause among ``collective_rpc``'s answers (one per worker, maybe nested)."""
    stack = [results]
    while stack:
        item = stack.pop(0)
        if isinstance(item, str):
            return item
        if isinstance(item, (list, tuple)):
            stack[:0] = list(item)
    return None


class WorkerStatusCell:
    """The front end's view of its workers' MoI status, refreshed as described above.

    ``fetch_sync() -> results`` (an ``LLMEngine``), or ``fetch_async() -> awaitable``
    (an ``AsyncLLM``, run as a task on the running event loop).

    >>> cell = WorkerStatusCell(fetch_sync=lambda: [None, "no embedding"])
    >>> cell.current()
    'no embedding'
    """

    def __init__(
        self,
        fetch_sync: Callable[[], Any] | None = None,
        fetch_async: Callable[[], Awaitable[Any]] | None = None,
    ):
        self.fetch_sync = fetch_sync
        self.fetch_async = fetch_async
        self.refusal: str | None = None
        self.known = False
        self.fetched_at = -math.inf
        self._task: asyncio.Task | None = None

    def _store(self, results: Any) -> None:
        self.refusal = _first_reason(results)
        self.known = True
        self.fetched_at = time.monotonic()

    def _stale(self) -> bool:
        if self.refusal is not None:  # once off, off for good
            return False
        return time.monotonic() - self.fetched_at > REFRESH_S

    def current(self) -> str | None:
        """The latest known cause (None: healthy or not known yet); asks again when stale."""
        if not self._stale():
            return self.refusal
        if self.fetch_sync is not None:
            try:
                self._store(self.fetch_sync())
            except Exception as e:  # an engine that cannot answer: ask again later
                self.fetched_at = time.monotonic()
                logger.debug("mixinputs: could not ask the workers for their status: %s", e)
        else:
            self.refresh()
        return self.refusal

    def refresh(self) -> None:
        """Start asking (asynchronous front ends), unless a question is on its way."""
        if self.fetch_async is None or (self._task is not None and not self._task.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop yet: asked when the first request arrives
            return
        self._task = loop.create_task(self._ask())

    async def _ask(self) -> None:
        try:
            self._store(await self.fetch_async())
        except Exception as e:
            self.fetched_at = time.monotonic()
            logger.debug("mixinputs: could not ask the workers for their status: %s", e)

    async def wait(self) -> str | None:
        """The cause once the first answer is in (asynchronous front ends)."""
        if not self.known:
            self.refresh()
            if self._task is not None:
                await asyncio.shield(self._task)
        return self.refusal


def watch_engine(engine: Any, asynchronous: bool) -> None:
    """Attach a ``WorkerStatusCell`` to a just-built ``LLMEngine`` / ``AsyncLLM`` (its
    ``input_processor`` is where the request validation looks) and ask for the first time."""
    processor = getattr(engine, "input_processor", None)
    core = getattr(engine, "engine_core", None)
    if processor is None or core is None:
        return
    if asynchronous:
        cell = WorkerStatusCell(
            fetch_async=lambda: core.collective_rpc_async(RPC_METHOD, RPC_TIMEOUT_S)
        )
        cell.refresh()
    else:
        cell = WorkerStatusCell(fetch_sync=lambda: core.collective_rpc(RPC_METHOD, RPC_TIMEOUT_S))
        cell.current()
    processor.__dict__[CELL] = cell  # the worker that found a cause has logged it already


def cell_of(processor: Any) -> WorkerStatusCell | None:
    return getattr(processor, "__dict__", {}).get(CELL)
