"""Synthetic GGUF files (kt.gguf.synth): llama.cpp's names, shapes, metadata and Q4_K_M mix,
readable by kt; and, where llama-cpp-python is installed (a benchmark peer, not a dependency:
CI skips it), loaded and run by llama.cpp with logits that agree with kt's."""
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q

from kt.gguf.reader import GGUFFile
from kt.gguf.synth import QWEN3MOE_PRESETS, more_bits, tensor_type, write_qwen3moe

IDS = [5, 99, 116, 257, 32, 200, 7, 263, 97, 116, 32, 262, 260, 1, 2, 3]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_qwen3moe(tmp_path_factory.mktemp("synth") / "tiny.gguf", QWEN3MOE_PRESETS["tiny"])


def test_layout_and_mix(tiny):
    f = GGUFFile(tiny)
    p = QWEN3MOE_PRESETS["tiny"]
    assert f.architecture == "qwen3moe" and f.require("qwen3moe.expert_count") == p.n_experts
    t = f.tensors
    assert t["blk.0.ffn_gate_exps.weight"].shape == (p.n_experts, p.expert_ffn, p.dim)
    assert t["blk.0.ffn_down_exps.weight"].shape == (p.n_experts, p.dim, p.expert_ffn)
    assert t["output.weight"].ggml_type == Q.Q6_K and t["token_embd.weight"].ggml_type == Q.Q4_K
    assert t["blk.0.ffn_gate_inp.weight"].ggml_type == Q.F32 and t["blk.0.attn_norm.weight"].ggml_type == Q.F32
    for i in range(p.layers):  # the layers llama.cpp gives more bits get Q6_K down projections and values
        want = Q.Q6_K if more_bits(i, p.layers) else Q.Q4_K
        assert t[f"blk.{i}.ffn_down_exps.weight"].ggml_type == want
        assert t[f"blk.{i}.attn_v.weight"].ggml_type == want


def test_rows_not_a_multiple_of_256_fall_back_like_llama_cpp(tmp_path):
    assert tensor_type("blk.0.ffn_up_exps.weight", 288, "Q4_K_M", 0, 8) == Q.Q5_0
    assert tensor_type("blk.0.ffn_down_exps.weight", 288, "Q4_K_M", 0, 8) == Q.Q8_0  # layer 0 of 8: more bits
    f = GGUFFile(write_qwen3moe(tmp_path / "odd.gguf", replace(QWEN3MOE_PRESETS["tiny"], expert_ffn=288)))
    assert f.tensors["blk.0.ffn_down_exps.weight"].ggml_type in (Q.Q5_0, Q.Q8_0)


def test_command_line(tmp_path):
    out = tmp_path / "cli.gguf"
    run = [sys.executable, "-m", "kt.gguf.synth", "--arch", "qwen3moe", "--preset", "tiny", "--layers", "1", "-o"]
    done = subprocess.run(run + [str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert GGUFFile(out).require("qwen3moe.block_count") == 1
    bad = subprocess.run(run[:5] + ["--preset", "huge", "-o", str(out)], capture_output=True, text=True)
    assert bad.returncode == 2 and "huge" in bad.stderr


def test_llama_cpp_runs_it_and_agrees(tiny):
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python (benchmark peer) is not installed")
    import kt

    llm = llama_cpp.Llama(str(tiny), n_ctx=64, logits_all=True, verbose=False, n_threads=2)
    llm.eval(IDS)
    theirs = np.array(llm.scores[:len(IDS)])
    ours = kt.LLM(tiny).logits(IDS)
    assert (theirs.argmax(-1) == ours.argmax(-1)).mean() >= 0.9
    assert np.abs(theirs - ours).max() <= 0.05 * np.abs(theirs).max()


@pytest.mark.parametrize("preset", ["tiny", "tiny-v2"])
def test_llama_cpp_runs_deepseek2_files_as_kt_does(preset, tmp_path):
    """F32 weights, so that the two differ by float rounding alone (no activation quantization
    that could flip a near-tie in the group-limited routing): V3-style (q_lora, sigmoid + bias,
    groups, YaRN, attn_k_b / attn_v_b) and V2-style (softmax, one attn_kv_b)."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python (benchmark peer) is not installed")
    import kt
    from kt.gguf.synth import DEEPSEEK2_PRESETS, write_deepseek2

    path = write_deepseek2(tmp_path / f"{preset}.gguf", DEEPSEEK2_PRESETS[preset], "F32")
    llm = llama_cpp.Llama(str(path), n_ctx=64, logits_all=True, verbose=False, n_threads=2)
    llm.eval(IDS)
    theirs = np.array(llm.scores[:len(IDS)])
    ours = kt.LLM(path, reference=True).logits(IDS)
    assert (theirs.argmax(-1) == ours.argmax(-1)).all()
    assert np.abs(theirs - ours).max() <= 2e-3 * np.abs(theirs).max()
