"""kt's own quantizers for the GGUF block formats its test models use (Q8_0, Q4_K, Q5_K,
Q6_K): float32 rows in, GGUF blocks out (uint8 [rows, row_bytes]), vectorised over
blocks. The layouts are ggml's; the choice of scales is a plain min/max fit (llama.cpp
searches a little harder), which is all a synthetic test model needs. Formats kt does
not quantize itself (Q5_0, F16, ...) come from the gguf package's `quantize`.
"""
from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf.quants import quantize as gguf_quantize

QK_K = 256


def _round(x: np.ndarray) -> np.ndarray:
    return np.floor(x + 0.5)  # ggml's nearest_int for the values here (ties away from -inf)


def _f16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16)


def _blocks(x: np.ndarray, size: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] % size:
        raise ValueError(f"rows of a multiple of {size} values expected, got shape {x.shape}")
    return x.reshape(x.shape[0], -1, size)


def quantize_q8_0(x: np.ndarray) -> np.ndarray:
    b = _blocks(x, 32)  # [rows, nb, 32]
    d = np.abs(b).max(-1) / 127
    q = np.where(d[..., None] > 0, np.round(b / np.where(d > 0, d, 1)[..., None]), 0).astype(np.int8)
    out = np.concatenate([_f16(d)[..., None].view(np.uint8), q.view(np.uint8)], axis=-1)
    return out.reshape(x.shape[0], -1)


def _pack_scales_k4(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """8 six-bit scales and 8 six-bit mins per super-block -> ggml's 12 bytes."""
    out = np.zeros(ls.shape[:-1] + (12,), dtype=np.uint8)
    out[..., 0:4] = ls[..., 0:4] | ((ls[..., 4:8] >> 4) << 6)
    out[..., 4:8] = lm[..., 0:4] | ((lm[..., 4:8] >> 4) << 6)
    out[..., 8:12] = (ls[..., 4:8] & 0xF) | ((lm[..., 4:8] & 0xF) << 4)
    return out


def _affine_k(x: np.ndarray, levels: int):
    """Q4_K / Q5_K fit: per 32-value sub-block, value = d*ls * code - dmin*lm (codes 0..levels)."""
    b = _blocks(x, QK_K).reshape(x.shape[0], -1, 8, 32)  # [rows, nb, 8, 32]
    lo = np.minimum(b.min(-1), 0)  # the min is subtracted, never added
    scale = (b.max(-1) - lo) / levels
    mins = -lo
    d = scale.max(-1) / 63  # super-block scales of the 6-bit sub-block scales
    dmin = mins.max(-1) / 63
    d16, dmin16 = _f16(d), _f16(dmin)
    d_, dmin_ = d16.astype(np.float32)[..., None], dmin16.astype(np.float32)[..., None]
    ls = np.clip(_round(np.where(d_ > 0, scale / np.where(d_ > 0, d_, 1), 0)), 0, 63).astype(np.uint8)
    lm = np.clip(_round(np.where(dmin_ > 0, mins / np.where(dmin_ > 0, dmin_, 1), 0)), 0, 63).astype(np.uint8)
    dl, ml = (d_ * ls)[..., None], (dmin_ * lm)[..., None]
    codes = np.clip(_round(np.where(dl > 0, (b + ml) / np.where(dl > 0, dl, 1), 0)), 0, levels).astype(np.uint8)
    return codes.reshape(x.shape[0], -1, QK_K), d16, dmin16, _pack_scales_k4(ls, lm)


def _nibbles_k(codes: np.ndarray) -> np.ndarray:
    """Codes [.., 256] -> 128 bytes: for each 64-value chunk, value l in the low nibble and l + 32 in the high."""
    c = codes.reshape(codes.shape[:-1] + (4, 2, 32)) & 0xF
    return (c[..., 0, :] | (c[..., 1, :] << 4)).reshape(codes.shape[:-1] + (128,))


def quantize_q4_k(x: np.ndarray) -> np.ndarray:
    codes, d, dmin, scales = _affine_k(x, 15)
    parts = [d[..., None].view(np.uint8), dmin[..., None].view(np.uint8), scales, _nibbles_k(codes)]
    return np.concatenate(parts, axis=-1).reshape(x.shape[0], -1)


def quantize_q5_k(x: np.ndarray) -> np.ndarray:
    codes, d, dmin, scales = _affine_k(x, 31)
    high = (codes.reshape(codes.shape[:-1] + (8, 32)) >> 4).astype(np.uint8)  # sub-block j's fifth bits
    qh = np.zeros(codes.shape[:-1] + (32,), dtype=np.uint8)
    for j in range(8):
        qh |= high[..., j, :] << j
    parts = [d[..., None].view(np.uint8), dmin[..., None].view(np.uint8), scales, qh, _nibbles_k(codes)]
    return np.concatenate(parts, axis=-1).reshape(x.shape[0], -1)


def quantize_q6_k(x: np.ndarray) -> np.ndarray:
    b = _blocks(x, QK_K).reshape(x.shape[0], -1, 16, 16)  # 16 sub-blocks of 16
    amax_idx = np.abs(b).argmax(-1)
    signed_max = np.take_along_axis(b, amax_idx[..., None], -1)[..., 0]
    scale = -signed_max / 32  # the largest value maps to code -32, as ggml does
    max_scale = np.take_along_axis(scale, np.abs(scale).argmax(-1)[..., None], -1)[..., 0]
    iscale = np.where(max_scale != 0, -128 / np.where(max_scale != 0, max_scale, 1), 0)
    sc = np.clip(_round(iscale[..., None] * scale), -128, 127).astype(np.int8)
    d16 = _f16(np.where(iscale != 0, 1 / np.where(iscale != 0, iscale, 1), 0))
    dl = (d16.astype(np.float32)[..., None] * sc)[..., None]
    q = np.clip(_round(np.where(dl != 0, b / np.where(dl != 0, dl, 1), 0)), -32, 31).astype(np.int16) + 32
    q = q.reshape(x.shape[0], -1, 2, 4, 32).astype(np.uint8)  # [.., half, quarter, 32]: value 128h + 32k + l
    ql = np.concatenate([(q[..., 0, :] & 0xF) | ((q[..., 2, :] & 0xF) << 4),
                         (q[..., 1, :] & 0xF) | ((q[..., 3, :] & 0xF) << 4)], axis=-1)  # [.., half, 64]
    qh = (q[..., 0, :] >> 4) | ((q[..., 1, :] >> 4) << 2) | ((q[..., 2, :] >> 4) << 4) | ((q[..., 3, :] >> 4) << 6)
    nb = q.shape[1]
    parts = [ql.reshape(x.shape[0], nb, 128), qh.reshape(x.shape[0], nb, 64), sc.view(np.uint8), d16[..., None].view(np.uint8)]
    return np.concatenate(parts, axis=-1).reshape(x.shape[0], -1)


OWN = {Q.Q8_0: quantize_q8_0, Q.Q4_K: quantize_q4_k, Q.Q5_K: quantize_q5_k, Q.Q6_K: quantize_q6_k}


def quantize(x: np.ndarray, qtype: Q) -> np.ndarray:
    """float32 [rows, cols] -> GGUF blocks uint8 [rows, row_bytes] (F32 as raw float bytes)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if qtype in OWN:
        return np.ascontiguousarray(OWN[qtype](x))
    if qtype == Q.F32:
        return x.view(np.uint8).reshape(x.shape[0], -1)
    return np.ascontiguousarray(gguf_quantize(x, qtype)).view(np.uint8).reshape(x.shape[0], -1)
