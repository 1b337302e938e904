"""Everything the plugin changes in vLLM, one patch a module, each with Why / How / Upstream.

Patches are idempotent (vLLM loads plugins once per process, but tests and ``import mixinputs``
can call ``register`` again) and only wrap methods: none copies vLLM code.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

_MARK = "__mixinputs_original__"


def wrap_method(owner: Any, name: str, make: Callable[[Callable], Callable]) -> None:
    """Replace ``owner.name`` by ``make(original)`` once; a second call does nothing."""
    original = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name)
    if original is None:
        raise AttributeError(f"{owner!r} has no {name!r} to wrap")
    if getattr(original, _MARK, None) is not None:
        return
    wrapped = make(original)
    functools.update_wrapper(wrapped, original)
    setattr(wrapped, _MARK, original)
    setattr(owner, name, wrapped)


def mark_original(wrapper: Any, original: Any) -> None:
    """Record that ``wrapper`` replaces ``original`` (for a module-level function re-bound by
    hand, where ``wrap_method`` does not apply)."""
    functools.update_wrapper(wrapper, original)
    setattr(wrapper, _MARK, original)


def original_of(func: Any) -> Any:
    return getattr(func, _MARK, None)
