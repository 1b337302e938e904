"""Patch: the torch.compile cache key differs with and without the plugin.

Why: vLLM keys its compile cache on the configuration, which does not see a swapped module, so an
    artifact compiled without ``MixedInputEmbedding`` could be loaded into a run with it.
How: fold ``mixinputs-<layout>`` (bumped whenever the wrapper's graph changes) into the key:
    wrap ``VllmConfig.compute_hash`` (vLLM 0.26 to 0.33: a hex string) or, where it is gone,
    ``VllmConfig.compile_factors`` (0.34: a dict of factors, hashed by vLLM) with one more factor.
Upstream: a plugin-contributed hash factor in vLLM would remove this patch.
"""

from __future__ import annotations

import hashlib

from mixinputs.vllm_plugin.patches import wrap_method

GRAPH_LAYOUT = "mixinputs-embedding-v1"
FACTOR = "mixinputs"


def apply() -> None:
    from vllm.config import VllmConfig

    if "compute_hash" in VllmConfig.__dict__:

        def make_hash(original):
            def compute_hash(self, *args, **kwargs):
                base = original(self, *args, **kwargs)
                digest = hashlib.sha256(f"{base}|{GRAPH_LAYOUT}".encode()).hexdigest()
                return digest[: len(base)] if isinstance(base, str) and base else digest

            return compute_hash

        wrap_method(VllmConfig, "compute_hash", make_hash)
        return

    def make_factors(original):
        def compile_factors(self, *args, **kwargs):
            factors = original(self, *args, **kwargs)
            return {**factors, FACTOR: GRAPH_LAYOUT}

        return compile_factors

    wrap_method(VllmConfig, "compile_factors", make_factors)
