"""Llama (SmolLM2, Llama 2/3, Mistral-style dense GQA) from GGUF `llama` weights."""
from __future__ import annotations

from dataclasses import dataclass

from kt.gguf.reader import GGUFFile
from kt.models.loading import COMMON_NAMES, GGUFCausalLM, GQAttention, PreNormBlock
from kt.ops import fused
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


class LlamaBlock(PreNormBlock):
    def __init__(self, c: LlamaConfig, layer: int):
        rope = Rope(c.rope_dim, c.rope_base, interleaved=True)  # llama.cpp permuted q/k for NORM rope
        super().__init__(c, GQAttention(c, layer, rope), GatedMLP(c.dim, c.ffn_dim, "silu"))


class LlamaForCausalLM(GGUFCausalLM):
    config_class = LlamaConfig
    block = LlamaBlock
    gguf_names = [(r"model\.layers\.(\d+)\.post_attention_layernorm\.weight", (r"blk.\1.ffn_norm.weight",))] + COMMON_NAMES


    def fused_spec(self) -> dict:
        """This model for the fused native forward (kt.ops.fused)."""
        c = self.config
        layers = [dict(attn_norm=fused.vector(b.input_layernorm.weight), ffn_norm=fused.vector(b.post_attention_layernorm.weight),
                       rope=0, window=0, **fused.attention_spec(b.self_attn), **fused.gated_mlp_spec(b.mlp))
                  for b in self.model.layers]
        config = dict(dim=c.dim, n_heads=c.n_heads, n_kv_heads=c.n_kv_heads, head_dim=c.head_dim, ffn_dim=c.ffn_dim,
                      vocab=c.vocab_size, norm_eps=c.norm_eps, attn_scale=c.head_dim ** -0.5, embed_scale=1.0,
                      activation="silu", ropes=[dict(dim=c.rope_dim, base=c.rope_base, scale=1.0, neox=False)])
        return dict(config=config, layers=layers, final_norm=fused.vector(self.model.norm.weight),
                    lm_head=fused.weight_blocks(self.lm_head))
