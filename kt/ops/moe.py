"""Routed experts of a mixture-of-experts layer, over GGUF's stacked expert tensors.

GGUF keeps each layer's experts in three 3-D tensors (ffn_gate_exps, ffn_up_exps:
[n_experts, ffn, dim]; ffn_down_exps: [n_experts, dim, ffn]). With native weights
`MoEExperts` hands all routed tokens to one C++ call (csrc/moe.cpp) that reads the blocks
in place; the reference path groups the tokens per expert in torch over float32
dequantized experts.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from kt.gguf.dequant import dequantize
from kt.ops import kernels
from kt.ops.linear import NativeWeight
from kt.ops.mlp import ACTIVATIONS


class StackedExperts(nn.Module):
    """One of the three stacked tensors: expert e's matrix is [rows, cols]."""

    def __init__(self, n_experts: int, rows: int, cols: int):
        super().__init__()
        self.shape = (n_experts, rows, cols)
        self.tensor = None
        self.native = False
        self._dense: dict[int, torch.Tensor] = {}

    def load(self, weight) -> None:
        if tuple(weight.shape) != self.shape:
            raise ValueError(f"experts of shape {tuple(weight.shape)}, expected {self.shape}")
        self.tensor = weight.tensor
        self.native = isinstance(weight, NativeWeight)

    def stacked(self) -> tuple:
        """(raw blocks [n_experts * rows, row_bytes], type, n_experts, rows, cols) for kernels.moe."""
        n, rows, cols = self.shape
        return np.ascontiguousarray(self.tensor.data).reshape(n * rows, -1), int(self.tensor.ggml_type), n, rows, cols

    def blocks(self, e: int) -> np.ndarray:
        n, rows, _ = self.shape
        return self.tensor.data.reshape(n, rows, -1)[e]  # a view: experts are contiguous

    def matmul(self, e: int, x: torch.Tensor) -> torch.Tensor:
        _, rows, cols = self.shape
        if self.native:
            return kernels.matmul(self.blocks(e), self.tensor.ggml_type, rows, cols, x)
        if e not in self._dense:
            self._dense[e] = torch.from_numpy(dequantize(self.blocks(e), self.tensor.ggml_type, (rows, cols)))
        return x @ self._dense[e].T


class MoEExperts(nn.Module):
    """sum_k weight_k * down_e(act(gate_e(x)) * up_e(x)) over each token's top-k experts e."""

    def __init__(self, n_experts: int, dim: int, ffn_dim: int, activation: str = "silu"):
        super().__init__()
        self.gate_proj = StackedExperts(n_experts, ffn_dim, dim)
        self.up_proj = StackedExperts(n_experts, ffn_dim, dim)
        self.down_proj = StackedExperts(n_experts, dim, ffn_dim)
        self.act = ACTIVATIONS[activation]
        self.native_activation = activation == "silu"  # the native operator's

    @property
    def native(self) -> bool:
        return self.native_activation and all(p.native for p in (self.gate_proj, self.up_proj, self.down_proj))

    def forward(self, x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor) -> torch.Tensor:
        """x [T, dim], topk_ids / topk_weights [T, k] -> [T, dim] float32."""
        if self.native:
            return kernels.moe(x, topk_ids, topk_weights, self.gate_proj.stacked(), self.up_proj.stacked(),
                               self.down_proj.stacked())
        out = torch.zeros(x.shape[0], x.shape[1], dtype=torch.float32)
        flat = topk_ids.reshape(-1)
        order = torch.argsort(flat, stable=True)  # token slots grouped by expert
        experts, counts = torch.unique_consecutive(flat[order], return_counts=True)
        k = topk_ids.shape[1]
        start = 0
        for e, n in zip(experts.tolist(), counts.tolist()):
            slots = order[start:start + n]
            start += n
            tokens = slots // k
            xe = x[tokens].float()
            h = self.act(self.gate_proj.matmul(e, xe)) * self.up_proj.matmul(e, xe)
            y = self.down_proj.matmul(e, h) * topk_weights.reshape(-1)[slots, None]
            out.index_add_(0, tokens, y)
        return out
