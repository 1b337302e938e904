"""A resumed request's earlier inputs, rebuilt into the replay rows of ``MixedInputEmbedding``.

After a preemption vLLM recomputes a request's earlier output tokens from their ids; each of
them must be fed the input it was fed the first time, or the resumed request drifts from an
uninterrupted one. The host history (``history.py``) holds each token's candidates and final
weights, and SwiReasoning's inputs themselves (its ``p·E`` spans the whole vocabulary). Each
step that recomputes such tokens rebuilds their inputs into ``embed.replay`` and says where they
go (``embed.replay_pos``: 1 + the token's row in the flattened batch, 0 for none).

Everything goes to the device through pinned buffers, two turns deep (``host_turns.py``): even a
resumed request's steps never make the host wait on the GPU.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from mixinputs.mixing import mix_rows
from mixinputs.vllm_plugin.embedding import MixedInputEmbedding
from mixinputs.vllm_plugin.host_turns import HostTurns

logger = logging.getLogger("vllm.mixinputs")


class Replays:
    """The replay rows of one engine: what each step writes there, and what it must reset."""

    def __init__(self, embed: MixedInputEmbedding, width: int):
        self.embed = embed
        self.width = width
        self.device = embed.replay.device
        rows = embed.replay_rows
        self._host = HostTurns(
            {
                "pos": (rows, torch.long),
                "ids": (rows * width, torch.long),  # the replayed tokens' candidates ...
                "w": (rows * width, torch.float32),  # ... and weights
            },
            self.device,
        )
        self._host_extent = [0, 0]  # entries each turn's position buffer may still hold
        self._extent = 0  # replay_pos entries [0, extent) on the device may be set
        self._keep: list[torch.Tensor] = []  # pinned copies whose uploads may still be queued
        self.count = 0  # output tokens whose input was rebuilt (for logs and tests)

    def clear(self) -> None:
        """No replay this step."""
        if self._extent:
            self.embed.replay_pos[: self._extent].zero_()
            self._extent = 0
        if self.embed.replay_count is not None:
            self.embed.replay_count = 0

    def write(self, histories, computed, end, start, prompt, fresh_pos) -> None:
        """This step's replays, for the rows [R] that recompute output tokens: their histories,
        tokens already ``computed``, the ``end`` of their scheduled range, their ``start`` in the
        flattened batch, ``prompt`` lengths, and the position fed from the slot (not replayed)."""
        buffers = self._host.next()
        turn = self._host.turn
        host_pos = buffers["pos"]
        host_pos.numpy()[: self._host_extent[turn]] = 0  # what this buffer held two steps ago
        count = self._rebuild(buffers, histories, computed, end, start, prompt, fresh_pos)
        self._host_extent[turn] = count
        # Copy over last step's extent too, so its stale entries are reset on the device.
        extent = max(count, self._extent)
        if extent:
            self.embed.replay_pos[:extent].copy_(host_pos[:extent], non_blocking=True)
        self._host.queued()
        self._extent = count
        if self.embed.replay_count is not None:  # eager engines scatter only what is used
            self.embed.replay_count = count

    def _rebuild(self, host, histories, computed, end, start, prompt, fresh_pos) -> int:
        """The inputs of the replayed tokens into ``embed.replay``; returns how many. A loop over
        the resumed requests only."""
        if not histories:
            return 0
        ids, w, rows, fed = [], [], [], {}
        missing = done = 0
        for k, history in enumerate(histories):
            positions = np.arange(max(computed[k], prompt[k]), end[k])
            positions = positions[positions != fresh_pos[k]]
            js = positions - prompt[k]
            usable = js < history.length
            missing += int((~usable).sum())
            ids.append(history.ids[js[usable]])
            w.append(history.w[js[usable]])
            rows.append(start[k] + positions[usable] - computed[k])
            for i, j in enumerate(js[usable].tolist()):  # SwiReasoning's inputs, kept whole
                if j in history.fed:
                    fed[done + i] = history.fed[j]
            done += int(usable.sum())
        if missing:
            logger.error(
                "mixinputs: %d replayed tokens have no stored mixture; they use plain embeddings",
                missing,
            )
        rows_all = np.concatenate(rows)
        room = self.embed.replay_rows
        if rows_all.size > room:
            logger.error(
                "mixinputs: %d tokens to replay in one step, room for %d; the last %d use plain "
                "embeddings (start the engine with MIXINPUTS_REPLAY_ROWS=%d or more)",
                rows_all.size,
                room,
                rows_all.size - room,
                rows_all.size,
            )
        n = min(rows_all.size, room)
        if n == 0:
            return 0
        width = self.width
        host["ids"][: n * width].numpy()[:] = np.concatenate(ids)[:n].reshape(-1)
        host["w"][: n * width].numpy()[:] = np.concatenate(w)[:n].reshape(-1)
        ids_dev = host["ids"][: n * width].to(self.device, non_blocking=True).view(n, width)
        w_dev = host["w"][: n * width].to(self.device, non_blocking=True).view(n, width)
        mixed = mix_rows(w_dev, self.embed.base(ids_dev)).to(self.embed.replay.dtype)  # [n, D]
        kept = [i for i in fed if i < n]
        if kept:  # SwiReasoning's inputs themselves (rare: a resumed SwiReasoning request)
            vectors = self._pinned(np.stack([fed[i] for i in kept]))
            where = self._pinned(np.asarray(kept, dtype=np.int64))
            mixed[where.to(self.device, non_blocking=True)] = vectors.to(
                self.device, mixed.dtype, non_blocking=True
            )
        self.embed.replay[:n] = mixed
        host["pos"][:n].numpy()[:] = rows_all[:n] + 1
        self.count += n
        return n

    def _pinned(self, array: np.ndarray) -> torch.Tensor:
        """A host copy an upload can read without a sync (pinned on CUDA), kept alive for two
        more turns, by when its copy has run."""
        tensor = torch.from_numpy(array)
        if self.device.type == "cuda":
            tensor = tensor.pin_memory()
            self._keep = [*self._keep[-3:], tensor]
        return tensor
