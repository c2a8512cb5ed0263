"""DeepSeek-V2, V2-Lite, V3 and R1 from GGUF `deepseek2` weights.

Multi-head latent attention (MLA): keys and values are rebuilt per head from a shared
latent (kv_lora_rank wide, RMS-normed) plus one rope part, so the cache holds only the
latent and the rope part per token (kv_lora_rank + rope dims, about a tenth of per-head
K/V). The attention runs in the absorbed form, as llama.cpp does: q_nope is carried into
the latent space through each head's k_b, the weights gather latents, and each head's
v_b turns them into values; `naive=True` decompresses K and V per head instead (the
form transformers computes; the tests check the two agree). Optional q_lora; both
layouts llama.cpp has written (one attn_kv_b, or attn_k_b / attn_v_b); YaRN rope.

The first `leading_dense` layers have a dense MLP; the others route each token to the
top-k of the routed experts (V2: softmax scores; V3: sigmoid scores, chosen with a
correction bias within the best n_group groups) and add the shared experts.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from kt.gguf.dequant import dequantize
from kt.gguf.reader import GGUFFile
from kt.models.loading import COMMON_NAMES, GGUFCausalLM, PreNormBlock
from kt.ops.attention import AttentionBatch
from kt.ops.linear import Linear, Parameter
from kt.ops.mlp import GatedMLP
from kt.ops.moe import MoEExperts
from kt.ops.norms import RMSNorm
from kt.ops.rope import Rope, YarnRope, yarn_mscale


@dataclass(frozen=True)
class DeepseekV3Config:
    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    q_lora_rank: int  # 0: no q_lora
    kv_lora_rank: int
    qk_nope_dim: int
    qk_rope_dim: int
    v_dim: int
    split_kv_b: bool
    leading_dense: int
    dense_ffn_dim: int
    n_experts: int
    n_experts_used: int
    n_shared_experts: int
    expert_ffn_dim: int
    gating: str  # "softmax" (V2) or "sigmoid" (V3)
    n_group: int
    topk_group: int
    routed_scaling: float
    norm_topk: bool
    rope_base: float
    yarn_factor: float  # 0: no YaRN
    yarn_original_context: int
    yarn_mscale_all_dim: float
    norm_eps: float
    context_length: int

    @classmethod
    def from_gguf(cls, f: GGUFFile) -> "DeepseekV3Config":
        a = "deepseek2"
        rope = int(f.require(f"{a}.rope.dimension_count"))
        split = "blk.0.attn_k_b.weight" in f.tensors
        qk = int(f.require(f"{a}.attention.key_length_mla" if split else f"{a}.attention.key_length"))
        v = int(f.require(f"{a}.attention.value_length_mla" if split else f"{a}.attention.value_length"))
        scaled = f.get(f"{a}.rope.scaling.type") == "yarn"
        return cls(
            vocab_size=len(f.require("tokenizer.ggml.tokens")), dim=int(f.require(f"{a}.embedding_length")),
            n_layers=int(f.require(f"{a}.block_count")), n_heads=int(f.require(f"{a}.attention.head_count")),
            q_lora_rank=int(f.get(f"{a}.attention.q_lora_rank", 0)), kv_lora_rank=int(f.require(f"{a}.attention.kv_lora_rank")),
            qk_nope_dim=qk - rope, qk_rope_dim=rope, v_dim=v, split_kv_b=split,
            leading_dense=int(f.get(f"{a}.leading_dense_block_count", 0)),
            dense_ffn_dim=int(f.require(f"{a}.feed_forward_length")),
            n_experts=int(f.require(f"{a}.expert_count")), n_experts_used=int(f.require(f"{a}.expert_used_count")),
            n_shared_experts=int(f.get(f"{a}.expert_shared_count", 0)),
            expert_ffn_dim=int(f.require(f"{a}.expert_feed_forward_length")),
            gating="sigmoid" if int(f.get(f"{a}.expert_gating_func", 1)) == 2 else "softmax",
            n_group=int(f.get(f"{a}.expert_group_count", 1)), topk_group=int(f.get(f"{a}.expert_group_used_count", 1)),
            routed_scaling=float(f.get(f"{a}.expert_weights_scale", 1.0)),
            norm_topk=bool(f.get(f"{a}.expert_weights_norm", False)),
            rope_base=float(f.get(f"{a}.rope.freq_base", 10000.0)),
            yarn_factor=float(f.get(f"{a}.rope.scaling.factor", 0.0)) if scaled else 0.0,
            yarn_original_context=int(f.get(f"{a}.rope.scaling.original_context_length", 4096)),
            yarn_mscale_all_dim=float(f.get(f"{a}.rope.scaling.yarn_log_multiplier", 0.1)) / 0.1,
            norm_eps=float(f.get(f"{a}.attention.layer_norm_rms_epsilon", 1e-6)),
            context_length=int(f.get(f"{a}.context_length", 4096)),
        )

    @property
    def n_kv_heads(self) -> int:  # the cache holds one latent "head"
        return 1


class DenseTensor(nn.Module):
    """A GGUF tensor of any rank, dequantized to float32 at load (MLA's per-head k_b / v_b)."""

    def __init__(self, *shape: int):
        super().__init__()
        self.shape, self.value = shape, None

    def load(self, weight) -> None:
        if tuple(weight.shape) != self.shape:
            raise ValueError(f"tensor of shape {tuple(weight.shape)}, expected {self.shape}")
        t = weight.tensor
        self.value = torch.from_numpy(np.array(dequantize(t.data, t.ggml_type, t.shape)))


class MLAttention(nn.Module):
    def __init__(self, c: DeepseekV3Config, layer: int, naive: bool = False):
        super().__init__()
        self.layer, self.c, self.naive = layer, c, naive
        qk = c.qk_nope_dim + c.qk_rope_dim
        if c.q_lora_rank:
            self.q_a_proj = Linear(c.dim, c.q_lora_rank)
            self.q_a_layernorm = RMSNorm(c.q_lora_rank, c.norm_eps)
            self.q_b_proj = Linear(c.q_lora_rank, c.n_heads * qk)
        else:
            self.q_proj = Linear(c.dim, c.n_heads * qk)
        self.kv_a_proj_with_mqa = Linear(c.dim, c.kv_lora_rank + c.qk_rope_dim)
        self.kv_a_layernorm = RMSNorm(c.kv_lora_rank, c.norm_eps)
        if c.split_kv_b:
            self.k_b = DenseTensor(c.n_heads, c.kv_lora_rank, c.qk_nope_dim)
            self.v_b = DenseTensor(c.n_heads, c.v_dim, c.kv_lora_rank)
        else:
            self.kv_b_proj = DenseTensor(c.n_heads * (c.qk_nope_dim + c.v_dim), c.kv_lora_rank)
        self.o_proj = Linear(c.n_heads * c.v_dim, c.dim)
        if c.yarn_factor:
            self.rope = YarnRope(c.qk_rope_dim, c.rope_base, interleaved=True, factor=c.yarn_factor,
                                 original_context=c.yarn_original_context)
            self.scale = qk ** -0.5 * yarn_mscale(c.yarn_factor, c.yarn_mscale_all_dim) ** 2
        else:
            self.rope = Rope(c.qk_rope_dim, c.rope_base, interleaved=True)
            self.scale = qk ** -0.5

    def absorb(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per head k_b [H, kv_lora, nope] and v_b [H, v, kv_lora], from either layout."""
        c = self.c
        if c.split_kv_b:
            return self.k_b.value, self.v_b.value
        kv_b = self.kv_b_proj.value.view(c.n_heads, c.qk_nope_dim + c.v_dim, c.kv_lora_rank)
        return kv_b[:, :c.qk_nope_dim].transpose(1, 2), kv_b[:, c.qk_nope_dim:]

    def forward(self, x: torch.Tensor, batch: AttentionBatch) -> torch.Tensor:
        c, T = self.c, x.shape[0]
        q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x))) if c.q_lora_rank else self.q_proj(x)
        q = q.view(T, c.n_heads, c.qk_nope_dim + c.qk_rope_dim)
        q_nope, q_pe = q[..., :c.qk_nope_dim], q[..., c.qk_nope_dim:]
        ckv = self.kv_a_proj_with_mqa(x)
        latent, k_pe = self.kv_a_layernorm(ckv[:, :c.kv_lora_rank]), ckv[:, c.kv_lora_rank:]
        cos, sin = self.rope.cos_sin(batch.positions)
        q_pe = self.rope.apply(q_pe, cos, sin)
        k_pe = self.rope.apply(k_pe[:, None, :], cos, sin)[:, 0]
        entries, _, kv_pos = batch.kv.store(self.layer, torch.cat([latent, k_pe], -1)[:, None, :],
                                            x.new_empty(T, 1, 0), batch.positions)
        entries = entries[:, 0].float()  # [S, kv_lora + rope]
        cached, cached_pe = entries[:, :c.kv_lora_rank], entries[:, c.kv_lora_rank:]
        k_b, v_b = self.absorb()
        allowed = kv_pos[None, :] <= batch.positions[:, None]  # [T, S]
        if self.naive:  # per-head keys and values, as transformers computes
            k = torch.cat([torch.einsum("sc,hcn->shn", cached, k_b),
                           cached_pe[:, None, :].expand(-1, c.n_heads, -1)], -1)
            v = torch.einsum("sc,hvc->shv", cached, v_b)
            scores = torch.einsum("thd,shd->hts", torch.cat([q_nope, q_pe], -1), k) * self.scale
            weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1)
            out = torch.einsum("hts,shv->thv", weights, v)
        else:  # absorbed: attention over the latents themselves
            q_latent = torch.einsum("thn,hcn->thc", q_nope, k_b)
            scores = (torch.einsum("thc,sc->hts", q_latent, cached) + torch.einsum("thr,sr->hts", q_pe, cached_pe)) * self.scale
            weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1)
            out = torch.einsum("thc,hvc->thv", torch.einsum("hts,sc->thc", weights, cached), v_b)
        return self.o_proj(out.reshape(T, -1))


class DeepseekMoE(nn.Module):
    def __init__(self, c: DeepseekV3Config):
        super().__init__()
        self.c = c
        self.gate = Linear(c.dim, c.n_experts)  # the router
        if c.gating == "sigmoid":
            self.gate_bias = Parameter(c.n_experts)  # score-correction bias: it picks experts, never weighs them
        self.experts = MoEExperts(c.n_experts, c.dim, c.expert_ffn_dim, "silu")
        if c.n_shared_experts:
            self.shared_experts = GatedMLP(c.dim, c.n_shared_experts * c.expert_ffn_dim, "silu")

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.c
        logits = self.gate(x).float()
        if c.gating == "softmax":
            scores = torch.softmax(logits, -1)
            choice = scores
        else:
            scores = torch.sigmoid(logits)
            choice = scores + self.gate_bias.value
        if c.n_group > 1:  # keep the topk_group groups whose two best experts score highest
            grouped = choice.view(-1, c.n_group, c.n_experts // c.n_group)
            best = torch.topk(grouped.topk(2, -1).values.sum(-1), c.topk_group, -1).indices
            keep = torch.zeros_like(grouped[..., 0], dtype=torch.bool).scatter_(1, best, True)
            choice = choice.masked_fill(~keep[..., None].expand_as(grouped).reshape_as(choice), 0.0)
        ids = torch.topk(choice, c.n_experts_used, -1).indices
        weights = scores.gather(1, ids)
        if c.norm_topk:
            weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
        return ids, weights * c.routed_scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids, weights = self.route(x)
        out = self.experts(x, ids, weights)
        return out + self.shared_experts(x) if self.c.n_shared_experts else out


class DeepseekBlock(PreNormBlock):
    def __init__(self, c: DeepseekV3Config, layer: int):
        mlp = GatedMLP(c.dim, c.dense_ffn_dim, "silu") if layer < c.leading_dense else DeepseekMoE(c)
        super().__init__(c, MLAttention(c, layer), mlp)


class DeepseekV3ForCausalLM(GGUFCausalLM):
    config_class = DeepseekV3Config
    block = DeepseekBlock
    gguf_names = [(rf"model\.layers\.(\d+)\.{module}", (rf"blk.\1.{tensor}",)) for module, tensor in [
        (r"self_attn\.q_proj", "attn_q.weight"), (r"self_attn\.q_a_proj", "attn_q_a.weight"),
        (r"self_attn\.q_a_layernorm\.weight", "attn_q_a_norm.weight"), (r"self_attn\.q_b_proj", "attn_q_b.weight"),
        (r"self_attn\.kv_a_proj_with_mqa", "attn_kv_a_mqa.weight"),
        (r"self_attn\.kv_a_layernorm\.weight", "attn_kv_a_norm.weight"),
        (r"self_attn\.kv_b_proj", "attn_kv_b.weight"), (r"self_attn\.k_b", "attn_k_b.weight"),
        (r"self_attn\.v_b", "attn_v_b.weight"),
        (r"post_attention_layernorm\.weight", "ffn_norm.weight"),
        (r"mlp\.gate_bias", "exp_probs_b.bias"),
        (r"mlp\.shared_experts\.gate_proj", "ffn_gate_shexp.weight"),
        (r"mlp\.shared_experts\.up_proj", "ffn_up_shexp.weight"),
        (r"mlp\.shared_experts\.down_proj", "ffn_down_shexp.weight"),
    ]] + COMMON_NAMES

    def use_naive_attention(self, naive: bool = True) -> None:
        for layer in self.model.layers:
            layer.self_attn.naive = naive
