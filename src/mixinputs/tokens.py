"""A config's token settings, turned from text into ids with a tokenizer (front end and HF).

A request names its tokens as text (``"</think>"``) or ids. The vLLM front end and
``mixinputs.hf`` resolve them here, once, so engines only ever see ids: single tokens
(``think_end``, ``think_start``, SwiReasoning's line break), token sequences (its convergence and
termination phrases), the math-symbol tokens (``plain_math``) and the EOS id that SwiReasoning's
answer budget and Cold Stop's after-thinking end emit.

Soft thinking resolves its think-end text as Soft Thinking's release does: the LAST token of the
text's encoding (eric-ai-lab/Soft-Thinking @ b97407c, ``managers/schedule_batch.py:735``,
``tokenizer.encode(think_end_str, add_special_tokens=False)[-1]``), the same token on a reasoning
model, and a token that exists on any other (``>`` for ``</think>`` in SmolLM2; logged). Every other
method refuses text that is not one token.

>>> class Chars:   # a tokenizer that spells every character as its code point
...     eos_token_id = 0
...     def encode(self, text, add_special_tokens=False): return [ord(c) for c in text]
>>> from mixinputs.config import MoIConfig
>>> resolve_tokens(MoIConfig(region="thinking", think_end="!"), Chars(), 128).think_end
33
"""

from __future__ import annotations

import logging
import sys
from dataclasses import replace
from typing import Any

from mixinputs.config import MAX_QUEUE, MoIConfig, MoIConfigError
from mixinputs.math_tokens import math_token_ids
from mixinputs.methods import SEQUENCES as _SEQUENCES
from mixinputs.methods import everything, method
from mixinputs.methods.plain_math import PLAIN_MATH

_KEYS = {
    "think_end": "mixinputs_think_end",
    **{spec.field: key for m in everything() for key, spec in m.keys.items()},
}


def single_token_id(tokenizer: Any, text: str, key: str) -> int:
    """The id of the one token ``text`` names: a vocabulary entry, or text that encodes to one
    id; a ``MoIConfigError`` naming ``key`` otherwise."""
    unknown = getattr(tokenizer, "unk_token_id", None)
    lookup = getattr(tokenizer, "convert_tokens_to_ids", None)
    back = getattr(tokenizer, "convert_ids_to_tokens", None)
    if lookup is not None:
        token_id = lookup(text)
        # A vocabulary entry: it maps back to the same text (unknown text maps to unk, or 0).
        known = isinstance(token_id, int) and token_id != unknown
        if known and (back is None or back(token_id) == text):
            return token_id
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) == 1 and ids[0] != unknown:
        return int(ids[0])
    hint = "; is this a reasoning model?" if text in ("</think>", "<think>") else ""
    raise MoIConfigError(
        f"{key}={text!r} is not one token of this model's tokenizer (it encodes to {len(ids)} "
        f"tokens: {list(ids)}{hint}): name the model's own token, or pass its id"
    )


def last_token_id(tokenizer: Any, text: str, key: str) -> int:
    """Soft Thinking's release: a one-token ``text``'s id, else the last id of its encoding
    (``schedule_batch.py:735``), said in the log.

    >>> class Chars:
    ...     def encode(self, text, add_special_tokens=False): return [ord(c) for c in text]
    >>> last_token_id(Chars(), "</think>", "k") == ord(">")
    True
    """
    try:
        return single_token_id(tokenizer, text, key)
    except MoIConfigError:
        pass
    ids = tokenizer.encode(text, add_special_tokens=False)
    if not ids:
        raise MoIConfigError(f"{key}={text!r} encodes to no token in this model's tokenizer")
    _logger().warning(
        "mixinputs: %s=%r is not one token of this tokenizer (%s); soft thinking ends its region "
        "at its last token, id %d, as Soft Thinking's release does -- pass the id of the model's "
        "own think-end token to choose another",
        key,
        text,
        list(ids),
        ids[-1],
    )
    return int(ids[-1])


def _logger() -> logging.Logger:
    # Inside a vLLM process under vLLM's logger tree, so its handlers show it.
    return logging.getLogger("vllm.mixinputs" if "vllm" in sys.modules else __name__)


def sequence_ids(tokenizer: Any, text: str, key: str) -> tuple[int, ...]:
    """``text`` as 1 to ``MAX_QUEUE`` token ids."""
    ids = tuple(int(i) for i in tokenizer.encode(text, add_special_tokens=False))
    if not 1 <= len(ids) <= MAX_QUEUE:
        raise MoIConfigError(
            f"{key}={text!r} is {len(ids)} tokens in this model's tokenizer; it must be 1 to "
            f"{MAX_QUEUE}: shorten it, or pass the ids"
        )
    return ids


def resolve_tokens(config: MoIConfig, tokenizer: Any, vocab_size: int | None) -> MoIConfig:
    """``config`` with every token setting its method uses as ids (``MoIConfigError`` naming the
    key when one is not a token of this model); configs that use none come back unchanged."""
    fields: dict[str, Any] = {}
    mode = method(config.mode)
    for name, value in config.tokens_to_resolve.items():
        key = _KEYS[name]
        if value is None:  # the method's own default for this model (its family's words)
            if tokenizer is None:
                raise MoIConfigError(
                    f"{key} is by default the model family's words, which need this model's "
                    "tokenizer: pass the ids"
                )
            value = mode.default_text(name, tokenizer)
        if isinstance(value, str):
            if tokenizer is None:
                raise MoIConfigError(
                    f"{key}={value!r} needs this model's tokenizer to look it up: pass the id"
                    + ("s" if name in _SEQUENCES else "")
                )
            if name in _SEQUENCES:
                value = sequence_ids(tokenizer, value, key)
            elif name == "think_end" and mode.think_end_last_token:
                value = last_token_id(tokenizer, value, key)
            else:
                value = single_token_id(tokenizer, value, key)
        for token in value if isinstance(value, tuple) else (value,):
            if vocab_size is not None and not 0 <= token < vocab_size:
                raise MoIConfigError(
                    f"{key}={token} is not a token id of this model (its vocabulary has "
                    f"{vocab_size} tokens)"
                )
        fields[name] = value
    if PLAIN_MATH.used(config) and not config.plain_ids:
        if tokenizer is None:
            raise MoIConfigError(
                "mixinputs_plain_math needs this model's tokenizer (to find the math-symbol "
                "tokens): set it to false, or give the engine a tokenizer"
            )
        fields["plain_ids"] = math_token_ids(tokenizer)
    if config.needs_eos and config.eos is None:
        eos = getattr(tokenizer, "eos_token_id", None)
        if eos is None:
            why = next(m.eos_reason(config) for m in everything() if m.needs_eos(config))
            raise MoIConfigError(f"{why}, and this model's tokenizer has none")
        fields["eos"] = int(eos)
    return replace(config, **fields) if fields else config
