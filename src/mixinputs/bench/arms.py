"""The arms the bench measures: vanilla vLLM and standard decoding always, and one mixing arm per
method spec (``eval.methods``), each sending its ``MoIConfig.to_request()`` keys."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from mixinputs.config import DEFAULT_MODE, DEFAULT_THINK_END, MoIConfig
from mixinputs.methods import SEQUENCES as _SEQUENCES


def bench_methods(specs: list[str], beta: float, model: str | None) -> dict[str, MoIConfig]:
    """The mixing arms by label (``eval.methods``); standard decoding is always an arm anyway.

    A method of the default mode (MoI) that does not set ``beta`` itself takes ``beta``
    (``--beta``). A thinking region whose think-end token is left at the default text gets an
    explicit token id instead:
    the model's last vocabulary id (``config.json``'s ``vocab_size`` - 1). That id exists in
    every model's vocabulary, so the engine accepts it on a model without ``</think>`` (the
    embedded SmolLM2), and greedy decoding of the bench prompt practically never emits it, so the
    region stays open for the whole run: the cost of mixing while a reasoning model thinks.
    Every other token a method resolves (SwiReasoning's ``<think>``, its line break, its
    convergence words left to the model family) gets the same id unless the spec names it.

    >>> list(bench_methods(["moi", "soft+gumbel", "moi:beta=4"], 2.0, None))
    ['moi', 'soft+gumbel', 'moi(beta=4)']
    """
    from mixinputs.eval.methods import method_label, parse_method_options, split_methods

    arms: dict[str, MoIConfig] = {}
    for spec in split_methods(",".join(specs)):
        config, explicit = parse_method_options(spec)
        if config is None:
            continue  # standard decoding is always an arm
        if config.mode == DEFAULT_MODE and "beta" not in explicit:
            config = replace(config, beta=beta)
        name = method_label(config, beta="beta" in explicit)
        if model:  # every token its method resolves, unless named (SmolLM2 has no <think>)
            never = never_emitted_token_id(model)
            tokens = {
                field: (never,) if field in _SEQUENCES else never
                for field, value in config.tokens_to_resolve.items()
                if field not in explicit and (field not in _SEQUENCES or value is None)
            }
            config = replace(config, **tokens)
        if config not in arms.values():  # moi:beta=2 with --beta 2 is the moi arm again
            arms.setdefault(name, config)
    if not arms:
        raise ValueError("bench needs at least one mixing method besides standard, e.g. moi")
    return arms


def never_emitted_token_id(model: str) -> int | str:
    """A think-end token id the bench never emits: the last id of the model's vocabulary.

    Falls back to the default text when the folder has no ``config.json`` with a ``vocab_size``
    (the engine then says what is wrong, e.g. no ``</think>`` in the tokenizer).

    >>> never_emitted_token_id("no/such/folder")
    '</think>'
    """
    try:
        vocab = json.loads((Path(model) / "config.json").read_text())["vocab_size"]
    except (OSError, KeyError, TypeError, ValueError):
        return DEFAULT_THINK_END
    return int(vocab) - 1
