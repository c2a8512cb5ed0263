"""Attention over a KV cache, driven by the batch metadata the caller passes in.

Models call `attend(layer, q, k, v, batch, ...)`; `batch.kv` decides where keys
and values live. Here a contiguous cache for one sequence; the paged cache of
the runtime plugs in as another `KVStore` with the same `store` method.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


class KVStore(Protocol):
    def store(self, layer: int, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Save this step's k/v [T, kv_heads, head_dim]; return all keys, values, and their positions."""
        ...


@dataclass
class AttentionBatch:
    positions: torch.Tensor  # [T] position of each token in its sequence
    kv: KVStore


class SequenceKVCache:
    """Contiguous per-layer K/V for one sequence, grown in chunks as tokens arrive.
    Stored in float16 by default, as llama.cpp does: half the memory, and the same rounding."""

    def __init__(self, n_layers: int, grow_by: int = 256, dtype: torch.dtype = torch.float16):
        self.k: list[torch.Tensor | None] = [None] * n_layers
        self.v: list[torch.Tensor | None] = [None] * n_layers
        self.length = [0] * n_layers
        self.grow_by, self.dtype = grow_by, dtype

    def store(self, layer, k, v, positions):
        start, end = int(positions[0]), int(positions[-1]) + 1
        if start != self.length[layer] or end - start != len(positions):
            raise ValueError("SequenceKVCache takes consecutive positions continuing the sequence")
        if self.k[layer] is None or self.k[layer].shape[0] < end:
            self._grow(layer, k, v, end)
        self.k[layer][start:end], self.v[layer][start:end] = k, v
        self.length[layer] = end
        return self.k[layer][:end], self.v[layer][:end], torch.arange(end)

    def _grow(self, layer: int, k: torch.Tensor, v: torch.Tensor, needed: int) -> None:
        size = (needed + self.grow_by - 1) // self.grow_by * self.grow_by
        new_k = k.new_empty((size, *k.shape[1:]), dtype=self.dtype)
        new_v = v.new_empty((size, *v.shape[1:]), dtype=self.dtype)  # may differ from k's (MLA keeps no values)
        if self.k[layer] is not None:
            n = self.length[layer]
            new_k[:n], new_v[:n] = self.k[layer][:n], self.v[layer][:n]
        self.k[layer], self.v[layer] = new_k, new_v

    def truncate(self, length: int) -> None:
        self.length = [min(n, length) for n in self.length]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor, kv_pos: torch.Tensor,
              *, scale: float, window: int | None = None) -> torch.Tensor:
    """Causal (optionally sliding-window) GQA attention, torch reference.

    q [T, H, D] float32, k/v [S, Hkv, D] in the cache's dtype -> [T, H, D] float32. A query
    at position p sees keys at positions p' <= p, and with a window only those with
    p - p' < window (llama.cpp's rule). Like llama.cpp, q and the attention weights are
    rounded to the cache's dtype for the two products, which are accumulated in float32.
    """
    allowed = kv_pos[None, :] <= q_pos[:, None]  # [T, S]
    if window is not None:
        allowed &= (q_pos[:, None] - kv_pos[None, :]) < window
    T, H, D = q.shape
    n_kv, cache_dtype = k.shape[1], k.dtype
    groups = H // n_kv
    # Query heads that share a KV head become rows of one product: no copy of K or V per head.
    qg = q.to(cache_dtype).float().view(T, n_kv, groups, D).permute(1, 2, 0, 3).reshape(n_kv, groups * T, D)
    kh, vh = k.float().transpose(0, 1), v.float().transpose(0, 1)  # [Hkv, S, D]
    scores = (qg @ kh.transpose(1, 2)) * scale  # [Hkv, groups*T, S]
    scores = scores.masked_fill(~allowed.repeat(groups, 1), float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    out = weights.to(cache_dtype).float() @ vh  # [Hkv, groups*T, D]
    return out.view(n_kv, groups, T, D).permute(2, 0, 1, 3).reshape(T, H, D)


def attend(layer: int, q, k, v, batch: AttentionBatch, *, scale: float, window: int | None = None) -> torch.Tensor:
    keys, values, kv_pos = batch.kv.store(layer, k, v, batch.positions)
    return attention(q, keys, values, batch.positions, kv_pos, scale=scale, window=window)
