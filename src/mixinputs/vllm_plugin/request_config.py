"""A request's MoI config where the engine reads it: engine core (prefix-cache keys) and workers.

The front end (``patches/request_validation``) validated the request's ``mixinputs_*`` keys once,
applied ``MIXINPUTS_BETA``'s default, turned a think-end token's text into its id, checked K
against the engine's limit, and wrote the result under ``KEY_RESOLVED`` into the engine's own copy
of the sampling params. Everything behind it reads that, and only that, here: no second parse,
no environment. A malformed entry (a request that reached the engine some other way) is logged
and decoded without MoI; it never stops the engine.
"""

from __future__ import annotations

import logging
from typing import Any

from mixinputs.config import KEY_RESOLVED, MoIConfig, MoIConfigError

logger = logging.getLogger("vllm.mixinputs")


def request_config(req_id: str, params: Any) -> MoIConfig | None:
    """The request's resolved config, or None for standard decoding.

    >>> class P: extra_args = {"mixinputs_resolved": MoIConfig(beta=2.0).to_resolved()}
    >>> request_config("r", P()).beta
    2.0
    >>> class Q: extra_args = {"mixinputs_beta": 2.0}   # never resolved by a front end
    >>> request_config("r", Q()) is None
    True
    """
    extra = getattr(params, "extra_args", None)
    resolved = extra.get(KEY_RESOLVED) if extra else None
    if resolved is None:
        return None
    try:
        return MoIConfig.from_resolved(resolved)
    except MoIConfigError as e:  # the front end writes only valid configs; never crash the engine
        logger.error("request %s: %s; decoding it without MoI", req_id, e)
        return None
