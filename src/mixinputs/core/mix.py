"""The mixture: ``h = Σ_c w_c E[ids_c]`` accumulated in float32 (one function, ``mix_rows``), and
the whole vocabulary's mean ``p·E`` (``dense_inputs``).
"""

from __future__ import annotations

from typing import Any

import torch

from mixinputs.core.candidates import candidates_from_logits, drop_sampled
from mixinputs.core.weights import mixture_weights
from mixinputs.methods.base import DEFAULT_TOP_K, parse_beta


def weighted_sum(weights: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``Σ_c weights[b, c] · rows[b, c]``: [B, D] float32, the one place the mixture is summed.

    ``weights`` [B, C] (any float dtype, cast to float32), ``rows`` [B, C, D] the candidates'
    input embeddings, however the model makes them (a plain lookup, or a scaled one as in Gemma).
    A weight of exactly 0 contributes exactly nothing.

    >>> weighted_sum(torch.tensor([[0.5, 0.5]]), torch.tensor([[[2.0], [4.0]]])).tolist()
    [[3.0]]
    """
    return (weights.float().unsqueeze(-1) * rows.float()).sum(dim=1)


def mix_rows(weights: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``h[b] = Σ_c weights[b, c] · rows[b, c]``: [B, D] in ``rows.dtype``, accumulated in float32
    (``weighted_sum``).

    >>> mix_rows(torch.tensor([[0.25, 0.75]]), torch.tensor([[[4.0, 0.0], [0.0, 4.0]]])).tolist()
    [[1.0, 3.0]]
    """
    return weighted_sum(weights, rows).to(rows.dtype)


def mix_candidates(
    ids: torch.Tensor, weights: torch.Tensor, embedding: torch.Tensor
) -> torch.Tensor:
    """``h[b] = Σ_c weights[b, c] · embedding[ids[b, c]]``: [B, D] in ``embedding.dtype``.

    >>> E = torch.eye(3)
    >>> mix_candidates(torch.tensor([[0, 2]]), torch.tensor([[0.25, 0.75]]), E).tolist()
    [[0.25, 0.0, 0.75]]
    """
    return mix_rows(weights, embedding[ids])  # embedding[ids]: [B, C, D]


def dense_inputs(probs: torch.Tensor, embedding: torch.Tensor, min_rows: int = 8) -> torch.Tensor:
    """``probs @ embedding``: [M, D] float32, SwiReasoning's latent input (``probs`` [M, V] the
    softmax of the raw logits, ``MethodStep.probs``).

    The product runs on at least ``min_rows`` rows (zero rows pad it): a matrix library picks a
    matrix-vector kernel for one or two rows, whose sums differ from its matrix kernel's in the
    last bits, so padding keeps each row's result independent of how many rows the batch has.
    Engines pass a fixed row count. The probabilities are cast to the embedding's dtype (as the
    authors' bf16 loop does), and the products accumulate in float32.
    """
    m = probs.shape[0]
    rows = max(m, min_rows)
    if rows > m:
        probs = torch.cat([probs, probs.new_zeros(rows - m, probs.shape[1])])
    return torch.mm(probs.to(embedding.dtype), embedding)[:m].float()


def mix_step_inputs(step: Any, embedding: torch.Tensor, dense: torch.Tensor | None):
    """The input [M, D] in the embedding's dtype: ``Σ w E[ids]`` plus ``step.dense · dense`` where
    ``dense`` (``dense_inputs``) is given, accumulated in float32."""
    if dense is None:
        return mix_candidates(step.ids, step.weights, embedding)
    mixed = weighted_sum(step.weights, embedding[step.ids])
    return (mixed + step.dense[:, None] * dense).to(embedding.dtype)


def plain_weight_of(module: Any, device: torch.device, lookup: Any = None) -> torch.Tensor | None:
    """The [V, D] matrix behind an embedding ``module`` when its rows are what it looks up
    (unquantized, one rank, no scaling), else None: then only the module itself gives them.
    ``lookup``: how to look rows up for the check (default: calling ``module``).

    >>> table = torch.nn.Embedding(4, 2)
    >>> plain_weight_of(table, torch.device("cpu")) is table.weight
    True
    """
    quant = getattr(module, "quant_method", None)
    if quant is not None and type(quant).__name__ != "UnquantizedEmbeddingMethod":
        return None
    if getattr(module, "tp_size", 1) != 1:  # vocab-parallel shards: the module all-reduces
        return None
    weight = getattr(module, "weight", None)
    plain = (
        isinstance(weight, torch.Tensor)
        and weight.dim() == 2
        and weight.is_floating_point()
        and weight.stride(1) == 1
        and weight.device == device
    )
    if plain:  # the module must look rows up as they are (no scaling, no transform)
        with torch.no_grad():
            probe = torch.arange(min(8, weight.shape[0]), device=device)
            plain = torch.equal((lookup or module)(probe), weight[probe])
    return weight if plain else None


def fused_weight_of(
    module: Any, device: torch.device, max_top_k: int, lookup: Any = None
) -> torch.Tensor | None:
    """The plain [V, D] matrix behind ``module`` when the fused step (``mixinputs.fused_step``)
    can mix from it: Triton on this device (CUDA; Triton's interpreter in tests), a plain
    embedding (``plain_weight_of``) and a width the kernels take. Otherwise None: the PyTorch
    reference runs, through the module itself."""
    try:
        from mixinputs.fused_step import MAX_TOP_K, fused_step_available
    except ImportError:
        return None
    if not fused_step_available(device) or max_top_k > MAX_TOP_K:
        return None
    return plain_weight_of(module, device, lookup)


def _as_beta_tensor(beta: float | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    if isinstance(beta, torch.Tensor):
        if beta.dim() == 0:
            beta = beta.expand(batch)
        if beta.shape != (batch,):
            raise ValueError(
                f"beta must be a float or a [B] = [{batch}] tensor, got {tuple(beta.shape)}"
            )
        if beta.is_floating_point() is False:
            beta = beta.float()
        bad = torch.isnan(beta) | (beta < 0)
        if bool(bad.any()):  # a host sync, fine for this user-facing entry point
            raise ValueError(
                "every beta must be >= 0 (or inf for plain token embeddings); "
                f"bad rows: {bad.nonzero().flatten().tolist()}"
            )
        return beta.to(device=device, dtype=torch.float32)
    return torch.full((batch,), parse_beta(beta), dtype=torch.float32, device=device)


def _as_direct_mask(
    mode: str | torch.Tensor, batch: int, device: torch.device
) -> torch.Tensor | None:
    if isinstance(mode, torch.Tensor):
        if mode.dtype != torch.bool or mode.shape != (batch,):
            raise ValueError(
                f"mode as a tensor must be a [B] = [{batch}] bool tensor (True = direct mixture), "
                f"got {mode.dtype} {tuple(mode.shape)}"
            )
        return mode.to(device)
    if mode == "moi":
        return None
    if mode == "direct":
        return torch.ones(batch, dtype=torch.bool, device=device)
    raise ValueError(f"mode must be 'moi' or 'direct' (or a [B] bool tensor), got {mode!r}")


def mix_embeddings(
    logits: torch.Tensor,
    sampled_ids: torch.Tensor,
    embedding: torch.Tensor,
    beta: float | torch.Tensor,
    *,
    mode: str | torch.Tensor = "moi",
    top_k: int | None = DEFAULT_TOP_K,
) -> torch.Tensor:
    """The MoI input embedding for the next step: ``h`` [B, D] in ``embedding.dtype``.

    Args:
        logits: [B, V] raw next-token logits (any float dtype; math runs in float32).
        sampled_ids: [B] the token each row sampled (y).
        embedding: [V, D] the model's input embedding matrix.
        beta: float, or [B] tensor per row; ``>= 0``, ``inf`` gives exactly ``E[y]``.
        mode: ``"moi"``, ``"direct"`` (``h = Σ p_i E[i]``, the original ``MIXINPUTS_BETA=-100``),
            or a [B] bool tensor, True where a row uses direct mixture.
        top_k: K, the prior's support (default 20 as in the original); ``None`` = whole vocabulary.

    With p the temperature-1 softmax over the candidates ``top-K ∪ {y}`` and
    ``H = entropy(p) / log(#candidates)``, MoI weights are
    ``w = (H·p + (β+1−H)·onehot(y)) / (β+1)`` and ``h = Σ w_i E[i]``.
    **y outside the top-K**: y becomes candidate K+1 with its own probability, so the weights stay
    a convex combination; when y is in the top-K this equals the original release's
    ``H·Σ((p + β·onehot)/(1+β))·E + (1−H)·E[y]``. Direct mixture ignores y wherever it lies.

    Example:
        >>> E = torch.eye(4)
        >>> logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
        >>> h = mix_embeddings(logits, torch.tensor([1]), E, beta=float("inf"))
        >>> h.tolist()  # beta = inf: the plain embedding of the sampled token
        [[0.0, 1.0, 0.0, 0.0]]
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be [B, V], got shape {tuple(logits.shape)}")
    batch, vocab = logits.shape
    if sampled_ids.shape != (batch,):
        raise ValueError(f"sampled_ids must be [B] = [{batch}], got {tuple(sampled_ids.shape)}")
    if embedding.dim() != 2 or embedding.shape[0] < vocab:
        raise ValueError(
            f"embedding must be [V, D] with V >= {vocab} (the logits' vocabulary), "
            f"got {tuple(embedding.shape)}"
        )
    betas = _as_beta_tensor(beta, batch, logits.device)
    direct = _as_direct_mask(mode, batch, logits.device)
    cands = candidates_from_logits(logits, sampled_ids, top_k)
    scores = cands.scores if direct is None else drop_sampled(cands.scores, direct)
    weights = mixture_weights(scores, betas, direct)
    return mix_candidates(cands.ids.to(embedding.device), weights.to(embedding.device), embedding)
