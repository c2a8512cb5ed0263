"""The fused native forward (csrc/decoder.cpp) against llama.cpp's golden data on every ISA,
against kt's torch model on long prompts (sliding window), and batching / chunking invariance."""
import numpy as np
import pytest
import torch

from golden_metrics import compare
from kt.ops import kernels
from kt.ops.attention import AttentionBatch, SequenceKVCache

pytestmark = pytest.mark.skipif(not kernels.available(), reason="kt._kernels is not built")


@pytest.fixture
def isa_restored():
    before = kernels.isa()
    yield
    kernels.set_isa(before)


def fused_logits(llm, ids, chunk=None):
    fused = llm.engine.fused
    seq, out = fused.new_sequence(), []
    emb = llm.engine.model.model.embed_tokens(torch.tensor(ids))
    step = chunk or len(ids)
    for i in range(0, len(ids), step):
        n = len(emb[i:i + step])
        out.append(fused.forward(emb[i:i + step], [seq], [n], range(n)))
    return torch.cat(out).numpy()


@pytest.mark.parametrize("isa", kernels.supported_isas() if kernels.available() else [])
def test_golden_agreement_on_every_isa(smollm2_llm, smollm2_golden, isa, isa_restored):
    assert smollm2_llm.engine.fused is not None
    kernels.set_isa(isa)
    agreement = compare(smollm2_golden, lambda ids: fused_logits(smollm2_llm, ids))
    print(f"\nsmollm2 fused ({isa}): {agreement}")
    assert agreement.top1_confident >= 0.99 and agreement.top1_all >= 0.95 and agreement.mean_kl <= 0.02


def torch_logits(model, ids, last):
    with torch.inference_mode():
        hidden = model(torch.tensor(ids), AttentionBatch(torch.arange(len(ids)), SequenceKVCache(model.config.n_layers)))
        return model.logits(hidden[-last:]).numpy()


def test_sliding_window_past_the_window_matches_torch_model(gemma3_llm, monkeypatch):
    """700 tokens: Gemma 3's sliding layers (window 512) must drop the oldest keys as the torch model does.

    The two differ by rounding details (llama.cpp's f16 gelu table, exp) on random tokens' flat
    distributions, so the check is distance: the fused logits must sit far closer to the windowed
    torch model than the windowed model sits to the same model attending to every key."""
    model = gemma3_llm.engine.model
    assert model.config.sliding_window < 600
    rng = np.random.default_rng(0)
    ids = [2] + rng.integers(100, 20000, 699).tolist()
    windowed = torch_logits(model, ids, 100)
    for layer in model.model.layers:
        monkeypatch.setattr(layer.self_attn, "window", None)
    unwindowed = torch_logits(model, ids, 100)
    ours = fused_logits(gemma3_llm, ids, chunk=256)[-100:]
    to_windowed, to_unwindowed = np.abs(ours - windowed).mean(), np.abs(windowed - unwindowed).mean()
    print(f"\nmean |logit difference|: fused to torch {to_windowed:.3f}; window on/off {to_unwindowed:.3f}")
    assert to_windowed < to_unwindowed / 4
    assert (ours.argmax(-1) == windowed.argmax(-1)).mean() >= 0.8


def test_batched_sequences_equal_separate_runs(smollm2_llm):
    """Chunks of three sequences in one forward give each the logits it gets alone."""
    fused = smollm2_llm.engine.fused
    embed = smollm2_llm.engine.model.model.embed_tokens
    prompts = [list(range(100, 137)), list(range(500, 503)), list(range(900, 960))]
    alone = []
    for p in prompts:
        seq = fused.new_sequence()
        fused.forward(embed(torch.tensor(p[:-1])), [seq], [len(p) - 1], [])
        alone.append(fused.forward(embed(torch.tensor(p[-1:])), [seq], [1], [0])[0])
    seqs = [fused.new_sequence() for _ in prompts]
    # Prefill of all three in one batch, then one decode token each, again batched.
    fused.forward(embed(torch.tensor(sum((p[:-1] for p in prompts), []))), seqs, [len(p) - 1 for p in prompts], [])
    assert [s.length for s in seqs] == [len(p) - 1 for p in prompts]
    together = fused.forward(embed(torch.tensor([p[-1] for p in prompts])), seqs, [1, 1, 1], [0, 1, 2])
    for a, b in zip(alone, together):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=0, atol=1e-4)


def test_chunked_prefill_equals_one_forward(smollm2_llm):
    ids = list(range(1000, 1300))
    whole = fused_logits(smollm2_llm, ids)
    chunked = fused_logits(smollm2_llm, ids, chunk=64)
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-3)


def test_truncate_rewinds_the_sequence(smollm2_llm):
    """Rewinding then re-running the same tokens reproduces their logits. Both runs are batches
    (at least 16 tokens) so that they take the same kernels, whose rounding is then identical."""
    fused = smollm2_llm.engine.fused
    embed = smollm2_llm.engine.model.model.embed_tokens
    ids = list(range(2000, 2040))
    seq = fused.new_sequence()
    first = fused.forward(embed(torch.tensor(ids)), [seq], [40], range(20, 40))
    seq.truncate(20)
    assert seq.length == 20
    again = fused.forward(embed(torch.tensor(ids[20:])), [seq], [20], range(20))
    np.testing.assert_allclose(again.numpy(), first.numpy(), rtol=0, atol=1e-4)
    with pytest.raises(ValueError):
        seq.truncate(41)  # past the end


def test_bad_calls_are_value_errors(smollm2_llm):
    fused = smollm2_llm.engine.fused
    seq = fused.new_sequence()
    with pytest.raises(ValueError):
        fused.forward(torch.zeros(3, fused.dim), [seq], [2], [0])  # counts do not add up
    with pytest.raises(ValueError):
        fused.forward(torch.zeros(2, fused.dim), [seq], [2], [5])  # no such row
    assert seq.length == 0
