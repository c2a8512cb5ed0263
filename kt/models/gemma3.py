"""Gemma 3 (text) from GGUF `gemma3` weights: sandwich norms, q/k norms, GELU MLP,
sliding-window layers with their own rope base, embeddings scaled by sqrt(dim)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kt.gguf.reader import GGUFFile
from kt.models.loading import COMMON_NAMES, GGUFCausalLM, GQAttention
from kt.ops import fused
from kt.ops.mlp import GatedMLP
from kt.ops.norms import RMSNorm
from kt.ops.rope import Rope


@dataclass(frozen=True)
class Gemma3Config:
    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int
    norm_eps: float
    rope_base: float  # global layers
    rope_base_local: float  # sliding-window layers
    rope_scale: float  # linear scaling of global layers' positions
    sliding_window: int
    sliding_window_pattern: int  # every Nth layer is global, the others slide
    context_length: int

    @classmethod
    def from_gguf(cls, f: GGUFFile) -> "Gemma3Config":
        a = "gemma3"
        dim, n_heads = int(f.require(f"{a}.embedding_length")), int(f.require(f"{a}.attention.head_count"))
        factor = f.get(f"{a}.rope.scaling.factor")
        return cls(
            vocab_size=len(f.require("tokenizer.ggml.tokens")), dim=dim,
            n_layers=int(f.require(f"{a}.block_count")), n_heads=n_heads,
            n_kv_heads=int(f.get(f"{a}.attention.head_count_kv", n_heads)),
            head_dim=int(f.get(f"{a}.attention.key_length", 256)),
            ffn_dim=int(f.require(f"{a}.feed_forward_length")),
            norm_eps=float(f.get(f"{a}.attention.layer_norm_rms_epsilon", 1e-6)),
            rope_base=float(f.get(f"{a}.rope.freq_base", 1_000_000.0)),
            rope_base_local=float(f.get(f"{a}.rope.freq_base_swa", 10_000.0)),
            rope_scale=1.0 / float(factor) if factor else 1.0,
            sliding_window=int(f.get(f"{a}.attention.sliding_window", 512)),
            sliding_window_pattern=int(f.get(f"{a}.attention.sliding_window_pattern", 6)),
            context_length=int(f.get(f"{a}.context_length", 32768)),
        )

    def is_sliding(self, layer: int) -> bool:
        return (layer + 1) % self.sliding_window_pattern != 0


def gemma3_attention(c: Gemma3Config, layer: int) -> GQAttention:
    """Sliding layers: a window and their own rope base; global ones: the scaled long rope."""
    sliding = c.is_sliding(layer)
    rope = Rope(c.head_dim, c.rope_base_local if sliding else c.rope_base, interleaved=False,
                scale=1.0 if sliding else c.rope_scale)
    return GQAttention(c, layer, rope, qk_norm=True, window=c.sliding_window if sliding else None)


class Gemma3Block(nn.Module):
    def __init__(self, c: Gemma3Config, layer: int):
        super().__init__()
        self.input_layernorm = RMSNorm(c.dim, c.norm_eps)
        self.self_attn = gemma3_attention(c, layer)
        self.post_attention_layernorm = RMSNorm(c.dim, c.norm_eps)
        self.pre_feedforward_layernorm = RMSNorm(c.dim, c.norm_eps)
        self.mlp = GatedMLP(c.dim, c.ffn_dim, "gelu_tanh")
        self.post_feedforward_layernorm = RMSNorm(c.dim, c.norm_eps)

    def forward(self, x, batch):
        x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), batch))
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))


class Gemma3ForCausalLM(GGUFCausalLM):
    config_class = Gemma3Config
    block = Gemma3Block
    gguf_names = [
        (r"model\.layers\.(\d+)\.post_attention_layernorm\.weight", (r"blk.\1.post_attention_norm.weight",)),
        (r"model\.layers\.(\d+)\.pre_feedforward_layernorm\.weight", (r"blk.\1.ffn_norm.weight",)),
        (r"model\.layers\.(\d+)\.post_feedforward_layernorm\.weight", (r"blk.\1.post_ffw_norm.weight",)),
    ] + COMMON_NAMES

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_tokens(ids) * torch.tensor(self.config.dim ** 0.5)  # [T, dim]

    def fused_spec(self) -> dict:
        """This model for the fused native forward (kt.ops.fused): rope 0 for global layers, 1 for sliding ones."""
        c = self.config
        layers = [dict(attn_norm=fused.vector(b.input_layernorm.weight),
                       post_attn_norm=fused.vector(b.post_attention_layernorm.weight),
                       ffn_norm=fused.vector(b.pre_feedforward_layernorm.weight),
                       post_ffn_norm=fused.vector(b.post_feedforward_layernorm.weight),
                       rope=1 if c.is_sliding(i) else 0, window=c.sliding_window if c.is_sliding(i) else 0,
                       **fused.attention_spec(b.self_attn), **fused.gated_mlp_spec(b.mlp))
                  for i, b in enumerate(self.model.layers)]
        ropes = [dict(dim=c.head_dim, base=c.rope_base, scale=c.rope_scale, neox=True),
                 dict(dim=c.head_dim, base=c.rope_base_local, scale=1.0, neox=True)]
        config = dict(dim=c.dim, n_heads=c.n_heads, n_kv_heads=c.n_kv_heads, head_dim=c.head_dim, ffn_dim=c.ffn_dim,
                      vocab=c.vocab_size, norm_eps=c.norm_eps, attn_scale=c.head_dim ** -0.5,
                      embed_scale=float(torch.tensor(c.dim ** 0.5)), activation="gelu_tanh", ropes=ropes)
        return dict(config=config, layers=layers, final_norm=fused.vector(self.model.norm.weight),
                    lm_head=fused.weight_blocks(self.lm_head))
