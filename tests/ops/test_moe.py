"""The native MoE operator (csrc/moe.cpp, kernels.moe) against a float64 reference built
from the gguf package's dequantizers, for every expert weight type a Q4_K_M file holds.

Bound: 3% of the largest output. Each of the two matmuls quantizes its input to 8 bits
per block (at most half a step, amax / 254, per value: about 0.4% of a typical output;
bf16 on the AMX path is finer), and the second sees the first's error through SiLU.
A wrong expert, slot or weight is off by whole outputs.
"""
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize

from kt.gguf.quantize import quantize
from kt.ops import kernels

pytestmark = pytest.mark.skipif(not kernels.available(), reason="kt._kernels is not built")

E, DIM, FFN, TOP_K = 6, 256, 512, 2


def experts(qtype: Q, rows: int, cols: int, seed: int):
    w = np.random.default_rng(seed).standard_normal((E * rows, cols)).astype(np.float32) / np.sqrt(cols)
    raw = quantize(w, qtype)
    dense = dequantize(raw, qtype).reshape(E, rows, cols).astype(np.float64)
    return (raw, int(qtype), E, rows, cols), dense


def reference(x, ids, weights, g, u, d):
    y = np.zeros((x.shape[0], DIM))
    for t in range(x.shape[0]):
        for k in range(TOP_K):
            e = ids[t, k]
            h = x[t] @ g[e].T
            y[t] += weights[t, k] * ((h / (1 + np.exp(-h))) * (x[t] @ u[e].T)) @ d[e].T
    return y


def routing(T: int, seed: int):
    rng = np.random.default_rng(seed)
    ids = np.stack([rng.choice(E - 1, TOP_K, replace=False) for _ in range(T)]).astype(np.int32)  # expert E-1 idle
    w = rng.uniform(0.1, 1, (T, TOP_K)).astype(np.float32)
    return ids, w / w.sum(1, keepdims=True)


@pytest.mark.parametrize("qtype", [Q.Q4_K, Q.Q6_K, Q.Q5_0, Q.Q8_0], ids=lambda q: q.name)
@pytest.mark.parametrize("T", [1, 5, 40])  # 40: sixteen and more tokens per expert take the AMX tiles where present
def test_matches_float64_reference(qtype, T):
    gate, g = experts(qtype, FFN, DIM, 1)
    up, u = experts(qtype, FFN, DIM, 2)
    down, d = experts(qtype, DIM, FFN, 3)
    x = np.random.default_rng(T).standard_normal((T, DIM)).astype(np.float32)
    ids, w = routing(T, T)
    y = kernels.moe(torch.from_numpy(x), torch.from_numpy(ids), torch.from_numpy(w), gate, up, down).numpy()
    ref = reference(x.astype(np.float64), ids, w, g, u, d)
    err = np.abs(y - ref).max() / np.abs(ref).max()
    assert err <= 0.03, f"{qtype.name} T={T}: {err:.4f}"


def test_bad_routing_is_a_value_error():
    gate, _ = experts(Q.Q8_0, FFN, DIM, 1)
    up, _ = experts(Q.Q8_0, FFN, DIM, 2)
    down, _ = experts(Q.Q8_0, DIM, FFN, 3)
    x = torch.zeros(2, DIM)
    with pytest.raises(ValueError, match="out of range"):
        kernels.moe(x, torch.tensor([[0, E]]).repeat(2, 1), torch.ones(2, 2), gate, up, down)
    with pytest.raises(ValueError):
        kernels.moe(x, torch.zeros(3, 2, dtype=torch.int32), torch.ones(3, 2), gate, up, down)  # 3 routings, 2 tokens
    with pytest.raises(ValueError, match="shapes disagree"):
        kernels.moe(x, torch.zeros(2, 2, dtype=torch.int32), torch.ones(2, 2), gate, down, down)  # up shaped as down
