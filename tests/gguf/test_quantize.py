"""kt's quantizers (kt/gguf/quantize.py) read back by the gguf package's dequantizers.

Bound, per value: half its sub-block's step (rounding the code), plus for the K-quants the
rounding of the sub-block scale to a multiple of the super-block's d (half of d per unit of
code, times the largest code) and of the min to a multiple of dmin (half of dmin), with 10%
slack for the f16 super-block scales. A misplaced nibble, high bit or scale breaks it by a
whole range.
"""
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize

from kt.gguf.quantize import quantize

ROWS, COLS = 5, 768


def data(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((ROWS, COLS)).astype(np.float32) * rng.uniform(0.01, 5, (ROWS, 1)).astype(np.float32)
    x[1] = np.abs(x[1])  # all positive: min clamps at 0
    x[2, :256] = 0.0  # an all-zero super-block
    x[3, 300] = 40.0  # an outlier
    return x


def bound(x: np.ndarray, qtype: Q) -> np.ndarray:
    if qtype == Q.Q8_0:
        b = x.reshape(ROWS, -1, 32)
        return np.repeat(np.abs(b).max(-1) / 127 / 2, 32, axis=1) * 1.1 + 1e-7
    if qtype in (Q.Q4_K, Q.Q5_K):
        levels = 15 if qtype == Q.Q4_K else 31
        b = x.reshape(ROWS, -1, 8, 32)
        lo = np.minimum(b.min(-1), 0)
        scale, mins = (b.max(-1) - lo) / levels, -lo  # [rows, nb, 8]
        d, dmin = scale.max(-1, keepdims=True) / 63, mins.max(-1, keepdims=True) / 63
        per_sub = scale / 2 + d / 2 * levels + dmin / 2
    else:  # Q6_K: 16 sub-blocks of 16, int8 sub-block scales of d = max scale / 128. Codes run
        # -32..31 with the largest value at -32, so one of the other sign can sit a whole step off.
        b = x.reshape(ROWS, -1, 16, 16)
        scale = np.abs(b).max(-1) / 32
        d = scale.max(-1, keepdims=True) / 128
        per_sub = scale + d / 2 * 32
    size = b.shape[-1]
    return np.repeat(per_sub.reshape(ROWS, -1), size, axis=1) * 1.1 + 1e-7


@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q4_K, Q.Q5_K, Q.Q6_K], ids=lambda q: q.name)
@pytest.mark.parametrize("seed", [0, 1])
def test_round_trip_within_the_step(qtype, seed):
    x = data(seed)
    raw = quantize(x, qtype)
    block_bytes, block_size = {Q.Q8_0: (34, 32), Q.Q4_K: (144, 256), Q.Q5_K: (176, 256), Q.Q6_K: (210, 256)}[qtype]
    assert raw.dtype == np.uint8 and raw.shape == (ROWS, COLS // block_size * block_bytes)
    y = dequantize(raw, qtype).reshape(x.shape)
    err, tol = np.abs(y - x), bound(x, qtype)
    worst = np.unravel_index(np.argmax(err - tol), err.shape)
    assert (err <= tol).all(), f"{qtype.name}: err {err[worst]} > {tol[worst]} at {worst}"
    assert (y[2, :256] == 0).all()


def test_other_types_come_from_gguf():
    x = data(0)
    y = dequantize(quantize(x, Q.Q5_0), Q.Q5_0).reshape(x.shape)
    assert np.abs(y - x).max() <= np.abs(x).max() / 15  # half a step of a 5-bit code over the whole range


def test_rejects_a_partial_block():
    with pytest.raises(ValueError, match="multiple of 256"):
        quantize(np.zeros((2, 300), np.float32), Q.Q4_K)
