"""Rotary position embedding in GGUF's two layouts.

`interleaved` rotates adjacent pairs (x0, x1): llama.cpp's NORM mode, which the
converter's permutation of Llama q/k weights expects. Otherwise the halves
(x[:d/2], x[d/2:]) rotate together: NEOX mode (Gemma, Qwen, DeepSeek).
"""
from dataclasses import dataclass, field

import torch

TABLE_STEP = 1024  # the cos/sin table grows by this many positions when a longer one is needed


@dataclass(frozen=True)
class Rope:
    dim: int
    base: float
    interleaved: bool
    scale: float = 1.0  # linear position scaling (positions * scale)
    _table: dict = field(default_factory=dict, compare=False, repr=False)  # cos and sin per position

    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [T, dim/2] for `positions` [T], looked up in a table computed once in float64."""
        needed = int(positions.max()) + 1
        if self._table.get("length", 0) < needed:
            length = (needed + TABLE_STEP - 1) // TABLE_STEP * TABLE_STEP
            inv_freq = self.base ** (-torch.arange(0, self.dim, 2, dtype=torch.float64) / self.dim)
            angles = (torch.arange(length, dtype=torch.float64)[:, None] * self.scale) * inv_freq[None, :]
            self._table.update(length=length, cos=angles.cos().float(), sin=angles.sin().float())
        return self._table["cos"][positions], self._table["sin"][positions]

    def apply(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x [T, heads, head_dim]; cos/sin [T, dim/2]. Dimensions past `dim` pass through."""
        rot, rest = x[..., : self.dim], x[..., self.dim:]
        cos, sin = cos[:, None, :], sin[:, None, :]
        if self.interleaved:
            a, b = rot[..., 0::2], rot[..., 1::2]
            out = torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)
        else:
            a, b = rot[..., : self.dim // 2], rot[..., self.dim // 2:]
            out = torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)
        return torch.cat([out, rest], dim=-1) if rest.numel() else out
