"""Qwen3-MoE from GGUF `qwen3moe` weights: GQA with per-head q/k RMSNorm and NEOX rope,
every layer's MLP a softmax-routed mixture of experts with the top-k weights renormalised
(llama.cpp always renormalises for this architecture, as Qwen3-MoE's configs ask)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kt.gguf.reader import GGUFFile
from kt.models.loading import COMMON_NAMES, GGUFCausalLM, GQAttention, PreNormBlock
from kt.ops import fused
from kt.ops.linear import Linear
from kt.ops.moe import MoEExperts
from kt.ops.rope import Rope


@dataclass(frozen=True)
class Qwen3MoeConfig:
    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    n_experts: int
    n_experts_used: int
    expert_ffn_dim: int
    norm_eps: float
    rope_base: float
    context_length: int

    @classmethod
    def from_gguf(cls, f: GGUFFile) -> "Qwen3MoeConfig":
        a = "qwen3moe"
        dim, n_heads = int(f.require(f"{a}.embedding_length")), int(f.require(f"{a}.attention.head_count"))
        return cls(
            vocab_size=len(f.require("tokenizer.ggml.tokens")), dim=dim,
            n_layers=int(f.require(f"{a}.block_count")), n_heads=n_heads,
            n_kv_heads=int(f.get(f"{a}.attention.head_count_kv", n_heads)),
            head_dim=int(f.get(f"{a}.attention.key_length", dim // n_heads)),
            n_experts=int(f.require(f"{a}.expert_count")), n_experts_used=int(f.require(f"{a}.expert_used_count")),
            expert_ffn_dim=int(f.require(f"{a}.expert_feed_forward_length")),
            norm_eps=float(f.get(f"{a}.attention.layer_norm_rms_epsilon", 1e-6)),
            rope_base=float(f.get(f"{a}.rope.freq_base", 1_000_000.0)),
            context_length=int(f.get(f"{a}.context_length", 32768)),
        )


class Qwen3MoeSparseBlock(nn.Module):
    def __init__(self, c: Qwen3MoeConfig):
        super().__init__()
        self.top_k = c.n_experts_used
        self.gate = Linear(c.dim, c.n_experts)  # the router
        self.experts = MoEExperts(c.n_experts, c.dim, c.expert_ffn_dim, "silu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(self.gate(x).float(), dim=-1)
        weights, ids = torch.topk(probs, self.top_k, dim=-1)
        return self.experts(x, ids, weights / weights.sum(-1, keepdim=True))


class Qwen3MoeBlock(PreNormBlock):
    def __init__(self, c: Qwen3MoeConfig, layer: int):
        rope = Rope(c.head_dim, c.rope_base, interleaved=False)
        super().__init__(c, GQAttention(c, layer, rope, qk_norm=True), Qwen3MoeSparseBlock(c))


class Qwen3MoeForCausalLM(GGUFCausalLM):
    config_class = Qwen3MoeConfig
    block = Qwen3MoeBlock
    gguf_names = [
        (r"model\.layers\.(\d+)\.post_attention_layernorm\.weight", (r"blk.\1.ffn_norm.weight",)),
    ] + COMMON_NAMES

    def fused_spec(self) -> dict:
        """This model for the fused native forward (kt.ops.fused), MoE layers included."""
        c = self.config
        layers = [dict(attn_norm=fused.vector(b.input_layernorm.weight), ffn_norm=fused.vector(b.post_attention_layernorm.weight),
                       rope=0, window=0, **fused.attention_spec(b.self_attn), top_k=b.mlp.top_k,
                       router=fused.weight_blocks(b.mlp.gate), gate_exps=fused.expert_blocks(b.mlp.experts.gate_proj),
                       up_exps=fused.expert_blocks(b.mlp.experts.up_proj),
                       down_exps=fused.expert_blocks(b.mlp.experts.down_proj))
                  for b in self.model.layers]
        config = dict(dim=c.dim, n_heads=c.n_heads, n_kv_heads=c.n_kv_heads, head_dim=c.head_dim,
                      ffn_dim=c.expert_ffn_dim, vocab=c.vocab_size, norm_eps=c.norm_eps, attn_scale=c.head_dim ** -0.5,
                      embed_scale=1.0, activation="silu",
                      ropes=[dict(dim=c.head_dim, base=c.rope_base, scale=1.0, neox=True)])
        return dict(config=config, layers=layers, final_norm=fused.vector(self.model.norm.weight),
                    lm_head=fused.weight_blocks(self.lm_head))
