"""A request's MoI config as a worker reads it: checked again, never fatal to the engine.

The front end (``patches/request_validation``) already refused bad fields with a 400 and turned a
think-end token's text into its id; a worker still checks, so a request that reached it some
other way is decoded without MoI (and logged) instead of stopping the engine.
"""

from __future__ import annotations

import logging
from typing import Any

from mixinputs.config import KEY_THINK_END, MoIConfig, MoIConfigError

logger = logging.getLogger("vllm.mixinputs")


def request_config(
    req_id: str, params: Any, default: MoIConfig | None, max_top_k: int
) -> MoIConfig | None:
    """The request's config, or None for standard decoding (or a config this engine cannot run).

    >>> class P: extra_args = {"mixinputs_beta": 2}
    >>> request_config("r", P(), None, 20).beta
    2.0
    >>> request_config("r", P(), None, 10) is None  # K = 20 > 10: logged, decoded without MoI
    True
    """
    if params is None:
        return None
    try:
        config = MoIConfig.from_request(params.extra_args, default)
        if config is None:
            return None
        if config.top_k is None or config.top_k > max_top_k:
            raise MoIConfigError(
                f"mixinputs_top_k={config.top_k} exceeds this engine's maximum {max_top_k} "
                "(MIXINPUTS_MAX_TOP_K)"
            )
        if config.needs_think_end and not isinstance(config.think_end, int):
            raise MoIConfigError(
                f"{KEY_THINK_END}={config.think_end!r} was not resolved to a token id by the "
                "front end; pass the think-end token's id"
            )
    except MoIConfigError as e:  # the front end rejects these; never crash the engine
        logger.error("request %s: %s; decoding it without MoI", req_id, e)
        return None
    return config
