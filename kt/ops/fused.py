"""The fused native forward of a dense decoder (csrc/decoder.cpp) over a loaded kt model.

One C++ call runs every layer for a batch of token chunks, each chunk continuing
its own sequence's key/value cache; the torch modules of kt/models stay the
readable reference and the owners of the weights, which the fused forward reads
in place (GGUF blocks by mmap, norm vectors from the modules' buffers).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from kt.ops import kernels
from kt.ops.linear import Linear, NativeWeight, Parameter
from kt.ops.moe import StackedExperts


def weight_blocks(linear: Linear) -> tuple:
    """(raw blocks, ggml type, rows, cols) of a Linear holding GGUF blocks the kernels can read."""
    w = linear.weight
    if not isinstance(w, NativeWeight):
        raise TypeError(f"the fused forward needs native GGUF weights, got {type(w).__name__}")
    raw = w.tensor.data if w.tensor.data.dtype == np.uint8 else w.tensor.data.view(np.uint8)
    rows, cols = w.shape
    return np.ascontiguousarray(raw.reshape(rows, -1)), int(w.tensor.ggml_type), rows, cols


def expert_blocks(stacked: StackedExperts) -> tuple:
    """(raw blocks, ggml type, n_experts, rows, cols) of stacked GGUF experts the kernels can read."""
    if not stacked.native:
        raise TypeError("the fused forward needs native GGUF expert weights")
    return stacked.stacked()


def vector(p: Parameter | None) -> np.ndarray | None:
    return None if p is None else np.ascontiguousarray(p.value.numpy(), dtype=np.float32)


def attention_spec(attn) -> dict:
    """q, k, v, o (and the per-head q / k norms where the attention has them) of a layer."""
    spec = {name: weight_blocks(getattr(attn, f"{name}_proj")) for name in ("q", "k", "v", "o")}
    if getattr(attn, "qk_norm", False):
        spec.update(q_norm=vector(attn.q_norm.weight), k_norm=vector(attn.k_norm.weight))
    return spec


def gated_mlp_spec(mlp) -> dict:
    return {name: weight_blocks(getattr(mlp, f"{name}_proj")) for name in ("gate", "up", "down")}


class FusedDecoder:
    """A model's `fused_spec()` -> config, layers, final norm, output head; see csrc/decoder.h."""

    def __init__(self, spec: dict):
        self.dim, self.vocab = spec["config"]["dim"], spec["config"]["vocab"]
        self._decoder = kernels._lib().DenseDecoder(spec["config"], spec["layers"], spec["final_norm"], spec["lm_head"])

    def new_sequence(self):
        """An empty key/value cache (f16) for one sequence; grows as tokens arrive."""
        return kernels._lib().KVSequence(self._decoder)

    def forward(self, embeddings: torch.Tensor, sequences: Sequence, counts: Sequence[int],
                out_rows: Sequence[int]) -> torch.Tensor:
        """embeddings [sum(counts), dim] -> logits [len(out_rows), vocab] of the chosen rows.

        Chunk i (counts[i] tokens) continues sequences[i] at its current length."""
        x = embeddings.detach().to(dtype=torch.float32).contiguous().numpy()
        logits = np.empty((len(out_rows), self.vocab), dtype=np.float32)
        self._decoder.forward(x, list(sequences), [int(c) for c in counts], [int(r) for r in out_rows], logits)
        return torch.from_numpy(logits)


def fused_decoder(model) -> FusedDecoder | None:
    """The fused forward for `model` when it has one and its weights are all native; else None."""
    if not kernels.available() or not hasattr(model, "fused_spec"):
        return None
    try:
        return FusedDecoder(model.fused_spec())
    except TypeError:  # some weight is not in a kernel format (reference mode, or an unsupported type)
        return None
