"""Reference dequantization of GGUF blocks in numpy: the oracle for kernels and the
fallback linear. Each format is one function from raw blocks [n_blocks, type_size]
(uint8) to float32 values [n_blocks, block_size]; `dequantize` dispatches by type.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as Q


def _f16(b: np.ndarray) -> np.ndarray:
    return b.copy().view(np.float16).astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """16 packed bytes per block -> 32 values: low nibbles first, then high."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def _q5_high_bits(qh: np.ndarray) -> np.ndarray:
    bits = qh.copy().view(np.uint32)  # [n, 1]
    return ((bits >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8) << 4  # [n, 32]


def deq_q4_0(b):
    d = _f16(b[:, :2])
    return d * (_nibbles(b[:, 2:]).astype(np.float32) - 8)


def deq_q4_1(b):
    d, m = _f16(b[:, :2]), _f16(b[:, 2:4])
    return d * _nibbles(b[:, 4:]).astype(np.float32) + m


def deq_q5_0(b):
    d = _f16(b[:, :2])
    q = _nibbles(b[:, 6:]) | _q5_high_bits(b[:, 2:6])
    return d * (q.astype(np.float32) - 16)


def deq_q5_1(b):
    d, m = _f16(b[:, :2]), _f16(b[:, 2:4])
    q = _nibbles(b[:, 8:]) | _q5_high_bits(b[:, 4:8])
    return d * q.astype(np.float32) + m


def deq_q8_0(b):
    return _f16(b[:, :2]) * b[:, 2:].view(np.int8).astype(np.float32)


def _k_scales_mins(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 12 packed bytes of Q4_K/Q5_K -> 8 six-bit scales and 8 six-bit mins."""
    s = s.astype(np.uint8)
    sc = np.concatenate([s[:, 0:4] & 63, (s[:, 8:12] & 0x0F) | ((s[:, 0:4] >> 6) << 4)], axis=1)
    mn = np.concatenate([s[:, 4:8] & 63, (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)], axis=1)
    return sc.astype(np.float32), mn.astype(np.float32)


def _k_quant_values(qs: np.ndarray) -> np.ndarray:
    """128 bytes -> 256 4-bit values in the order of 8 sub-blocks of 32:
    each 32-byte chunk gives its low nibbles, then its high nibbles."""
    chunks = qs.reshape(-1, 4, 1, 32)
    return np.concatenate([chunks & 0x0F, chunks >> 4], axis=2).reshape(-1, 8, 32)


def deq_q4_k(b):
    d, dmin = _f16(b[:, 0:2]), _f16(b[:, 2:4])
    sc, mn = _k_scales_mins(b[:, 4:16])
    q = _k_quant_values(b[:, 16:144]).astype(np.float32)  # [n, 8, 32]
    return ((d * sc)[..., None] * q - (dmin * mn)[..., None]).reshape(-1, 256)


def deq_q5_k(b):
    d, dmin = _f16(b[:, 0:2]), _f16(b[:, 2:4])
    sc, mn = _k_scales_mins(b[:, 4:16])
    qh = b[:, 16:48]  # bit j of qh[l] is the fifth bit of value l in sub-block j
    high = (qh[:, None, :] >> np.arange(8, dtype=np.uint8)[None, :, None]) & 1  # [n, 8, 32]
    q = (_k_quant_values(b[:, 48:176]) | (high << 4)).astype(np.float32)
    return ((d * sc)[..., None] * q - (dmin * mn)[..., None]).reshape(-1, 256)


def deq_q6_k(b):
    ql, qh = b[:, 0:128].reshape(-1, 2, 64), b[:, 128:192].reshape(-1, 2, 32)
    sc = b[:, 192:208].view(np.int8).astype(np.float32).reshape(-1, 2, 8)
    d = _f16(b[:, 208:210])  # [n, 1]
    low = np.concatenate([ql[..., :32] & 0x0F, ql[..., 32:] & 0x0F, ql[..., :32] >> 4, ql[..., 32:] >> 4], axis=2)
    shifts = np.repeat(np.array([0, 2, 4, 6], dtype=np.uint8), 32)
    high = (np.tile(qh, (1, 1, 4)) >> shifts) & 3
    q = (low | (high << 4)).astype(np.float32) - 32  # [n, 2, 128]
    scale = np.repeat(sc, 16, axis=2)  # 16 values per scale
    return (d[:, :, None] * scale * q).reshape(-1, 256)


def deq_f32(b):
    return b.copy().view(np.float32)


def deq_f16(b):
    return b.copy().view(np.float16).astype(np.float32)


def deq_bf16(b):
    return (b.copy().view(np.uint16).astype(np.uint32) << 16).view(np.float32)


DEQUANTIZERS: dict[Q, Callable[[np.ndarray], np.ndarray]] = {
    Q.F32: deq_f32, Q.F16: deq_f16, Q.BF16: deq_bf16,
    Q.Q4_0: deq_q4_0, Q.Q4_1: deq_q4_1, Q.Q5_0: deq_q5_0, Q.Q5_1: deq_q5_1, Q.Q8_0: deq_q8_0,
    Q.Q4_K: deq_q4_k, Q.Q5_K: deq_q5_k, Q.Q6_K: deq_q6_k,
}


def dequantize(raw: np.ndarray, ggml_type: Q, shape: tuple[int, ...]) -> np.ndarray:
    """Raw GGUF bytes of a tensor -> float32 array of `shape` (numpy order)."""
    if ggml_type not in DEQUANTIZERS:
        raise NotImplementedError(f"no dequantizer for GGUF type {ggml_type.name}")
    block, type_size = GGML_QUANT_SIZES[ggml_type]
    blocks = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1, type_size)
    if ggml_type in (Q.F32, Q.F16, Q.BF16):
        blocks = blocks.reshape(1, -1)
    return DEQUANTIZERS[ggml_type](blocks).reshape(shape)
