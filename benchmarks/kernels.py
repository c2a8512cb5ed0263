"""Speed of kt's native GGUF kernels (kt.ops.kernels) per ISA, against this machine's read bandwidth.

    python benchmarks/kernels.py [--quick] [--threads N]

Everything is measured in this one process:

* read bandwidth: numpy reductions over a 1 GiB buffer, far larger than the caches,
  on 1 thread and on N threads (numpy releases the GIL inside a reduction);
* matvec (1 token): GB/s of weight bytes for a 4096x4096 Q4_K weight and the two
  DeepSeek-V2-Lite expert shapes, for every ISA kt supports, on 1 and N kernel
  threads, as a fraction of the read bandwidth on the same thread count. "streamed"
  rotates over distinct copies of the weight totalling at least 4x the last-level
  cache, so every call reads its weight from DRAM; "hot" repeats one copy, which
  may be served from cache;
* batched matmul: GFLOP/s (2 * tokens * rows * cols) for 512 tokens through the
  4096x4096 Q4_K weight on N threads, per ISA: AVX-512 versus AMX.

Weights are random blocks with a small finite f16 scale: kernel speed does not depend
on the values, and gguf.quants cannot quantize Q4_K. Rows are outputs, cols inputs.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as QT

from kt.ops import kernels

# Byte offsets of the f16 scale fields in one block (Q4_K: d, dmin; Q5_0: d). Every
# other byte may be random; a random f16 scale could be NaN/inf, so these are fixed.
SCALE_OFFSETS = {QT.Q4_K: (0, 2), QT.Q5_0: (0,)}
SCALE = np.frombuffer(np.float16(0.01).tobytes(), dtype=np.uint8)
BATCH_TOKENS = 512


@dataclass(frozen=True)
class Weight:
    rows: int  # outputs
    cols: int  # inputs
    qtype: QT
    note: str

    @property
    def label(self) -> str:
        return f"{self.rows}x{self.cols}"

    @property
    def row_bytes(self) -> int:
        block_values, block_bytes = GGML_QUANT_SIZES[self.qtype]
        return self.cols // block_values * block_bytes

    @property
    def nbytes(self) -> int:
        return self.rows * self.row_bytes


DENSE = Weight(4096, 4096, QT.Q4_K, "dense layer")
MATVEC_WEIGHTS = [
    DENSE,
    # 1408 inputs is not a multiple of Q4_K's 256-value block, so llama.cpp stores this
    # tensor as Q5_0 in a Q4_K_M file (Q8_0 in the layers that Q4_K_M bumps to Q6_K).
    Weight(2048, 1408, QT.Q5_0, "DeepSeek-V2-Lite expert down; Q4_K cannot hold 1408 inputs"),
    Weight(1408, 2048, QT.Q4_K, "DeepSeek-V2-Lite expert gate/up"),
]


def random_weight(w: Weight, rng: np.random.Generator) -> np.ndarray:
    """Random valid GGUF blocks [rows, row_bytes] for w."""
    raw = rng.integers(0, 256, size=(w.rows, w.row_bytes), dtype=np.uint8)
    blocks = raw.reshape(w.rows, -1, GGML_QUANT_SIZES[w.qtype][1])
    for off in SCALE_OFFSETS[w.qtype]:
        blocks[:, :, off:off + 2] = SCALE
    return raw


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def last_level_cache_bytes() -> int:
    """Largest cache cpu0 sees (sysfs sizes look like '32768K'); 32 MiB if unreadable."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    sizes = []
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = f.read_text().strip()
        sizes.append(int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text))
    return max(sizes, default=32 << 20)


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    return statistics.median(seconds(fn) for _ in range(repeats))


def read_bandwidth(buf: np.ndarray, threads: int, repeats: int) -> float:
    """Best-of-repeats GB/s for summing buf as uint64, split into one contiguous chunk per thread."""
    chunks = np.array_split(buf.view(np.uint64), threads)
    with ThreadPoolExecutor(threads) as pool:
        best = min(seconds(lambda: list(pool.map(np.sum, chunks))) for _ in range(repeats))
    return buf.nbytes / best / 1e9


def matvec_gbps(w: Weight, copies: list[np.ndarray], x: torch.Tensor, repeats: int) -> float:
    """GB/s of weight bytes for one-token matvecs, one call per entry of copies."""
    def sweep() -> None:
        for raw in copies:
            kernels.matmul(raw, w.qtype, w.rows, w.cols, x)

    return w.nbytes * len(copies) / median_seconds(sweep, repeats) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                    help="kernel and bandwidth threads (default: CPUs this process may use)")
    ap.add_argument("--quick", action="store_true", help="fewer repeats, for a smoke run")
    args = ap.parse_args()
    if not kernels.available():
        raise SystemExit("kt._kernels is not built; install kt with `pip install -e .`")

    n = args.threads
    thread_counts = sorted({1, n})
    bw_repeats, mv_repeats, mm_repeats = (2, 5, 1) if args.quick else (5, 15, 3)
    isas = kernels.supported_isas()
    llc = last_level_cache_bytes()
    rng = np.random.default_rng(0)

    print(f"CPU: {cpu_model()} | threads: {n} (of {len(os.sched_getaffinity(0))} usable) | "
          f"last-level cache: {llc >> 20} MiB | kt ISAs: {', '.join(isas)} (default {kernels.isa()})")

    # --- read bandwidth: the ceiling a matvec, which reads each weight byte once, can reach
    buf = np.ones(1 << 30, dtype=np.uint8)  # written once, so every page is really mapped
    bandwidth = {t: read_bandwidth(buf, t, bw_repeats) for t in thread_counts}
    del buf
    print(f"\nread bandwidth (numpy sum over 1 GiB, best of {bw_repeats}): " +
          ", ".join(f"{bandwidth[t]:.1f} GB/s on {t} thread{'s' * (t > 1)}" for t in thread_counts))

    # --- matvec: weight bytes per second against that ceiling
    stream_bytes = max(4 * llc, 128 << 20)
    print(f"\nmatvec, 1 token: GB/s = weight bytes / time, median of {mv_repeats}; "
          f"% = streamed GB/s as a share of the read bandwidth on the same thread count.\n"
          f"streamed = rotating over distinct copies totalling >= {stream_bytes >> 20} MiB "
          f"(>= 4x LLC, read from DRAM); hot = one copy repeated (may sit in cache).")
    print(f"{'weight':<10} {'type':<5} {'MB':>5} {'copies':>6} {'ISA':<7} {'thr':>3} "
          f"{'hot GB/s':>9} {'streamed GB/s':>14} {'% of read BW':>13}")
    for w in MATVEC_WEIGHTS:
        one = random_weight(w, rng)
        n_copies = max(2, math.ceil(stream_bytes / w.nbytes))
        stack = np.broadcast_to(one, (n_copies, *one.shape)).copy()  # distinct memory per copy
        streamed, hot = list(stack), [stack[0]] * n_copies  # same call count, so same per-call overhead
        x = torch.randn(1, w.cols)
        for isa in isas:
            kernels.set_isa(isa)
            for t in thread_counts:
                kernels.set_threads(t)
                hot_gbps = matvec_gbps(w, hot, x, mv_repeats)
                stream_gbps = matvec_gbps(w, streamed, x, mv_repeats)
                print(f"{w.label:<10} {w.qtype.name:<5} {w.nbytes / 1e6:>5.2f} {n_copies:>6} {isa:<7} {t:>3} "
                      f"{hot_gbps:>9.1f} {stream_gbps:>14.1f} {100 * stream_gbps / bandwidth[t]:>12.0f}%")
        del stack, streamed, hot
    for w in MATVEC_WEIGHTS:
        print(f"  {w.label} {w.qtype.name}: {w.note}")

    # --- batched: compute-bound, so one hot copy of the weight is the honest case
    w = DENSE
    raw = random_weight(w, rng)
    x = torch.randn(BATCH_TOKENS, w.cols)
    flops = 2 * BATCH_TOKENS * w.rows * w.cols
    kernels.set_threads(n)
    print(f"\nbatched matmul: {BATCH_TOKENS} tokens x {w.label} {w.qtype.name}, {n} threads, "
          f"GFLOP/s = 2*tokens*rows*cols / time, median of {mm_repeats} (scalar: 1 run, it is slow)")
    print(f"{'ISA':<7} {'ms':>9} {'GFLOP/s':>9}")
    gflops = {}
    for isa in isas:
        kernels.set_isa(isa)
        kernels.matmul(raw, w.qtype, w.rows, w.cols, x[:16])  # warm the thread pool and this ISA's path
        repeats = 1 if isa == "scalar" else mm_repeats
        seconds = median_seconds(lambda: kernels.matmul(raw, w.qtype, w.rows, w.cols, x), repeats, warmup=0)
        gflops[isa] = flops / seconds / 1e9
        print(f"{isa:<7} {seconds * 1e3:>9.1f} {gflops[isa]:>9.1f}")
    if "amx" not in gflops:
        print("amx: not available on this CPU")
    elif "avx512" in gflops:
        print(f"amx / avx512: {gflops['amx'] / gflops['avx512']:.2f}x")
    kernels.set_isa("")  # back to the best ISA


if __name__ == "__main__":
    main()
