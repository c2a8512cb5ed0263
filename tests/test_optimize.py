"""Optimize rules (kt/optimize): kt's CPU rule files for the MoE architectures, operators that
change how a module runs (checked against the default's outputs), and one-line errors for
broken rule files, also through `kt serve`."""
import subprocess
import sys

import pytest
import torch

from kt.gguf.reader import GGUFFile
from kt.gguf.synth import DEEPSEEK2_PRESETS, QWEN3MOE_PRESETS, write_deepseek2, write_qwen3moe
from kt.models import load_model, model_class
from kt.ops.attention import AttentionBatch, SequenceKVCache
from kt.optimize import RULES_DIR, OptimizeRuleError, apply_rules, load_rules, rules_for

IDS = [5, 99, 116, 257, 32, 200, 7, 263, 97, 116]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    return {"deepseek2": write_deepseek2(d / "ds.gguf", DEEPSEEK2_PRESETS["tiny"]),
            "qwen3moe": write_qwen3moe(d / "qwen.gguf", QWEN3MOE_PRESETS["tiny"])}


def bare_model(path):
    f = GGUFFile(path)
    cls = model_class(f.architecture)
    return cls(cls.config_class.from_gguf(f)), f


@pytest.mark.parametrize("arch", ["deepseek2", "qwen3moe"])
def test_kt_rules_cover_the_experts(files, arch):
    model, f = bare_model(files[arch])
    rules, source = rules_for(f.architecture, "auto")
    chosen = apply_rules(model, rules, source)
    experts = [n for n in chosen if n.endswith("mlp.experts")]
    assert experts and all(chosen[n] == "moe_cpu" for n in experts)
    assert chosen["lm_head"] == "linear_cpu"
    assert not any(n.startswith(e + ".") for e in experts for n in chosen)  # the operator owns the children


def write_rules(tmp_path, text: str):
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return path


def logits_of(model) -> torch.Tensor:
    with torch.inference_mode():
        cache = SequenceKVCache(model.config.n_layers)
        return model.logits(model(torch.tensor(IDS), AttentionBatch(torch.arange(len(IDS)), cache)))


def test_naive_mla_by_rule(files, tmp_path):
    rules = write_rules(tmp_path, '- match: {name: "\\\\.self_attn$"}\n  replace: {op: mla_attention, kwargs: {absorbed: false}}\n')
    f = GGUFFile(files["deepseek2"])
    default, naive = load_model(f), load_model(f, optimize_config=str(rules))
    assert naive.model.layers[0].self_attn.naive and not default.model.layers[0].self_attn.naive
    a, b = logits_of(default), logits_of(naive)
    assert float((a - b).abs().max() / b.abs().max()) < 0.05  # same weights; 8-bit activations may round apart


def test_torch_experts_by_rule(files, tmp_path):
    rules = write_rules(tmp_path, '- match: {name: "\\\\.mlp\\\\.experts$"}\n  replace: {op: moe_cpu, kwargs: {native: false}}\n')
    f = GGUFFile(files["qwen3moe"])
    default, torch_experts = load_model(f), load_model(f, optimize_config=str(rules))
    assert default.model.layers[0].mlp.experts.native and not torch_experts.model.layers[0].mlp.experts.native
    a, b = logits_of(default), logits_of(torch_experts)
    # The torch experts multiply float32 dequantized weights, the native ones 8-bit activations.
    assert float((a - b).abs().max() / b.abs().max()) < 0.1


@pytest.mark.parametrize("text, message", [
    ('- match: {name: "experts$"}\n  replace: {op: turbo}\n', "unknown op 'turbo'"),
    ('- match: {name: "^nothing_here$"}\n  replace: {op: keep}\n', "matches no module"),
    ('- match: {name: "(("}\n  replace: {op: keep}\n', "bad regex"),
    ('- match: {name: "\\\\.self_attn$"}\n  replace: {op: moe_cpu}\n', "cannot take model.layers.0.self_attn"),
    ('- match: {name: "experts$"}\n  replace: {op: moe_cpu, device: cuda}\n', "device 'cuda' is not available"),
    ('- replace: {op: keep}\n', "expected {match"),
    ('{not: a list}\n', "expected a list"),
])
def test_bad_rules_are_one_line_errors(files, tmp_path, text, message):
    path = write_rules(tmp_path, text)
    with pytest.raises(OptimizeRuleError, match=message) as e:
        load_model(GGUFFile(files["deepseek2"]), optimize_config=str(path))
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_kt_serve_reports_a_bad_rule_file(files, tmp_path):
    path = write_rules(tmp_path, '- match: {name: "experts$"}\n  replace: {op: turbo}\n')
    out = subprocess.run([sys.executable, "-m", "kt.cli", "serve", str(files["qwen3moe"]), "--optimize-config", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith("kt serve: ") and "unknown op 'turbo'" in out.stderr
    assert "Traceback" not in out.stderr


def test_rule_files_parse():
    for path in RULES_DIR.glob("*.yaml"):
        assert load_rules(path)
