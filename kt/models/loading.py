"""What the models share: GGUF tensors attached to modules by name (HF-style module paths ->
llama.cpp tensor names), the attention, block and stack they are built from, the causal-LM shell."""
from __future__ import annotations

import re

from torch import nn

from kt.gguf.errors import GGUFError
from kt.gguf.reader import GGUFFile
import torch

from kt.ops.attention import AttentionBatch, attend
from kt.ops.linear import Embedding, Linear, gguf_weight
from kt.ops.norms import RMSNorm
from kt.ops.rope import Rope

# Shared by every architecture; models add their own rows in front.
COMMON_NAMES: list[tuple[str, tuple[str, ...]]] = [
    (r"model\.embed_tokens", ("token_embd.weight",)),
    (r"model\.norm\.weight", ("output_norm.weight",)),
    (r"lm_head", ("output.weight", "token_embd.weight")),  # tied embeddings when output.weight is absent
    (r"model\.layers\.(\d+)\.self_attn\.q_proj", (r"blk.\1.attn_q.weight",)),
    (r"model\.layers\.(\d+)\.self_attn\.k_proj", (r"blk.\1.attn_k.weight",)),
    (r"model\.layers\.(\d+)\.self_attn\.v_proj", (r"blk.\1.attn_v.weight",)),
    (r"model\.layers\.(\d+)\.self_attn\.o_proj", (r"blk.\1.attn_output.weight",)),
    (r"model\.layers\.(\d+)\.mlp\.gate_proj", (r"blk.\1.ffn_gate.weight",)),
    (r"model\.layers\.(\d+)\.mlp\.up_proj", (r"blk.\1.ffn_up.weight",)),
    (r"model\.layers\.(\d+)\.mlp\.down_proj", (r"blk.\1.ffn_down.weight",)),
    (r"model\.layers\.(\d+)\.input_layernorm\.weight", (r"blk.\1.attn_norm.weight",)),
    (r"model\.layers\.(\d+)\.self_attn\.q_norm\.weight", (r"blk.\1.attn_q_norm.weight",)),
    (r"model\.layers\.(\d+)\.self_attn\.k_norm\.weight", (r"blk.\1.attn_k_norm.weight",)),
    # Mixture-of-experts layers: the router and the stacked experts.
    (r"model\.layers\.(\d+)\.mlp\.gate", (r"blk.\1.ffn_gate_inp.weight",)),
    (r"model\.layers\.(\d+)\.mlp\.experts\.gate_proj", (r"blk.\1.ffn_gate_exps.weight",)),
    (r"model\.layers\.(\d+)\.mlp\.experts\.up_proj", (r"blk.\1.ffn_up_exps.weight",)),
    (r"model\.layers\.(\d+)\.mlp\.experts\.down_proj", (r"blk.\1.ffn_down_exps.weight",)),
]


def gguf_tensor_names(module_path: str, table: list[tuple[str, tuple[str, ...]]]) -> tuple[str, ...]:
    for pattern, templates in table:
        m = re.fullmatch(pattern, module_path)
        if m:
            return tuple(m.expand(t) for t in templates)
    raise KeyError(f"no GGUF tensor name known for module {module_path!r}")


def load_gguf_weights(model: nn.Module, gguf: GGUFFile, table: list[tuple[str, tuple[str, ...]]],
                      reference: bool = False) -> None:
    """`reference` for the whole model, or per module (and its children) where an optimize rule set it."""
    by_reference = [name for name, m in model.named_modules() if getattr(m, "reference", False)]
    for path, module in model.named_modules():
        if not hasattr(module, "load") or not callable(module.load):
            continue
        candidates = gguf_tensor_names(path, table)
        name = next((n for n in candidates if n in gguf.tensors), None)
        if name is None:
            raise GGUFError(gguf.path, f"required tensor {candidates[0]!r} is missing")
        try:
            own = reference or any(path == p or path.startswith(p + ".") for p in by_reference)
            module.load(gguf_weight(gguf.tensors[name], own))
        except ValueError as e:
            raise GGUFError(gguf.path, f"tensor {name!r}: {e}") from None


class GQAttention(nn.Module):
    """Grouped-query attention with rope, optionally RMS-normed per head before it (Gemma 3,
    Qwen3) and sliding (Gemma 3's local layers): Llama's, Gemma's and Qwen's attention."""

    def __init__(self, c, layer: int, rope: Rope, qk_norm: bool = False, window: int | None = None):
        super().__init__()
        self.layer, self.c, self.rope, self.window = layer, c, rope, window
        self.q_proj = Linear(c.dim, c.n_heads * c.head_dim)
        self.k_proj = Linear(c.dim, c.n_kv_heads * c.head_dim)
        self.v_proj = Linear(c.dim, c.n_kv_heads * c.head_dim)
        self.o_proj = Linear(c.n_heads * c.head_dim, c.dim)
        if qk_norm:
            self.q_norm, self.k_norm = RMSNorm(c.head_dim, c.norm_eps), RMSNorm(c.head_dim, c.norm_eps)
        self.qk_norm = qk_norm

    def forward(self, x: torch.Tensor, batch: AttentionBatch) -> torch.Tensor:
        T, c = x.shape[0], self.c
        q = self.q_proj(x).view(T, c.n_heads, c.head_dim)
        k = self.k_proj(x).view(T, c.n_kv_heads, c.head_dim)
        v = self.v_proj(x).view(T, c.n_kv_heads, c.head_dim)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        cos, sin = self.rope.cos_sin(batch.positions)
        q, k = self.rope.apply(q, cos, sin), self.rope.apply(k, cos, sin)
        out = attend(self.layer, q, k, v, batch, scale=c.head_dim ** -0.5, window=self.window)  # [T, H, D]
        return self.o_proj(out.reshape(T, -1))


class PreNormBlock(nn.Module):
    """x + attn(norm(x)), then + mlp(norm(x)): the layer of Llama, Qwen3-MoE and DeepSeek."""

    def __init__(self, c, attention: nn.Module, mlp: nn.Module):
        super().__init__()
        self.input_layernorm = RMSNorm(c.dim, c.norm_eps)
        self.self_attn = attention
        self.post_attention_layernorm = RMSNorm(c.dim, c.norm_eps)
        self.mlp = mlp

    def forward(self, x, batch):
        x = x + self.self_attn(self.input_layernorm(x), batch)
        return x + self.mlp(self.post_attention_layernorm(x))


class DecoderStack(nn.Module):
    """embed_tokens, the layers (`block(config, i)` each), the final norm: HF's `model.*` names."""

    def __init__(self, c, block):
        super().__init__()
        self.embed_tokens = Embedding(c.vocab_size, c.dim)
        self.layers = nn.ModuleList(block(c, i) for i in range(c.n_layers))
        self.norm = RMSNorm(c.dim, c.norm_eps)


class GGUFCausalLM(nn.Module):
    """What every model shares: a DecoderStack, weights attached by GGUF tensor name, scores
    from `lm_head`. Subclasses set `config_class`, `gguf_names` and `block` (one layer)."""

    config_class: type
    block: type
    gguf_names: list[tuple[str, tuple[str, ...]]] = COMMON_NAMES

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.model = DecoderStack(config, self.block)
        self.lm_head = Linear(config.dim, config.vocab_size)

    def load_gguf(self, gguf: GGUFFile, reference: bool = False) -> None:
        load_gguf_weights(self, gguf, self.gguf_names, reference)

    def embed(self, ids):
        return self.model.embed_tokens(ids)

    def forward(self, ids, batch):
        """ids [T] -> final hidden states [T, dim] (normed); `logits` turns chosen rows into scores."""
        x = self.embed(ids)
        for layer in self.model.layers:
            x = layer(x, batch)
        return self.model.norm(x)

    def logits(self, hidden):
        return self.lm_head(hidden)  # [T, vocab]
