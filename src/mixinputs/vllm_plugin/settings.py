"""Engine-wide MoI settings, read once per process when the plugin registers."""

from __future__ import annotations

import os
from dataclasses import dataclass

from mixinputs.config import DEFAULT_TOP_K, MoIConfig, MoIConfigError

ENV_MAX_TOP_K = "MIXINPUTS_MAX_TOP_K"
ENV_REPLAY_ROWS = "MIXINPUTS_REPLAY_ROWS"
DEFAULT_REPLAY_ROWS = 1024


@dataclass(frozen=True)
class PluginSettings:
    default: MoIConfig | None  # MoI for requests that do not say (MIXINPUTS_BETA), else None
    max_top_k: int  # the largest mixinputs_top_k a request may ask; sizes the fixed buffers
    # Output tokens a compiled engine can replay in one step after a preemption (eager engines
    # replay any number); each step of a compiled engine scatters this many rows.
    replay_rows: int = DEFAULT_REPLAY_ROWS

    @classmethod
    def fallback(cls) -> PluginSettings:
        """The settings of an engine whose variables could not be read (MoI is off there)."""
        return cls(default=None, max_top_k=DEFAULT_TOP_K)

    @classmethod
    def from_env(cls) -> PluginSettings:
        """The settings the environment asks for (a ``MoIConfigError`` naming a bad variable).

        >>> PluginSettings.from_env().max_top_k >= 1
        True
        """
        raw = os.environ.get(ENV_MAX_TOP_K, "").strip()
        try:
            max_top_k = int(raw) if raw else DEFAULT_TOP_K
        except ValueError:
            max_top_k = 0
        if max_top_k < 1:
            raise MoIConfigError(f"{ENV_MAX_TOP_K}={raw!r} must be an int >= 1 (default 20)")
        raw_rows = os.environ.get(ENV_REPLAY_ROWS, "").strip()
        try:
            replay_rows = int(raw_rows) if raw_rows else DEFAULT_REPLAY_ROWS
        except ValueError:
            replay_rows = -1
        if replay_rows < 0:
            raise MoIConfigError(
                f"{ENV_REPLAY_ROWS}={raw_rows!r} must be an int >= 0 "
                f"(default {DEFAULT_REPLAY_ROWS})"
            )
        default = MoIConfig.from_env()
        if default is not None and default.top_k is not None:
            max_top_k = max(max_top_k, default.top_k)
        return cls(default=default, max_top_k=max_top_k, replay_rows=replay_rows)
