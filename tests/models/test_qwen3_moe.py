"""Qwen3-MoE: kt's model against transformers' Qwen3MoeForCausalLM on the same dequantized
weights (a synthetic GGUF written by kt.gguf.synth), in float32, and the native kernels
against kt's float32 reference on the same file."""
import numpy as np
import pytest
import torch
import transformers  # a test dependency (pyproject [test]): the reference model classes

from kt.gguf.dequant import dequantize
from kt.gguf.reader import GGUFFile
from kt.gguf.synth import QWEN3MOE_PRESETS, write_qwen3moe
from kt.models import load_model
from kt.ops.attention import AttentionBatch, SequenceKVCache

IDS = [5, 99, 116, 257, 32, 200, 7, 263, 97, 116, 32, 262, 260, 1, 2, 3]


@pytest.fixture(scope="module")
def qwen3moe_path(tmp_path_factory):
    return write_qwen3moe(tmp_path_factory.mktemp("synth") / "qwen3moe-tiny.gguf", QWEN3MOE_PRESETS["tiny"])


def dense(f: GGUFFile, name: str) -> torch.Tensor:
    t = f.tensors[name]
    return torch.from_numpy(np.array(dequantize(t.data, t.ggml_type, t.shape)))


def hf_model(f: GGUFFile, c):
    config = transformers.Qwen3MoeConfig(
        vocab_size=c.vocab_size, hidden_size=c.dim, intermediate_size=c.expert_ffn_dim,
        moe_intermediate_size=c.expert_ffn_dim, num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads,
        num_key_value_heads=c.n_kv_heads, head_dim=c.head_dim, num_experts=c.n_experts,
        num_experts_per_tok=c.n_experts_used, norm_topk_prob=True, rms_norm_eps=c.norm_eps, rope_theta=c.rope_base,
        max_position_embeddings=c.context_length, tie_word_embeddings=False, decoder_sparse_step=1,
        mlp_only_layers=[], attn_implementation="eager")
    model = transformers.Qwen3MoeForCausalLM(config).float().eval()
    state = {"model.embed_tokens.weight": dense(f, "token_embd.weight"), "model.norm.weight": dense(f, "output_norm.weight"),
             "lm_head.weight": dense(f, "output.weight")}
    for i in range(c.n_layers):
        p, b = f"model.layers.{i}", f"blk.{i}"
        for hf, gg in [("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"), ("self_attn.v_proj", "attn_v"),
                       ("self_attn.o_proj", "attn_output"), ("self_attn.q_norm", "attn_q_norm"),
                       ("self_attn.k_norm", "attn_k_norm"), ("input_layernorm", "attn_norm"),
                       ("post_attention_layernorm", "ffn_norm"), ("mlp.gate", "ffn_gate_inp")]:
            state[f"{p}.{hf}.weight"] = dense(f, f"{b}.{gg}.weight")
        for proj, gg in [("gate_proj", "ffn_gate_exps"), ("up_proj", "ffn_up_exps"), ("down_proj", "ffn_down_exps")]:
            stacked = dense(f, f"{b}.{gg}.weight")
            for e in range(c.n_experts):
                state[f"{p}.mlp.experts.{e}.{proj}.weight"] = stacked[e]
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all("rotary" in k for k in missing), (missing, unexpected)
    return model


def kt_logits(model, ids, cache_dtype=torch.float32) -> torch.Tensor:
    with torch.inference_mode():
        cache = SequenceKVCache(model.config.n_layers, dtype=cache_dtype)
        return model.logits(model(torch.tensor(ids), AttentionBatch(torch.arange(len(ids)), cache)))


def test_matches_transformers_in_float32(qwen3moe_path):
    """All of it in float32 (kt's cache too): relative error <= 1e-3 at every position. The router's
    top-k could flip at a near-tie under rounding; none is that close here (checked below)."""
    f = GGUFFile(qwen3moe_path)
    model = load_model(f, reference=True)
    ours = kt_logits(model, IDS)
    hf = hf_model(f, model.config)
    with torch.inference_mode():
        theirs = hf(torch.tensor([IDS])).logits[0].float()
    rel = float((ours - theirs).abs().max() / theirs.abs().max())
    print(f"\nqwen3moe tiny vs transformers: max relative error {rel:.2e}")
    assert rel <= 1e-3
    assert ours.argmax(-1).tolist() == theirs.argmax(-1).tolist()


def test_native_kernels_track_the_reference(qwen3moe_path):
    """The C++ kernels (8-bit activations, f16 cache) against the float32 reference on the same file."""
    f = GGUFFile(qwen3moe_path)
    native, reference = load_model(f), load_model(f, reference=True)
    a, b = kt_logits(native, IDS, torch.float16), kt_logits(reference, IDS)
    assert float((a - b).abs().max() / b.abs().max()) < 0.05
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() >= 0.8


def test_generate_end_to_end(qwen3moe_path):
    import kt

    out = kt.LLM(qwen3moe_path).generate("the cat", max_tokens=6, temperature=0, ignore_eos=True)
    assert len(out.token_ids) == 6 and out.finish_reason.value == "length"


def test_fused_forward_runs_the_experts_natively(qwen3moe_path):
    """kt.LLM runs Qwen3-MoE through the fused native forward (MoE layers in C++): it tracks the
    torch model on the same kernels (both 8-bit activations; their rounding differs in detail)."""
    import kt

    llm = kt.LLM(qwen3moe_path)
    assert llm.engine.fused is not None
    fused = torch.from_numpy(llm.logits(IDS))
    torch_native = kt_logits(load_model(GGUFFile(qwen3moe_path)), IDS, torch.float16)
    assert float((fused - torch_native).abs().max() / torch_native.abs().max()) < 0.05
    assert (fused.argmax(-1) == torch_native.argmax(-1)).float().mean() >= 0.8
