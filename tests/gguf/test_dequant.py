"""kt's reference dequantizers against the gguf package's own, on real and random blocks."""
import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as Q, quants

from kt.gguf.dequant import DEQUANTIZERS, dequantize
from kt.gguf.reader import GGUFFile

FORMATS = [Q.F32, Q.F16, Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.Q4_K, Q.Q5_K, Q.Q6_K]


def random_blocks(qtype: Q, n_blocks: int, rng) -> np.ndarray:
    """Random bytes with sane f16 scales (random bytes as f16 can be inf/nan)."""
    block, size = GGML_QUANT_SIZES[qtype]
    if qtype in (Q.F32, Q.F16, Q.BF16):
        values = rng.standard_normal(block * n_blocks).astype(np.float32)
        return quants.quantize(values.reshape(1, -1), qtype).view(np.uint8).reshape(1, -1)
    raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    scales = rng.uniform(-0.05, 0.05, size=(n_blocks, 2)).astype(np.float16).view(np.uint8)
    offset = 208 if qtype == Q.Q6_K else 0  # where the f16 scale(s) sit in the block
    raw[:, offset:offset + 4 if qtype in (Q.Q4_1, Q.Q5_1, Q.Q4_K, Q.Q5_K) else offset + 2] = \
        scales[:, : 4 if qtype in (Q.Q4_1, Q.Q5_1, Q.Q4_K, Q.Q5_K) else 2]
    return raw


@pytest.mark.parametrize("qtype", FORMATS, ids=lambda q: q.name)
def test_random_blocks_match_gguf(qtype):
    rng = np.random.default_rng(int(qtype))
    block, _ = GGML_QUANT_SIZES[qtype]
    raw = random_blocks(qtype, 64, rng)
    n = raw.size // GGML_QUANT_SIZES[qtype][1] * block
    ours = dequantize(raw, qtype, (n,))
    theirs = quants.dequantize(raw.reshape(-1), qtype).reshape(-1)
    np.testing.assert_array_equal(ours, theirs.astype(np.float32))


def test_every_format_has_a_dequantizer():
    assert set(FORMATS) <= set(DEQUANTIZERS)


@pytest.mark.parametrize("fixture", ["smollm2_path", "gemma3_path"])
def test_real_model_tensors_match_gguf(fixture, request):
    model = GGUFFile(request.getfixturevalue(fixture))
    seen = set()
    for t in model.tensors.values():
        if t.ggml_type in seen:
            continue
        seen.add(t.ggml_type)
        rows = t.data[:64]
        ours = dequantize(rows, t.ggml_type, (rows.shape[0], t.shape[-1]))
        theirs = quants.dequantize(rows, t.ggml_type)
        np.testing.assert_array_equal(ours, theirs.astype(np.float32).reshape(ours.shape), err_msg=t.name)
    assert len(seen) >= 3
