"""The input-embedding wrapper that feeds mixtures to the model, CUDA-graph and compile safe.

It replaces the model's token-embedding module after the weights are loaded. Every forward it
does the plain lookup, exactly as vLLM would, and then *writes* mixtures over the few rows that
need one; a token that does not mix costs nothing more than in vanilla vLLM:

    out = base(input_ids)                               # [n, D], vLLM's own lookup
    out[newest_pos[s] - 1] = slots[s]                   # each MoI request's newest mixture
    out[replay_pos[r] - 1] = replay[r]                  # mixtures replayed after preemption

Position 0 of the index buffers means "no row": the lookup is made one row longer in front
(``[pad, input_ids...]``), so unused entries write into that scratch row, which is dropped. The
index buffers have fixed shapes ([num_slots] and [replay_rows]), so a captured CUDA graph or a
compiled graph replays the same two scatters every step while the host rewrites their contents.
Per step the extra traffic is ``(num_slots + replay_rows) × D`` reads and writes, independent of
the number of tokens (a prefill of 8,192 tokens moves nothing extra for its plain tokens).

Eager engines (no compile, no graphs) scatter only this step's replay rows; compiled engines
scatter a fixed ``replay_rows`` (see ``MoIWorkerState``).

Tensor parallel: ``base`` is vLLM's vocab-parallel embedding (masked lookup + all-reduce); the
mixtures are written after it, already reduced, and every rank computes the same ones.
"""

from __future__ import annotations

import torch
from torch import nn


class MixedInputEmbedding(nn.Module):
    """``slots`` [num_slots, D]: the newest mixture of each running MoI request.
    ``replay`` [max_replay, D]: mixtures rebuilt for a resumed request; by default vLLM's own
    ``inputs_embeds`` buffer, which text-only models never use, so it costs nothing.
    ``newest_pos`` [num_slots] int64: 1 + the token position slot s feeds this step, or 0.
    ``replay_pos`` [replay_rows] int64: 1 + the token position replay row r feeds, or 0.
    ``replay_count``: None for a fixed ``replay_rows``-row scatter (compiled engines), else the
    number of replay rows this step (eager engines: a Python int read every forward).
    """

    def __init__(
        self,
        base: nn.Module,
        num_slots: int,
        max_num_tokens: int,
        replay: torch.Tensor | None = None,
        replay_rows: int | None = None,
    ):
        super().__init__()
        self.base = base
        weight = base.weight
        hidden = weight.shape[1]
        device = weight.device
        self.register_buffer(
            "slots", torch.zeros(num_slots, hidden, dtype=weight.dtype, device=device), False
        )
        self.owns_replay = replay is None
        if replay is None:
            rows = max_num_tokens if replay_rows is None else replay_rows
            replay = torch.zeros(rows, hidden, dtype=weight.dtype, device=device)
        self.register_buffer("replay", replay, persistent=False)
        rows = replay.shape[0] if replay_rows is None else min(replay_rows, replay.shape[0])
        self.register_buffer(
            "newest_pos", torch.zeros(num_slots, dtype=torch.int64, device=device), False
        )
        self.register_buffer(
            "replay_pos", torch.zeros(rows, dtype=torch.int64, device=device), False
        )
        self.replay_count: int | None = None if replay_rows is not None else 0

    @property
    def replay_rows(self) -> int:
        """How many replay rows one step can write."""
        return self.replay_pos.shape[0]

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        flat = input_ids.reshape(-1)
        padded = torch.cat([flat.new_zeros(1), flat])  # [n + 1]: row 0 is the scratch row
        out = self.base(padded)  # [n + 1, D]
        out.index_copy_(0, self.newest_pos, self.slots.to(out.dtype))
        count = self.replay_count
        if count is None:  # compiled / graphs: a fixed-shape scatter
            out.index_copy_(0, self.replay_pos, self.replay[: self.replay_rows].to(out.dtype))
        elif count:  # eager: only this step's rows
            out.index_copy_(0, self.replay_pos[:count], self.replay[:count].to(out.dtype))
        return out[1:].view(*input_ids.shape, out.shape[-1])

    def extra_bytes(self) -> int:
        """Device memory this wrapper added (the replay rows only when it owns them)."""
        tensors = [self.slots, self.newest_pos, self.replay_pos]
        if self.owns_replay:
            tensors.append(self.replay)
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
