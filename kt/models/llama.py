"""Llama (SmolLM2, Llama 2/3, Mistral-style dense GQA) from GGUF `llama` weights."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kt.gguf.reader import GGUFFile
from kt.models.loading import COMMON_NAMES, GGUFCausalLM, PreNormBlock
from kt.ops import fused
from kt.ops.attention import AttentionBatch, attend
from kt.ops.linear import Linear
from kt.ops.mlp import GatedMLP
from kt.ops.rope import Rope


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int
    norm_eps: float
    rope_base: float
    rope_dim: int
    context_length: int

    @classmethod
    def from_gguf(cls, f: GGUFFile) -> "LlamaConfig":
        a = f.architecture
        dim, n_heads = int(f.require(f"{a}.embedding_length")), int(f.require(f"{a}.attention.head_count"))
        head_dim = int(f.get(f"{a}.attention.key_length", dim // n_heads))
        return cls(
            vocab_size=int(f.get(f"{a}.vocab_size", len(f.require("tokenizer.ggml.tokens")))),
            dim=dim, n_layers=int(f.require(f"{a}.block_count")), n_heads=n_heads,
            n_kv_heads=int(f.get(f"{a}.attention.head_count_kv", n_heads)), head_dim=head_dim,
            ffn_dim=int(f.require(f"{a}.feed_forward_length")),
            norm_eps=float(f.require(f"{a}.attention.layer_norm_rms_epsilon")),
            rope_base=float(f.get(f"{a}.rope.freq_base", 10000.0)),
            rope_dim=int(f.get(f"{a}.rope.dimension_count", head_dim)),
            context_length=int(f.get(f"{a}.context_length", 4096)),
        )


class LlamaAttention(nn.Module):
    def __init__(self, c: LlamaConfig, layer: int):
        super().__init__()
        self.layer, self.c = layer, c
        self.q_proj = Linear(c.dim, c.n_heads * c.head_dim)
        self.k_proj = Linear(c.dim, c.n_kv_heads * c.head_dim)
        self.v_proj = Linear(c.dim, c.n_kv_heads * c.head_dim)
        self.o_proj = Linear(c.n_heads * c.head_dim, c.dim)
        self.rope = Rope(c.rope_dim, c.rope_base, interleaved=True)  # llama.cpp permuted q/k for NORM rope

    def forward(self, x: torch.Tensor, batch: AttentionBatch) -> torch.Tensor:
        T, c = x.shape[0], self.c
        q = self.q_proj(x).view(T, c.n_heads, c.head_dim)
        k = self.k_proj(x).view(T, c.n_kv_heads, c.head_dim)
        v = self.v_proj(x).view(T, c.n_kv_heads, c.head_dim)
        cos, sin = self.rope.cos_sin(batch.positions)
        q, k = self.rope.apply(q, cos, sin), self.rope.apply(k, cos, sin)
        out = attend(self.layer, q, k, v, batch, scale=c.head_dim ** -0.5)  # [T, H, D]
        return self.o_proj(out.reshape(T, -1))


class LlamaBlock(PreNormBlock):
    def __init__(self, c: LlamaConfig, layer: int):
        super().__init__(c, LlamaAttention(c, layer), GatedMLP(c.dim, c.ffn_dim, "silu"))


class LlamaForCausalLM(GGUFCausalLM):
    config_class = LlamaConfig
    block = LlamaBlock
    gguf_names = [(r"model\.layers\.(\d+)\.post_attention_layernorm\.weight", (r"blk.\1.ffn_norm.weight",))] + COMMON_NAMES


    def fused_spec(self) -> dict:
        """This model for the fused native forward (kt.ops.fused)."""
        c = self.config
        layers = [dict(attn_norm=fused.vector(b.input_layernorm.weight),
                       q=fused.weight_blocks(b.self_attn.q_proj), k=fused.weight_blocks(b.self_attn.k_proj),
                       v=fused.weight_blocks(b.self_attn.v_proj), o=fused.weight_blocks(b.self_attn.o_proj),
                       ffn_norm=fused.vector(b.post_attention_layernorm.weight),
                       gate=fused.weight_blocks(b.mlp.gate_proj), up=fused.weight_blocks(b.mlp.up_proj),
                       down=fused.weight_blocks(b.mlp.down_proj), rope=0, window=0)
                  for b in self.model.layers]
        config = dict(dim=c.dim, n_heads=c.n_heads, n_kv_heads=c.n_kv_heads, head_dim=c.head_dim, ffn_dim=c.ffn_dim,
                      vocab=c.vocab_size, norm_eps=c.norm_eps, attn_scale=c.head_dim ** -0.5, embed_scale=1.0,
                      activation="silu", ropes=[dict(dim=c.rope_dim, base=c.rope_base, scale=1.0, neox=False)])
        return dict(config=config, layers=layers, final_norm=fused.vector(self.model.norm.weight),
                    lm_head=fused.weight_blocks(self.lm_head))
