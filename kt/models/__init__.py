"""Model registry keyed by GGUF `general.architecture`; modules import lazily."""
from __future__ import annotations

import importlib

from kt.gguf.errors import GGUFError
from kt.gguf.reader import GGUFFile
from kt.optimize import apply_rules, rules_for

ARCHITECTURES = {
    "llama": "kt.models.llama:LlamaForCausalLM",
    "gemma3": "kt.models.gemma3:Gemma3ForCausalLM",
    "qwen3moe": "kt.models.qwen3_moe:Qwen3MoeForCausalLM",
    "deepseek2": "kt.models.deepseek_v3:DeepseekV3ForCausalLM",
}


def model_class(architecture: str):
    if architecture not in ARCHITECTURES:
        raise NotImplementedError(f"architecture {architecture!r} is not supported (supported: {', '.join(ARCHITECTURES)})")
    module, name = ARCHITECTURES[architecture].split(":")
    return getattr(importlib.import_module(module), name)


def load_model(gguf: GGUFFile, reference: bool = False, optimize_config: str | None = "auto"):
    """Build the model for a GGUF file, apply its optimize rules (kt.optimize: a YAML file,
    "auto" for kt's own file for the architecture, or None), then attach its weights (mmap
    views, nothing copied). `reference` computes with dequantized float32 weights instead
    of the native kernels."""
    try:
        cls = model_class(gguf.architecture)
    except NotImplementedError as e:
        raise GGUFError(gguf.path, str(e)) from None
    model = cls(cls.config_class.from_gguf(gguf))
    chosen = rules_for(gguf.architecture, optimize_config)
    if chosen:
        apply_rules(model, *chosen)
    model.load_gguf(gguf, reference)
    return model.eval()
