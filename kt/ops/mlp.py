import torch.nn.functional as F
from torch import nn

from kt.ops.linear import Linear

ACTIVATIONS = {"silu": F.silu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh")}


class GatedMLP(nn.Module):
    """down(act(gate(x)) * up(x)): the feed-forward of Llama, Gemma, and MoE experts."""

    def __init__(self, dim: int, ffn_dim: int, activation: str):
        super().__init__()
        self.gate_proj, self.up_proj = Linear(dim, ffn_dim), Linear(dim, ffn_dim)
        self.down_proj = Linear(ffn_dim, dim)
        self.act = ACTIVATIONS[activation]

    def forward(self, x):
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))
