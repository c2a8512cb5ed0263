"""Rotary position embedding in GGUF's two layouts.

`interleaved` rotates adjacent pairs (x0, x1): llama.cpp's NORM mode, which the
converter's permutation of Llama q/k weights expects. Otherwise the halves
(x[:d/2], x[d/2:]) rotate together: NEOX mode (Gemma, Qwen, DeepSeek).
"""
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Rope:
    dim: int
    base: float
    interleaved: bool
    scale: float = 1.0  # linear position scaling (positions * scale)

    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = self.base ** (-torch.arange(0, self.dim, 2, dtype=torch.float64) / self.dim)
        angles = (positions.double()[:, None] * self.scale) * inv_freq[None, :]  # [T, dim/2]
        return angles.cos().float(), angles.sin().float()

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
