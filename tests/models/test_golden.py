"""Teacher-forced logits of kt's models against llama.cpp's (tests/golden, flash attention off).

Bounds from the issue: top-1 agreement >= 99% where llama.cpp's top-1 leads by >= 1.0,
>= 95% over all positions, mean KL over llama.cpp's top-32 <= 0.02. For scale,
llama.cpp against itself with flash attention on scores 100% / 96-97% / 0.003-0.004.
"""
import numpy as np
import pytest

import kt

from golden_metrics import compare


@pytest.mark.parametrize("weights", ["native", "reference"])
@pytest.mark.parametrize("name", ["smollm2", "gemma3"])
def test_teacher_forced_logits_match_llama_cpp(name, weights, request):
    """native: the C++ kernels (8-bit activations); reference: float32 dequantized weights."""
    path = request.getfixturevalue(f"{name}_path")
    llm = request.getfixturevalue(f"{name}_llm") if weights == "native" else kt.LLM(path, reference=True)
    golden = request.getfixturevalue(f"{name}_golden")
    assert llm.engine.model.config.vocab_size == golden["n_vocab"]
    agreement = compare(golden, llm.logits)
    print(f"\n{name} ({weights}): {agreement}")
    assert agreement.top1_confident >= 0.99
    assert agreement.top1_all >= 0.95
    assert agreement.mean_kl <= 0.02


def test_logits_api_shape_and_dtype(smollm2_llm):
    out = smollm2_llm.logits([1, 2, 3, 4])
    assert out.dtype == np.float32 and out.shape == (4, 49152)


def test_incremental_decode_equals_teacher_forcing(gemma3_llm, gemma3_golden):
    """Logits from prefill + one-token decode steps through the KV cache equal one full forward."""
    prompt = gemma3_golden["sequences"][0]["prompt_ids"]
    out = gemma3_llm.generate(prompt, max_tokens=8, temperature=0.0, ignore_eos=True)
    full = gemma3_llm.logits(prompt + out.token_ids)
    assert out.token_ids == [int(row.argmax()) for row in full[len(prompt) - 1:-1]]
