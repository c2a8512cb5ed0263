"""Linear and embedding layers over GGUF weights.

A weight's storage format is a type: `GGUFWeight` keeps the file's quant blocks
(an mmap view, nothing copied at load) and turns them into a dense matrix the
first time a forward needs it. Faster formats (the C++ kernels of csrc/) plug in
as other `Weight` types with the same two methods.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from torch import nn

from kt.gguf.dequant import dequantize
from kt.gguf.reader import GGUFTensor
from kt.ops import kernels


class Weight(Protocol):
    shape: tuple[int, int]

    def matmul(self, x: torch.Tensor) -> torch.Tensor: ...  # x [T, in] -> [T, out]

    def rows(self, ids: torch.Tensor) -> torch.Tensor: ...  # ids [T] -> [T, in]


class GGUFWeight:
    """Reference weight: dequantize-then-matmul in float32, dense copy made lazily once."""

    def __init__(self, tensor: GGUFTensor):
        self.tensor = tensor
        self.shape = tensor.shape
        self._dense: torch.Tensor | None = None

    def dense(self) -> torch.Tensor:
        if self._dense is None:
            self._dense = torch.from_numpy(dequantize(self.tensor.data, self.tensor.ggml_type, self.shape))
        return self._dense

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.dense().T

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        if self._dense is not None:
            return self._dense[ids]
        picked = self.tensor.data[ids.numpy()]  # only the looked-up rows are read and dequantized
        return torch.from_numpy(dequantize(picked, self.tensor.ggml_type, (len(ids), self.shape[1])))


class NativeWeight(GGUFWeight):
    """GGUF blocks multiplied in place by the C++ kernels (csrc/): no dense copy, ever."""

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        rows, cols = self.shape
        y = kernels.matmul(self.tensor.data, self.tensor.ggml_type, rows, cols, x.reshape(-1, cols))
        return y.view(*x.shape[:-1], rows)


def gguf_weight(tensor: GGUFTensor, reference: bool = False) -> GGUFWeight:
    """The fastest weight type for a GGUF tensor; `reference` forces dequantize-then-matmul.
    (Stacked 3-D expert tensors are multiplied per expert by kt.ops.moe, which reads the type.)"""
    if not reference and kernels.supports(tensor.ggml_type):
        return NativeWeight(tensor)
    return GGUFWeight(tensor)


class Linear(nn.Module):
    """y = x @ W^T; the module exists before its weight so optimize rules can replace it."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight: Weight | None = None

    def load(self, weight: Weight) -> None:
        if tuple(weight.shape) != (self.out_features, self.in_features):
            raise ValueError(f"weight of shape {tuple(weight.shape)}, expected {(self.out_features, self.in_features)}")
        self.weight = weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight.matmul(x)


class Embedding(nn.Module):
    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.vocab_size, self.dim = vocab_size, dim
        self.weight: Weight | None = None

    def load(self, weight: Weight) -> None:
        if tuple(weight.shape) != (self.vocab_size, self.dim):
            raise ValueError(f"embedding of shape {tuple(weight.shape)}, expected {(self.vocab_size, self.dim)}")
        self.weight = weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.weight.rows(ids)


class Parameter(nn.Module):
    """A small float vector (norm weights): copied into torch at load, it is tiny."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size
        self.register_buffer("value", torch.ones(size), persistent=False)

    def load(self, weight: GGUFWeight) -> None:
        if tuple(weight.shape) != (self.size,):
            raise ValueError(f"vector of shape {tuple(weight.shape)}, expected {(self.size,)}")
        self.value = torch.from_numpy(np.array(dequantize(weight.tensor.data, weight.tensor.ggml_type, (self.size,))))
