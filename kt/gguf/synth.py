"""Synthetic GGUF files with llama.cpp's exact layout (tensor names, shapes, metadata,
tokenizer keys) and random weights, quantized by kt's own quantizers: test and
benchmark models for architectures whose real files cannot be fetched here.

    python -m kt.gguf.synth --arch qwen3moe|deepseek2 --preset tiny|... --layers N --quant Q4_K_M -o FILE

The Q4_K_M mix follows llama.cpp's (llama_tensor_get_type): Q4_K by default; Q6_K for
the output head, and for attn_v and the down projections (ffn_down, ffn_down_exps) of
the layers llama.cpp gives more bits (the first and last eighth, and every third in
between); norms and the expert router stay F32. A tensor whose rows are not a multiple
of 256 falls back as llama.cpp's does: Q4_K -> Q5_0, Q6_K -> Q8_0.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFWriter, TokenType

from kt.gguf.quantize import quantize

QUANT_MIXES = ("Q4_K_M", "Q8_0", "F32")


@dataclass(frozen=True)
class Qwen3MoePreset:
    dim: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    n_experts: int
    n_experts_used: int
    expert_ffn: int
    layers: int
    rope_base: float = 1_000_000.0
    norm_eps: float = 1e-6
    context_length: int = 4096


QWEN3MOE_PRESETS = {
    "tiny": Qwen3MoePreset(dim=256, n_heads=4, n_kv_heads=2, head_dim=64, n_experts=8, n_experts_used=2,
                           expert_ffn=256, layers=2),
    # Qwen3-30B-A3B's layer shape: 2048 wide, 32 heads of 128 (4 KV heads), 128 experts of 768, top-8.
    "30b-a3b": Qwen3MoePreset(dim=2048, n_heads=32, n_kv_heads=4, head_dim=128, n_experts=128, n_experts_used=8,
                              expert_ffn=768, layers=48, context_length=40960),
}


def byte_level_vocab() -> tuple[list[str], list[int], list[str], dict[str, int]]:
    """A small real byte-level BPE vocabulary: GPT-2's 256 byte symbols, a few merges, Qwen's
    chat specials. Returns tokens, token types, merges and the special ids."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    byte_char, shifted = {}, 0
    for b in range(256):
        if b in printable:
            byte_char[b] = chr(b)
        else:
            byte_char[b] = chr(256 + shifted)
            shifted += 1
    tokens = [byte_char[b] for b in range(256)]
    merges = ["Ġ t", "h e", "Ġ a", "i n", "Ġt he", "e r", "o n", "Ġ s"]
    tokens += ["".join(m.split(" ")) for m in merges]
    specials = {"eos": len(tokens), "im_start": len(tokens) + 1, "im_end": len(tokens) + 2}
    tokens += ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    types = [TokenType.NORMAL] * (len(tokens) - 3) + [TokenType.CONTROL] * 3
    return tokens, [int(t) for t in types], merges, specials


def more_bits(layer: int, n_layers: int) -> bool:
    """llama.cpp's use_more_bits: the first and last eighth of the layers, and every third between."""
    return layer < n_layers // 8 or layer >= 7 * n_layers // 8 or (layer - n_layers // 8) % 3 == 2


def tensor_type(name: str, cols: int, mix: str, layer: int | None, n_layers: int) -> Q:
    if mix == "F32" or name.endswith("_norm.weight") or "ffn_gate_inp" in name or name.endswith(".bias"):
        return Q.F32
    if mix == "Q8_0":
        return Q.Q8_0
    wanted = Q.Q4_K
    if name == "output.weight":
        wanted = Q.Q6_K
    elif layer is not None and any(k in name for k in ("attn_v.", "ffn_down.", "ffn_down_exps.")) and more_bits(layer, n_layers):
        wanted = Q.Q6_K
    if cols % 256:
        wanted = {Q.Q4_K: Q.Q5_0, Q.Q6_K: Q.Q8_0}[wanted]
    return wanted


class SynthWriter:
    """Random weights (std 1 / sqrt(fan-in); norms near 1) quantized as the mix says, added to a GGUFWriter."""

    def __init__(self, path: Path, arch: str, mix: str, n_layers: int, seed: int):
        if mix not in QUANT_MIXES:
            raise ValueError(f"unknown quantization mix {mix!r} (known: {', '.join(QUANT_MIXES)})")
        self.writer = GGUFWriter(str(path), arch)
        self.mix, self.n_layers = mix, n_layers
        self.rng = np.random.default_rng(seed)

    def matrix(self, name: str, *shape: int, layer: int | None = None, scale: float | None = None) -> None:
        """A weight of numpy shape (..., rows, cols), leading dims for stacked experts."""
        cols = shape[-1]
        w = self.rng.standard_normal(shape, dtype=np.float32) * np.float32(scale if scale is not None else cols ** -0.5)
        qtype = tensor_type(name, cols, self.mix, layer, self.n_layers)
        raw = quantize(w.reshape(-1, cols), qtype)
        self.writer.add_tensor(name, raw.reshape(*shape[:-1], raw.shape[-1]), raw_dtype=qtype)  # byte shape

    def experts(self, block: str, layer: int, n_experts: int, ffn: int, dim: int) -> None:
        """A layer's routed experts, stacked as GGUF keeps them."""
        self.matrix(f"{block}.ffn_gate_exps.weight", n_experts, ffn, dim, layer=layer)
        self.matrix(f"{block}.ffn_up_exps.weight", n_experts, ffn, dim, layer=layer)
        self.matrix(f"{block}.ffn_down_exps.weight", n_experts, dim, ffn, layer=layer)

    def norm(self, name: str, size: int) -> None:
        self.writer.add_tensor(name, (1.0 + 0.1 * self.rng.standard_normal(size)).astype(np.float32))

    def header(self, context_length: int, dim: int, layers: int, ffn: int, n_heads: int, rope_base: float,
               norm_eps: float) -> None:
        """The keys every architecture has."""
        w = self.writer
        w.add_name(f"kt synthetic {w.arch}")
        w.add_context_length(context_length)
        w.add_embedding_length(dim)
        w.add_block_count(layers)
        w.add_feed_forward_length(ffn)
        w.add_head_count(n_heads)
        w.add_rope_freq_base(rope_base)
        w.add_layer_norm_rms_eps(norm_eps)

    def tokenizer(self, pre: str) -> dict[str, int]:
        tokens, types, merges, specials = byte_level_vocab()
        w = self.writer
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(pre)
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges(merges)
        w.add_eos_token_id(specials["eos"])
        w.add_bos_token_id(specials["eos"])
        w.add_add_bos_token(False)
        return {"vocab": len(tokens), **specials}

    def finish(self) -> None:
        self.writer.write_header_to_file()
        self.writer.write_kv_data_to_file()
        self.writer.write_tensors_to_file()
        self.writer.close()


def write_qwen3moe(path: Path, preset: Qwen3MoePreset, mix: str = "Q4_K_M", seed: int = 0) -> Path:
    p, a = preset, "qwen3moe"
    s = SynthWriter(path, a, mix, p.layers, seed)
    w = s.writer
    vocab = s.tokenizer("qwen2")["vocab"]
    s.header(p.context_length, p.dim, p.layers, p.expert_ffn, p.n_heads, p.rope_base, p.norm_eps)
    w.add_head_count_kv(p.n_kv_heads)
    w.add_key_length(p.head_dim)
    w.add_value_length(p.head_dim)
    w.add_expert_count(p.n_experts)
    w.add_expert_used_count(p.n_experts_used)
    w.add_expert_feed_forward_length(p.expert_ffn)
    s.matrix("token_embd.weight", vocab, p.dim, scale=1.0)
    s.norm("output_norm.weight", p.dim)
    s.matrix("output.weight", vocab, p.dim)
    for i in range(p.layers):
        b = f"blk.{i}"
        s.norm(f"{b}.attn_norm.weight", p.dim)
        s.matrix(f"{b}.attn_q.weight", p.n_heads * p.head_dim, p.dim, layer=i)
        s.matrix(f"{b}.attn_k.weight", p.n_kv_heads * p.head_dim, p.dim, layer=i)
        s.matrix(f"{b}.attn_v.weight", p.n_kv_heads * p.head_dim, p.dim, layer=i)
        s.matrix(f"{b}.attn_output.weight", p.dim, p.n_heads * p.head_dim, layer=i)
        s.norm(f"{b}.attn_q_norm.weight", p.head_dim)
        s.norm(f"{b}.attn_k_norm.weight", p.head_dim)
        s.norm(f"{b}.ffn_norm.weight", p.dim)
        s.matrix(f"{b}.ffn_gate_inp.weight", p.n_experts, p.dim, layer=i)
        s.experts(b, i, p.n_experts, p.expert_ffn, p.dim)
    s.finish()
    return path


@dataclass(frozen=True)
class Deepseek2Preset:
    dim: int
    n_heads: int
    q_lora_rank: int  # 0: no q_lora (a plain attn_q)
    kv_lora_rank: int
    qk_nope_dim: int
    qk_rope_dim: int
    v_dim: int
    n_experts: int
    n_experts_used: int
    n_shared_experts: int
    expert_ffn: int
    dense_ffn: int
    leading_dense: int
    layers: int
    gating: str = "sigmoid"  # V3: sigmoid scores + score-correction bias; V2: softmax
    n_group: int = 1
    topk_group: int = 1
    routed_scaling: float = 1.0
    norm_topk: bool = True
    yarn_factor: float = 0.0  # 0: no rope scaling
    yarn_original_context: int = 4096
    yarn_mscale_all_dim: float = 1.0
    split_kv_b: bool = True  # today's attn_k_b / attn_v_b; False: one attn_kv_b (early-2025 files)
    rope_base: float = 10000.0
    norm_eps: float = 1e-6
    context_length: int = 4096


DEEPSEEK2_PRESETS = {
    "tiny": Deepseek2Preset(dim=256, n_heads=4, q_lora_rank=256, kv_lora_rank=256, qk_nope_dim=64, qk_rope_dim=32,
                            v_dim=64, n_experts=8, n_experts_used=2, n_shared_experts=1, expert_ffn=256, dense_ffn=512,
                            leading_dense=1, layers=3, n_group=2, topk_group=1, routed_scaling=2.5, yarn_factor=4.0,
                            yarn_original_context=256, context_length=1024),
    "tiny-v2": Deepseek2Preset(dim=256, n_heads=4, q_lora_rank=0, kv_lora_rank=256, qk_nope_dim=64, qk_rope_dim=32,
                               v_dim=64, n_experts=8, n_experts_used=2, n_shared_experts=2, expert_ffn=256,
                               dense_ffn=512, leading_dense=1, layers=3, gating="softmax", norm_topk=False,
                               split_kv_b=False),
    "v2-lite": Deepseek2Preset(dim=2048, n_heads=16, q_lora_rank=0, kv_lora_rank=512, qk_nope_dim=128, qk_rope_dim=64,
                               v_dim=128, n_experts=64, n_experts_used=6, n_shared_experts=2, expert_ffn=1408,
                               dense_ffn=10944, leading_dense=1, layers=27, gating="softmax", norm_topk=False,
                               yarn_factor=40.0, yarn_mscale_all_dim=0.707, context_length=163840),
    "v3": Deepseek2Preset(dim=7168, n_heads=128, q_lora_rank=1536, kv_lora_rank=512, qk_nope_dim=128, qk_rope_dim=64,
                          v_dim=128, n_experts=256, n_experts_used=8, n_shared_experts=1, expert_ffn=2048,
                          dense_ffn=18432, leading_dense=3, layers=61, n_group=8, topk_group=4, routed_scaling=2.5,
                          yarn_factor=40.0, context_length=163840),
}


def write_deepseek2(path: Path, preset: Deepseek2Preset, mix: str = "Q4_K_M", seed: int = 0) -> Path:
    """DeepSeek-V2 / V2-Lite / V3 / R1 as llama.cpp's converter writes `deepseek2`."""
    p, a = preset, "deepseek2"
    s = SynthWriter(path, a, mix, p.layers, seed)
    w = s.writer
    vocab = s.tokenizer("deepseek-v3")["vocab"]
    qk_dim = p.qk_nope_dim + p.qk_rope_dim
    s.header(p.context_length, p.dim, p.layers, p.dense_ffn, p.n_heads, p.rope_base, p.norm_eps)
    w.add_uint32(f"{a}.leading_dense_block_count", p.leading_dense)
    w.add_uint32(f"{a}.attention.q_lora_rank", p.q_lora_rank)  # llama.cpp insists on it, 0 when absent
    w.add_uint32(f"{a}.attention.kv_lora_rank", p.kv_lora_rank)
    w.add_uint32(f"{a}.rope.dimension_count", p.qk_rope_dim)
    if p.split_kv_b:  # one latent "head": keys kv_lora + rope wide, values kv_lora wide; per-head sizes in *_mla
        w.add_head_count_kv(1)
        w.add_key_length(p.kv_lora_rank + p.qk_rope_dim)
        w.add_value_length(p.kv_lora_rank)
        w.add_uint32(f"{a}.attention.key_length_mla", qk_dim)
        w.add_uint32(f"{a}.attention.value_length_mla", p.v_dim)
    else:
        w.add_head_count_kv(p.n_heads)
        w.add_key_length(qk_dim)
        w.add_value_length(p.v_dim)
    w.add_expert_count(p.n_experts)
    w.add_expert_used_count(p.n_experts_used)
    w.add_expert_shared_count(p.n_shared_experts)
    w.add_expert_feed_forward_length(p.expert_ffn)
    w.add_expert_weights_scale(p.routed_scaling)
    w.add_expert_weights_norm(p.norm_topk)
    w.add_uint32(f"{a}.expert_gating_func", 2 if p.gating == "sigmoid" else 1)  # llama.cpp: 1 softmax, 2 sigmoid
    w.add_uint32(f"{a}.expert_group_count", p.n_group)
    w.add_uint32(f"{a}.expert_group_used_count", p.topk_group)
    if p.yarn_factor:
        w.add_string(f"{a}.rope.scaling.type", "yarn")
        w.add_float32(f"{a}.rope.scaling.factor", p.yarn_factor)
        w.add_uint32(f"{a}.rope.scaling.original_context_length", p.yarn_original_context)
        w.add_float32(f"{a}.rope.scaling.yarn_log_multiplier", 0.1 * p.yarn_mscale_all_dim)
    s.matrix("token_embd.weight", vocab, p.dim, scale=1.0)
    s.norm("output_norm.weight", p.dim)
    s.matrix("output.weight", vocab, p.dim)
    for i in range(p.layers):
        b = f"blk.{i}"
        s.norm(f"{b}.attn_norm.weight", p.dim)
        if p.q_lora_rank:
            s.matrix(f"{b}.attn_q_a.weight", p.q_lora_rank, p.dim, layer=i)
            s.norm(f"{b}.attn_q_a_norm.weight", p.q_lora_rank)
            s.matrix(f"{b}.attn_q_b.weight", p.n_heads * qk_dim, p.q_lora_rank, layer=i)
        else:
            s.matrix(f"{b}.attn_q.weight", p.n_heads * qk_dim, p.dim, layer=i)
        s.matrix(f"{b}.attn_kv_a_mqa.weight", p.kv_lora_rank + p.qk_rope_dim, p.dim, layer=i)
        s.norm(f"{b}.attn_kv_a_norm.weight", p.kv_lora_rank)
        if p.split_kv_b:  # kv_b per head split as the converter does: k_b [heads, kv_lora, nope], v_b [heads, v, kv_lora]
            s.matrix(f"{b}.attn_k_b.weight", p.n_heads, p.kv_lora_rank, p.qk_nope_dim, layer=i,
                     scale=p.kv_lora_rank ** -0.5)
            s.matrix(f"{b}.attn_v_b.weight", p.n_heads, p.v_dim, p.kv_lora_rank, layer=i)
        else:
            s.matrix(f"{b}.attn_kv_b.weight", p.n_heads * (p.qk_nope_dim + p.v_dim), p.kv_lora_rank, layer=i)
        s.matrix(f"{b}.attn_output.weight", p.dim, p.n_heads * p.v_dim, layer=i)
        s.norm(f"{b}.ffn_norm.weight", p.dim)
        if i < p.leading_dense:
            s.matrix(f"{b}.ffn_gate.weight", p.dense_ffn, p.dim, layer=i)
            s.matrix(f"{b}.ffn_up.weight", p.dense_ffn, p.dim, layer=i)
            s.matrix(f"{b}.ffn_down.weight", p.dim, p.dense_ffn, layer=i)
            continue
        s.matrix(f"{b}.ffn_gate_inp.weight", p.n_experts, p.dim, layer=i)
        if p.gating == "sigmoid":
            s.writer.add_tensor(f"{b}.exp_probs_b.bias", (0.1 * s.rng.standard_normal(p.n_experts)).astype(np.float32))
        s.experts(b, i, p.n_experts, p.expert_ffn, p.dim)
        shared = p.n_shared_experts * p.expert_ffn
        s.matrix(f"{b}.ffn_gate_shexp.weight", shared, p.dim, layer=i)
        s.matrix(f"{b}.ffn_up_shexp.weight", shared, p.dim, layer=i)
        s.matrix(f"{b}.ffn_down_shexp.weight", p.dim, shared, layer=i)
    s.finish()
    return path


WRITERS = {"qwen3moe": (write_qwen3moe, QWEN3MOE_PRESETS), "deepseek2": (write_deepseek2, DEEPSEEK2_PRESETS)}



def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m kt.gguf.synth", description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=sorted(WRITERS), required=True)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--layers", type=int, help="override the preset's layer count")
    ap.add_argument("--quant", default="Q4_K_M", choices=QUANT_MIXES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args(argv)
    write, presets = WRITERS[args.arch]
    if args.preset not in presets:
        ap.error(f"--preset: {args.preset!r} is not one of {', '.join(presets)} for {args.arch}")
    preset = presets[args.preset]
    if args.layers:
        preset = replace(preset, layers=args.layers)
    write(args.output, preset, args.quant, args.seed)
    print(f"{args.output}: {args.arch} {args.preset}, {preset.layers} layers, {args.quant}")


if __name__ == "__main__":
    main()
