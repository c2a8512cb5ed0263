"""The operators optimize rules can choose, each a function that configures the module a
rule matched (raising TypeError when the module is not of a kind it can run). Only CPU
operators exist so far; GPU ones join with the hybrid engine."""
from __future__ import annotations

from torch import nn

from kt.ops.linear import Linear
from kt.ops.moe import MoEExperts

DEVICES = ("cpu",)


def _need(module: nn.Module, *kinds: type) -> None:
    if not isinstance(module, kinds):
        raise TypeError(f"expects {' or '.join(k.__name__ for k in kinds)}")


def linear_cpu(module: nn.Module, reference: bool = False) -> None:
    """GGUF blocks through kt's C++ kernels, or (reference) dequantized float32 weights."""
    _need(module, Linear)
    module.reference = reference


def moe_cpu(module: nn.Module, native: bool = True) -> None:
    """All routed experts in one native call (csrc/moe.cpp), or per expert in torch (native: false)."""
    _need(module, MoEExperts)
    module.reference = not native


def mla_attention(module: nn.Module, absorbed: bool = True) -> None:
    """Multi-head latent attention over the latent cache, absorbed (as llama.cpp) or naive per head."""
    from kt.models.deepseek_v3 import MLAttention

    _need(module, MLAttention)
    module.naive = not absorbed


def keep(module: nn.Module) -> None:
    """Leave the module as the model built it (a rule that shields modules from later rules)."""


OPS = {"linear_cpu": linear_cpu, "moe_cpu": moe_cpu, "mla_attention": mla_attention, "keep": keep}
