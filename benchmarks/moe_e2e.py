"""Mixture-of-experts decode and prefill, kt against llama.cpp (llama-cpp-python) in one process,
on a synthetic GGUF with a real model's layer shape (kt.gguf.synth, Q4_K_M mix) and a few
layers: Qwen3-30B-A3B (qwen3moe 30b-a3b) or DeepSeek-V2-Lite / V3 (deepseek2 v2-lite / v3);
decode also as a share of the memory-bandwidth roofline (the weights one token reads, over
the read bandwidth this script measures), and the teacher-forced top-1 agreement of the two.

    python benchmarks/moe_e2e.py [--arch qwen3moe|deepseek2] [--preset 30b-a3b|v2-lite|v3] [--layers 2]
                                 [--threads 2] [--prefill 512] [--decode 64]

The file is written once into ~/.cache/kt-bench. Its vocabulary is kt.gguf.synth's small
byte-level one, so the output head is tiny: the figures are the layers'.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e import bench_kt, bench_llama_cpp  # noqa: E402  (the same measurement as the dense models)
from kernels import read_bandwidth  # noqa: E402

from kt.gguf.reader import GGUFFile  # noqa: E402
from kt.gguf.synth import WRITERS  # noqa: E402


def bytes_per_token(path: Path) -> int:
    """Weights one decode step reads: every tensor but the experts, plus top-k of each layer's experts."""
    f = GGUFFile(path)
    arch = f.architecture
    n_experts, used = int(f.require(f"{arch}.expert_count")), int(f.require(f"{arch}.expert_used_count"))
    total = 0
    for name, t in f.tensors.items():
        if name == "token_embd.weight":
            total += t.n_bytes // t.shape[0]  # one row
        elif "_exps." in name:
            total += t.n_bytes // n_experts * used
        else:
            total += t.n_bytes
    return total


def top1_agreement(path: Path, threads: int, n: int = 64) -> float:
    """Teacher-forced: the share of positions where kt's and llama.cpp's next-token argmax agree."""
    import kt
    from llama_cpp import Llama

    from e2e import prompt_ids

    ids = prompt_ids(n, len(GGUFFile(path).require("tokenizer.ggml.tokens")))
    ours = kt.LLM(path, threads=threads).logits(ids)
    llm = Llama(str(path), n_ctx=n + 8, logits_all=True, verbose=False, n_threads=threads)
    llm.eval(ids)
    theirs = np.array(llm.scores[:n])
    return float((ours.argmax(-1) == theirs.argmax(-1)).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="qwen3moe", choices=sorted(WRITERS))
    ap.add_argument("--preset", default="30b-a3b")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prefill", type=int, default=512)
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    write, presets = WRITERS[args.arch]
    path = Path.home() / ".cache" / "kt-bench" / f"{args.arch}-{args.preset}-{args.layers}l-q4_k_m.gguf"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path, replace(presets[args.preset], layers=args.layers))
    per_token = bytes_per_token(path)
    bandwidth = read_bandwidth(np.ones(1 << 30, dtype=np.uint8), args.threads, 3)
    roofline = bandwidth * 1e9 / per_token
    print(f"{path.name}: {path.stat().st_size / 1e9:.2f} GB, {per_token / 1e6:.1f} MB of weights read per token; "
          f"read bandwidth {bandwidth:.1f} GB/s ({args.threads} threads) -> roofline {roofline:.1f} tok/s")
    kt_p, kt_d = bench_kt(path, args.threads, args.prefill, args.decode, args.repeats)
    ll_p, ll_d = bench_llama_cpp(path, args.threads, args.prefill, args.decode, args.repeats)
    print(f"{'':<10} {'kt':>9} {'llama.cpp':>10} {'kt/llama.cpp':>13}   tok/s, best of {args.repeats}")
    print(f"{'prefill':<10} {kt_p:>9.1f} {ll_p:>10.1f} {kt_p / ll_p:>12.2f}x")
    print(f"{'decode':<10} {kt_d:>9.1f} {ll_d:>10.1f} {kt_d / ll_d:>12.2f}x   "
          f"roofline: kt {kt_d / roofline:.0%}, llama.cpp {ll_d / roofline:.0%}")
    print(f"teacher-forced top-1 agreement with llama.cpp over 64 positions: {top1_agreement(path, args.threads):.1%}")


if __name__ == "__main__":
    main()
