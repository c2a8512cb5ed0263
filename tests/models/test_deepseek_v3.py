"""DeepSeek (GGUF `deepseek2`): kt's model against transformers' DeepseekV3ForCausalLM /
DeepseekV2ForCausalLM on the same dequantized weights (synthetic files from kt.gguf.synth),
in float32; the absorbed MLA against the naive per-head form; both kv_b layouts.

Routing can flip at a near-tie under any rounding; in float32 none of these prompts comes
within 1e-3 of one (the comparison is over every position)."""
import numpy as np
import pytest
import torch
import transformers  # a test dependency (pyproject [test]): the reference model classes

from kt.gguf.dequant import dequantize
from kt.gguf.reader import GGUFFile
from kt.gguf.synth import DEEPSEEK2_PRESETS, write_deepseek2
from kt.models import load_model
from kt.ops.attention import AttentionBatch, SequenceKVCache

IDS = [5, 99, 116, 257, 32, 200, 7, 263, 97, 116, 32, 262, 260, 1, 2, 3, 40, 41]


@pytest.fixture(scope="module", params=["tiny", "tiny-v2"])
def deepseek(request, tmp_path_factory):
    path = write_deepseek2(tmp_path_factory.mktemp("synth") / f"{request.param}.gguf", DEEPSEEK2_PRESETS[request.param])
    return request.param, GGUFFile(path)


def dense(f: GGUFFile, name: str) -> torch.Tensor:
    t = f.tensors[name]
    return torch.from_numpy(np.array(dequantize(t.data, t.ggml_type, t.shape)))


def hf_model(f: GGUFFile, c):
    common = dict(
        vocab_size=c.vocab_size, hidden_size=c.dim, intermediate_size=c.dense_ffn_dim,
        moe_intermediate_size=c.expert_ffn_dim, num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads,
        num_key_value_heads=c.n_heads, n_shared_experts=c.n_shared_experts, n_routed_experts=c.n_experts,
        routed_scaling_factor=c.routed_scaling, kv_lora_rank=c.kv_lora_rank, q_lora_rank=c.q_lora_rank or None,
        qk_rope_head_dim=c.qk_rope_dim, v_head_dim=c.v_dim, qk_nope_head_dim=c.qk_nope_dim, n_group=c.n_group,
        topk_group=c.topk_group, num_experts_per_tok=c.n_experts_used, first_k_dense_replace=c.leading_dense,
        norm_topk_prob=c.norm_topk, rms_norm_eps=c.norm_eps, rope_theta=c.rope_base,
        max_position_embeddings=c.context_length, tie_word_embeddings=False, attn_implementation="eager")
    if c.yarn_factor:
        common["rope_scaling"] = {"rope_type": "yarn", "factor": c.yarn_factor, "beta_fast": 32, "beta_slow": 1,
                                  "original_max_position_embeddings": c.yarn_original_context,
                                  "mscale": c.yarn_mscale_all_dim, "mscale_all_dim": c.yarn_mscale_all_dim}
    if c.gating == "sigmoid":
        model = transformers.DeepseekV3ForCausalLM(transformers.DeepseekV3Config(rope_interleave=True, **common))
    else:
        model = transformers.DeepseekV2ForCausalLM(transformers.DeepseekV2Config(topk_method="greedy", **common))
    state = {"model.embed_tokens.weight": dense(f, "token_embd.weight"), "model.norm.weight": dense(f, "output_norm.weight"),
             "lm_head.weight": dense(f, "output.weight")}
    for i in range(c.n_layers):
        p, b = f"model.layers.{i}", f"blk.{i}"
        names = [("input_layernorm", "attn_norm"), ("post_attention_layernorm", "ffn_norm"),
                 ("self_attn.kv_a_proj_with_mqa", "attn_kv_a_mqa"), ("self_attn.kv_a_layernorm", "attn_kv_a_norm"),
                 ("self_attn.o_proj", "attn_output")]
        names += ([("self_attn.q_a_proj", "attn_q_a"), ("self_attn.q_a_layernorm", "attn_q_a_norm"),
                   ("self_attn.q_b_proj", "attn_q_b")] if c.q_lora_rank else [("self_attn.q_proj", "attn_q")])
        if c.split_kv_b:  # back to one kv_b: per head [nope rows of k_b^T, then v_b]
            k_b, v_b = dense(f, f"{b}.attn_k_b.weight"), dense(f, f"{b}.attn_v_b.weight")
            state[f"{p}.self_attn.kv_b_proj.weight"] = torch.cat([k_b.transpose(1, 2), v_b], 1).reshape(-1, c.kv_lora_rank)
        else:
            names.append(("self_attn.kv_b_proj", "attn_kv_b"))
        if i < c.leading_dense:
            names += [("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"), ("mlp.down_proj", "ffn_down")]
        else:
            names += [("mlp.gate", "ffn_gate_inp"), ("mlp.shared_experts.gate_proj", "ffn_gate_shexp"),
                      ("mlp.shared_experts.up_proj", "ffn_up_shexp"), ("mlp.shared_experts.down_proj", "ffn_down_shexp")]
            if c.gating == "sigmoid":
                state[f"{p}.mlp.gate.e_score_correction_bias"] = dense(f, f"{b}.exp_probs_b.bias")
            for proj, gg in [("gate_proj", "ffn_gate_exps"), ("up_proj", "ffn_up_exps"), ("down_proj", "ffn_down_exps")]:
                stacked = dense(f, f"{b}.{gg}.weight")
                for e in range(c.n_experts):
                    state[f"{p}.mlp.experts.{e}.{proj}.weight"] = stacked[e]
        for hf, gg in names:
            state[f"{p}.{hf}.weight"] = dense(f, f"{b}.{gg}.weight")
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all("rotary" in k or "inv_freq" in k for k in missing), (missing, unexpected)
    return model.float().eval()


def kt_logits(model, ids, cache_dtype=torch.float32) -> torch.Tensor:
    with torch.inference_mode():
        cache = SequenceKVCache(model.config.n_layers, dtype=cache_dtype)
        return model.logits(model(torch.tensor(ids), AttentionBatch(torch.arange(len(ids)), cache)))


def test_matches_transformers_in_float32(deepseek):
    name, f = deepseek
    model = load_model(f, reference=True)
    ours = kt_logits(model, IDS)
    with torch.inference_mode():
        theirs = hf_model(f, model.config)(torch.tensor([IDS])).logits[0].float()
    rel = float((ours - theirs).abs().max() / theirs.abs().max())
    print(f"\ndeepseek2 {name} vs transformers: max relative error {rel:.2e}")
    assert rel <= 1e-3


def test_absorbed_mla_equals_naive(deepseek):
    _, f = deepseek
    model = load_model(f, reference=True)
    absorbed = kt_logits(model, IDS)
    model.use_naive_attention()
    naive = kt_logits(model, IDS)
    assert float((absorbed - naive).abs().max() / naive.abs().max()) <= 1e-3


def test_latent_cache_is_small(deepseek):
    """The cache holds kv_lora + rope values per token and layer, not heads x (k + v)."""
    _, f = deepseek
    model = load_model(f, reference=True)
    cache = SequenceKVCache(model.config.n_layers)
    with torch.inference_mode():
        model(torch.tensor(IDS), AttentionBatch(torch.arange(len(IDS)), cache))
    c = model.config
    assert cache.k[0].shape[1:] == (1, c.kv_lora_rank + c.qk_rope_dim) and cache.v[0].shape[-1] == 0
    per_head = c.n_heads * (c.qk_nope_dim + c.qk_rope_dim + c.v_dim)
    assert (c.kv_lora_rank + c.qk_rope_dim) * 1.5 < per_head


def test_native_generate(deepseek):
    import kt

    _, f = deepseek
    out = kt.LLM(f.path).generate("the cat", max_tokens=5, temperature=0, ignore_eos=True)
    assert len(out.token_ids) == 5
