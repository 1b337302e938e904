"""Engine-wide MoI settings, read once per process when the plugin registers."""

from __future__ import annotations

import os
from dataclasses import dataclass

from mixinputs.config import DEFAULT_TOP_K, MoIConfig, MoIConfigError

ENV_MAX_TOP_K = "MIXINPUTS_MAX_TOP_K"


@dataclass(frozen=True)
class PluginSettings:
    default: MoIConfig | None  # MoI for requests that do not say (MIXINPUTS_BETA), else None
    max_top_k: int  # the largest mixinputs_top_k a request may ask; sizes the fixed buffers

    @classmethod
    def from_env(cls) -> PluginSettings:
        """>>> PluginSettings.from_env().max_top_k >= 1
        True
        """
        raw = os.environ.get(ENV_MAX_TOP_K, "").strip()
        try:
            max_top_k = int(raw) if raw else DEFAULT_TOP_K
        except ValueError:
            max_top_k = 0
        if max_top_k < 1:
            raise MoIConfigError(f"{ENV_MAX_TOP_K}={raw!r} must be an int >= 1 (default 20)")
        default = MoIConfig.from_env()
        if default is not None and default.top_k is not None:
            max_top_k = max(max_top_k, default.top_k)
        return cls(default=default, max_top_k=max_top_k)
