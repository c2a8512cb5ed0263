"""Rotary position embedding in GGUF's two layouts.

`interleaved` rotates adjacent pairs (x0, x1): llama.cpp's NORM mode, which the
converter's permutation of Llama q/k weights expects. Otherwise the halves
(x[:d/2], x[d/2:]) rotate together: NEOX mode (Gemma, Qwen, DeepSeek).
"""
import math
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

    def inv_freq(self) -> torch.Tensor:
        """The rotation frequency of each pair, float64 [dim/2]."""
        return self.base ** (-torch.arange(0, self.dim, 2, dtype=torch.float64) / self.dim)

    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [T, dim/2] for `positions` [T], looked up in a table computed once in float64."""
        needed = int(positions.max()) + 1
        if self._table.get("length", 0) < needed:
            length = (needed + TABLE_STEP - 1) // TABLE_STEP * TABLE_STEP
            angles = (torch.arange(length, dtype=torch.float64)[:, None] * self.scale) * self.inv_freq()[None, :]
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


@dataclass(frozen=True)
class YarnRope(Rope):
    """YaRN (DeepSeek-V2/V3): frequencies blended between the original ones (high, kept) and
    ones slowed down by `factor` (low, interpolated) over a linear ramp between the dimensions
    that turn beta_fast and beta_slow times over the original context, as transformers does."""

    factor: float = 1.0
    original_context: int = 4096
    beta_fast: float = 32.0
    beta_slow: float = 1.0

    def inv_freq(self) -> torch.Tensor:
        def dim_of(rotations: float) -> float:
            return self.dim * math.log(self.original_context / (rotations * 2 * math.pi)) / (2 * math.log(self.base))

        low, high = max(math.floor(dim_of(self.beta_fast)), 0), min(math.ceil(dim_of(self.beta_slow)), self.dim - 1)
        extrapolation = super().inv_freq()
        if high == low:
            high += 0.001
        ramp = ((torch.arange(self.dim // 2, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)
        keep = 1 - ramp  # 1: the original frequency, 0: the interpolated one
        return extrapolation / self.factor * (1 - keep) + extrapolation * keep


def yarn_mscale(factor: float, mscale: float) -> float:
    """YaRN's attention temperature: 0.1 * mscale * ln(factor) + 1 (1 when not scaled)."""
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0
