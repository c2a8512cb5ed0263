"""kt._kernels against the gguf package's dequantizers (float64 oracle).

Error bound. Weights are used exactly, so the only approximation is the 8-bit
activation quantization: each x_i becomes d * round(x_i / d) with
d = amax(block of x_i) / 127, off by at most d / 2 = amax / 254. Hence for every
output element

    |y - x @ W^T| <= sum_i |W_ri| * amax_block(i)(x_t) / 254  +  f32 slack,

the slack being the worst case of float32 summation, cols * 2^-24 * (|x| @ |W|^T).
Float formats (F32, F16, BF16) are not quantized and get the slack alone. On the
AMX path (batches of at least 16 tokens) x and the dequantized W are instead rounded
to bf16, each off by at most 2^-9 relative, so the bound there is 2^-8 (|x| @ |W|^T)
plus the slack. A wrong nibble, scale, offset or tile layout breaks these by orders
of magnitude.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize, quantize

from kt.ops import kernels

assert kernels.available(), "kt._kernels is not built: install kt with `pip install -e .`"

FLOAT = [Q.F32, Q.F16, Q.BF16]
BLOCK32 = [Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0]
KQUANTS = [Q.Q4_K, Q.Q5_K, Q.Q6_K]
ISAS = kernels.supported_isas()
ROWS = [1, 7, 33, 257]
TOKENS = [1, 3, 17, 40]  # 17 and 40: AMX tiles, ragged (16 tokens per tile, two tiles per step)


def act_block(qtype: Q) -> int:
    return {**{t: 0 for t in FLOAT}, **{t: 32 for t in BLOCK32}, **{t: 256 for t in KQUANTS}}[qtype]


def cols_for(qtype: Q) -> int:
    return 3 * 256 if qtype in KQUANTS else 19 * 32  # block multiples, not multiples of 512


def random_kquant(qtype: Q, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """gguf cannot quantize K-quants: random codes with sane f16 scales instead."""
    block_bytes = {Q.Q4_K: 144, Q.Q5_K: 176, Q.Q6_K: 210}[qtype]
    blocks = rng.integers(0, 256, (rows, cols // 256, block_bytes), dtype=np.uint8)
    scale = lambda n: rng.uniform(1e-3, 2e-2, (rows, cols // 256, n)).astype(np.float16).view(np.uint8)
    if qtype == Q.Q6_K:
        blocks[..., 208:210] = scale(1)  # d is last, after ql, qh and int8 scales
    else:
        blocks[..., 0:4] = scale(2)  # d, dmin
    return blocks.reshape(rows, -1)


def make_weight(qtype: Q, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if qtype in KQUANTS:
        return random_kquant(qtype, rows, cols, rng)
    raw = quantize(rng.standard_normal((rows, cols)).astype(np.float32), qtype)
    return np.ascontiguousarray(raw).view(np.uint8).reshape(rows, -1)


def bound(x: np.ndarray, w: np.ndarray, block: int, bf16: bool = False) -> np.ndarray:
    absw = np.abs(w)
    slack = x.shape[1] * 2.0**-24 * (np.abs(x) @ absw.T)
    if bf16:
        return 2.0**-8 * (np.abs(x) @ absw.T) + slack + 1e-30
    if block == 0:
        return slack + 1e-30
    amax = np.abs(x).reshape(x.shape[0], -1, block).max(axis=2)  # [T, cols / block]
    step = np.repeat(amax, block, axis=1) / 254  # half a quantization step per value
    return step @ absw.T + slack + 1e-30


@pytest.fixture
def isa():
    yield
    kernels.set_isa("")


@pytest.mark.parametrize("isa_name", ISAS)
@pytest.mark.parametrize("qtype", FLOAT + BLOCK32 + KQUANTS, ids=lambda t: t.name)
def test_matches_dequantize(qtype, isa_name, isa):
    kernels.set_isa(isa_name)
    cols = cols_for(qtype)
    for rows in ROWS:
        raw = make_weight(qtype, rows, cols, seed=rows)
        w = dequantize(raw, qtype).astype(np.float64).reshape(rows, cols)
        for T in TOKENS:
            x = torch.randn(T, cols, generator=torch.Generator().manual_seed(T))
            y = kernels.matmul(raw, qtype, rows, cols, x)
            assert y.shape == (T, rows) and y.dtype == torch.float32
            ref = x.double().numpy() @ w.T
            amx = isa_name == "amx" and T >= 16 and qtype not in FLOAT
            err, tol = np.abs(y.numpy() - ref), bound(x.double().numpy(), w, act_block(qtype), bf16=amx)
            worst = np.unravel_index(np.argmax(err / tol), err.shape)
            assert (err <= tol).all(), f"{qtype.name} {isa_name} rows={rows} T={T}: err {err[worst]} > {tol[worst]}"


@pytest.mark.skipif(len(ISAS) < 2, reason="only the scalar ISA on this CPU")
@pytest.mark.parametrize("qtype", BLOCK32 + KQUANTS, ids=lambda t: t.name)
def test_simd_agrees_with_scalar(qtype, isa):
    """Same integer sums, only the float combination order differs."""
    rows, cols = 33, cols_for(qtype)
    raw = make_weight(qtype, rows, cols, seed=1)
    w = dequantize(raw, qtype).astype(np.float64).reshape(rows, cols)
    x = torch.randn(5, cols, generator=torch.Generator().manual_seed(0))
    kernels.set_isa("scalar")
    ref = kernels.matmul(raw, qtype, rows, cols, x).numpy()
    scale = np.abs(x.double().numpy()) @ np.abs(w).T
    for name in ISAS[1:]:
        kernels.set_isa(name)
        y = kernels.matmul(raw, qtype, rows, cols, x).numpy()
        assert (np.abs(y - ref) <= 2 * cols * 2.0**-24 * scale + 1e-30).all(), name


def test_threads_and_mmap_view(tmp_path):
    rows, cols, qtype = 257, 512, Q.Q4_K
    raw = make_weight(qtype, rows, cols)
    path = tmp_path / "w.bin"
    raw.tofile(path)
    view = np.memmap(path, dtype=np.uint8, mode="r", shape=raw.shape)  # read-only, like the GGUF reader's
    x = torch.randn(9, cols)
    kernels.set_threads(1)
    one = kernels.matmul(view, qtype, rows, cols, x)
    kernels.set_threads(2)
    assert kernels.num_threads() == 2
    assert torch.equal(one, kernels.matmul(view, qtype, rows, cols, x))  # each element computed by one thread


def test_rejects_bad_input():
    raw = make_weight(Q.Q8_0, 8, 64)
    with pytest.raises(ValueError, match="C-contiguous"):
        kernels.matmul(np.asfortranarray(raw), Q.Q8_0, 8, 64, torch.randn(1, 64))
    with pytest.raises(ValueError):
        kernels.matmul(raw, Q.Q8_0, 8, 96, torch.randn(1, 96))  # raw too short for the shape
    with pytest.raises(ValueError, match="unsupported ggml type"):
        kernels.matmul(raw, Q.Q2_K, 8, 256, torch.randn(1, 256))


def test_cpu_features_reports_amx():
    feats = kernels.cpu_features()
    assert {"avx2", "avx512f", "avx512vnni", "avx512bf16", "amx_tile", "amx_int8"} <= feats.keys()
    assert kernels.isa() == ISAS[-1]  # best supported by default


def run_with_isa(value: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KT_ISA": value}
    code = "from kt.ops import kernels; print(kernels.isa())"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_env_forces_isa():
    out = run_with_isa("scalar")
    assert out.returncode == 0 and out.stdout.strip() == "scalar", out.stderr


def test_env_bogus_isa_is_a_clear_error():
    out = run_with_isa("bogus")
    assert out.returncode != 0
    assert "unknown ISA 'bogus': expected one of scalar, avx2, avx512, amx" in out.stderr


@pytest.mark.skipif("amx" in ISAS, reason="this CPU has AMX")
def test_forcing_amx_without_it_is_a_clear_error():
    out = run_with_isa("amx")
    assert out.returncode != 0 and "ISA 'amx' is not supported by this CPU" in out.stderr


@pytest.mark.skipif("amx" not in ISAS, reason="no AMX on this CPU (or the kernel refused its tile state)")
def test_amx_batch_in_a_fresh_process():
    """The first AMX use of a process (permission request, tile configuration on the stack) must
    work, not crash: llama.cpp's AMX path dies exactly there on GCC 12 builds."""
    code = (
        "import numpy as np, torch; from gguf import GGMLQuantizationType as Q; from gguf.quants import quantize, dequantize;"
        "from kt.ops import kernels; assert kernels.isa() == 'amx';"
        "w = np.random.default_rng(0).standard_normal((48, 256)).astype(np.float32);"
        "raw = np.ascontiguousarray(quantize(w, Q.Q8_0)).view(np.uint8).reshape(48, -1);"
        "x = torch.randn(64, 256); y = kernels.matmul(raw, Q.Q8_0, 48, 256, x).numpy();"
        "ref = x.double().numpy() @ dequantize(raw, Q.Q8_0).reshape(48, 256).T;"
        "print(float(np.abs(y - ref).max() / np.abs(ref).max()))")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "KT_ISA": "amx"}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) < 2.0**-7


@pytest.mark.parametrize("isa_name", ISAS)
@pytest.mark.parametrize("qtype", FLOAT + BLOCK32 + KQUANTS, ids=lambda t: t.name)
def test_a_token_gets_the_same_result_alone_or_in_a_batch(qtype, isa_name, isa):
    """Batched tiles and the single-token dot do the same integer and float steps: a request's
    output must not depend on which other requests share its batch. (Nine tokens: below the
    AMX path, whose bf16 tiles round differently by design.)"""
    kernels.set_isa(isa_name)
    rows, cols = 37, cols_for(qtype)
    raw = make_weight(qtype, rows, cols, seed=3)
    x = torch.randn(9, cols, generator=torch.Generator().manual_seed(1))
    batched = kernels.matmul(raw, qtype, rows, cols, x)
    alone = torch.cat([kernels.matmul(raw, qtype, rows, cols, x[t:t + 1]) for t in range(9)])
    assert torch.equal(batched, alone)
