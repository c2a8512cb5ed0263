"""The fused forward of a SmolLM2-135M-shaped model (random weights, Q4_1 layers, Q8_0 head)
on every ISA this CPU has: 512-token prefill and decode tok/s, and how far each ISA's
logits sit from the AVX-512 ones. Needs no model file, so it runs anywhere kt builds.

    python benchmarks/isa_forward.py [--threads N] [--prefill 512] [--decode 64]
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from gguf import GGMLQuantizationType as Q
from gguf.quants import quantize

from kt.ops import kernels
from kt.ops.fused import FusedDecoder

DIM, HEADS, KV_HEADS, HEAD_DIM, FFN, LAYERS, VOCAB = 576, 9, 3, 64, 1536, 30, 49152


def blocks(rows: int, cols: int, qtype: Q, rng: np.random.Generator) -> tuple:
    w = (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)
    return np.ascontiguousarray(quantize(w, qtype)).view(np.uint8).reshape(rows, -1), int(qtype), rows, cols


def spec(rng: np.random.Generator) -> dict:
    # One set of layer weights shared by every layer: the work per layer is what is timed.
    ones = np.ones(DIM, dtype=np.float32)
    layer = dict(attn_norm=ones, ffn_norm=ones, rope=0, window=0,
                 q=blocks(HEADS * HEAD_DIM, DIM, Q.Q4_1, rng), k=blocks(KV_HEADS * HEAD_DIM, DIM, Q.Q4_1, rng),
                 v=blocks(KV_HEADS * HEAD_DIM, DIM, Q.Q4_1, rng), o=blocks(DIM, HEADS * HEAD_DIM, Q.Q4_1, rng),
                 gate=blocks(FFN, DIM, Q.Q4_1, rng), up=blocks(FFN, DIM, Q.Q4_1, rng), down=blocks(DIM, FFN, Q.Q4_1, rng))
    config = dict(dim=DIM, n_heads=HEADS, n_kv_heads=KV_HEADS, head_dim=HEAD_DIM, ffn_dim=FFN, vocab=VOCAB,
                  norm_eps=1e-5, attn_scale=HEAD_DIM ** -0.5, embed_scale=1.0, activation="silu",
                  ropes=[dict(dim=HEAD_DIM, base=100000.0, scale=1.0, neox=False)])
    return dict(config=config, layers=[layer] * LAYERS, final_norm=ones, lm_head=blocks(VOCAB, DIM, Q.Q8_0, rng))


def run(decoder: FusedDecoder, x: torch.Tensor, n_decode: int) -> tuple[float, float, torch.Tensor]:
    decoder.forward(x[:16], [decoder.new_sequence()], [16], [15])  # warm up: scratch, caches
    seq = decoder.new_sequence()
    start = time.perf_counter()
    logits = decoder.forward(x, [seq], [len(x)], [len(x) - 1])
    prefill = len(x) / (time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(n_decode):
        decoder.forward(x[i:i + 1], [seq], [1], [0])
    return prefill, n_decode / (time.perf_counter() - start), logits[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=kernels.default_threads())
    ap.add_argument("--prefill", type=int, default=512)
    ap.add_argument("--decode", type=int, default=64)
    args = ap.parse_args()
    kernels.set_threads(args.threads)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    decoder = FusedDecoder(spec(rng))
    x = torch.from_numpy(rng.standard_normal((args.prefill, DIM)).astype(np.float32))
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"{cpu}, {args.threads} threads (of {len(os.sched_getaffinity(0))}); SmolLM2-135M shape, random Q4_1 weights")
    print(f"{'ISA':<8} {'prefill tok/s':>14} {'decode tok/s':>13} {'logits vs avx512':>17}")
    results = {}
    for isa in [i for i in kernels.supported_isas() if i != "scalar"]:
        kernels.set_isa(isa)
        results[isa] = run(decoder, x, args.decode)
    base = results.get("avx512", next(iter(results.values())))[2]
    for isa, (prefill, decode, logits) in results.items():
        diff = float((logits - base).abs().max() / base.abs().max())
        print(f"{isa:<8} {prefill:>14.1f} {decode:>13.1f} {diff:>16.2e}")


if __name__ == "__main__":
    main()
