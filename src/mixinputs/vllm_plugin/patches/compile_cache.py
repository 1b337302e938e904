"""Patch: the torch.compile cache key differs with and without the plugin.

Why: ``VllmConfig.compute_hash`` keys vLLM's compile cache but does not see a swapped module, so
    an artifact compiled without ``MixedInputEmbedding`` could be loaded into a run with it.
How: wrap ``VllmConfig.compute_hash`` to fold in ``mixinputs-<layout>`` (bumped whenever the
    wrapper's graph changes).
Upstream: a plugin-contributed hash factor in vLLM would remove this patch.
"""

from __future__ import annotations

import hashlib

from mixinputs.vllm_plugin.patches import wrap_method

GRAPH_LAYOUT = "mixinputs-embedding-v1"


def apply() -> None:
    from vllm.config import VllmConfig

    def make(original):
        def compute_hash(self, *args, **kwargs):
            base = original(self, *args, **kwargs)
            digest = hashlib.sha256(f"{base}|{GRAPH_LAYOUT}".encode()).hexdigest()
            return digest[: len(base)] if isinstance(base, str) and base else digest

        return compute_hash

    wrap_method(VllmConfig, "compute_hash", make)
