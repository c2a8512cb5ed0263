import torch
from torch import nn

from kt.ops.linear import Parameter


class RMSNorm(nn.Module):
    """x / rms(x) * w. GGUF already stores Gemma's (1 + w), so one form serves every model."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = Parameter(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        return x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.value
