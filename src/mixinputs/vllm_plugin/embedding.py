"""The input-embedding wrapper that feeds mixtures to the model, CUDA-graph and compile safe.

It replaces the model's token-embedding module after the weights are loaded. Every forward:

    out[t] = slots[token_row[t]]               if 0 <= token_row[t] < num_slots  (newest mixture)
             replay[token_row[t] - num_slots]  if token_row[t] >= num_slots       (replayed one)
             base(input_ids)[t]                otherwise                          (plain)

The three tensors are persistent buffers: their addresses never change, so captured CUDA graphs
and compiled code stay valid while the host rewrites their contents between steps. Tensor
parallel: ``base`` is vLLM's vocab-parallel embedding (masked lookup + all-reduce) and the buffers
hold already-reduced mixtures, which every rank computes identically, so the selection needs no
collective of its own.
"""

from __future__ import annotations

import torch
from torch import nn


class MixedInputEmbedding(nn.Module):
    """``slots`` [num_slots, D]: the newest mixture of each running MoI request.
    ``replay`` [max_num_batched_tokens, D]: mixtures rebuilt for a resumed request; by default
    vLLM's own ``inputs_embeds`` buffer, which text-only models never use, so it costs nothing.
    ``token_row`` [max_num_batched_tokens]: -1 (plain), a slot, or ``num_slots + replay row``.
    """

    def __init__(
        self,
        base: nn.Module,
        num_slots: int,
        max_num_tokens: int,
        replay: torch.Tensor | None = None,
    ):
        super().__init__()
        self.base = base
        weight = base.weight
        hidden = weight.shape[1]
        self.register_buffer(
            "slots",
            torch.zeros(num_slots, hidden, dtype=weight.dtype, device=weight.device),
            persistent=False,
        )
        self.owns_replay = replay is None
        if replay is None:
            replay = torch.zeros(max_num_tokens, hidden, dtype=weight.dtype, device=weight.device)
        self.register_buffer("replay", replay, persistent=False)
        self.register_buffer(
            "token_row",
            torch.full((max_num_tokens,), -1, dtype=torch.int64, device=weight.device),
            persistent=False,
        )

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out = self.base(input_ids)  # [..., D]
        n = input_ids.numel()
        row = self.token_row[:n]  # [n]
        num_slots = self.slots.shape[0]
        newest = self.slots[row.clamp(0, num_slots - 1)]  # [n, D]
        replayed = self.replay[(row - num_slots).clamp(min=0)]  # [n, D]
        mixed = torch.where((row >= num_slots).unsqueeze(-1), replayed, newest)
        flat = out.view(n, -1)
        return torch.where((row >= 0).unsqueeze(-1), mixed.to(flat.dtype), flat).view(out.shape)

    def extra_bytes(self) -> int:
        """Device memory this wrapper added (the replay rows only when it owns them)."""
        tensors = [self.slots, self.token_row] + ([self.replay] if self.owns_replay else [])
        return sum(t.numel() * t.element_size() for t in tensors)

    def __getattr__(self, name: str):
        # Code that reaches into the embedding (weight tying, drafters, LoRA) sees the original.
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("base"), name)


def find_input_embedding(model: nn.Module) -> tuple[nn.Module, str, nn.Module]:
    """(parent, attribute, module) of the model's token embedding: the ``VocabParallelEmbedding``
    that is not an LM head. Raises when there is none, or several that could be it."""
    from vllm.model_executor.layers.vocab_parallel_embedding import (
        ParallelLMHead,
        VocabParallelEmbedding,
    )

    found = []
    for parent_name, parent in model.named_modules():
        for attr, child in parent.named_children():
            if isinstance(child, VocabParallelEmbedding) and not isinstance(child, ParallelLMHead):
                found.append((f"{parent_name}.{attr}".lstrip("."), parent, attr, child))
    if not found:
        raise RuntimeError(
            f"mixinputs: {type(model).__name__} has no token embedding (VocabParallelEmbedding) "
            "to feed mixtures through"
        )
    if len(found) > 1:
        # Prefer the language model's own `embed_tokens` (multimodal models nest one).
        named = [f for f in found if f[0].endswith("embed_tokens")]
        if len(named) != 1:
            raise RuntimeError(
                "mixinputs: several token embeddings in "
                f"{type(model).__name__} ({[f[0] for f in found]}); cannot tell which feeds tokens"
            )
        found = named
    _, parent, attr, module = found[0]
    return parent, attr, module
