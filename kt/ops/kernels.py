"""Native y = x @ W^T computed on GGUF blocks in place (csrc/, built as kt._kernels).

x is quantized once per call to 8-bit blocks (llama.cpp's scheme) and multiplied
by the weight blocks with integer dot products; on CPUs with AMX, batches of 16 or
more tokens go through bf16 tiles instead. Rows are spread over a thread pool with
the GIL released. `KT_ISA=scalar|avx2|avx512|amx` forces an instruction set at
import; by default the best one the CPU has is used.
"""
from __future__ import annotations

import os

import numpy as np
import torch

try:
    from kt import _kernels
except ModuleNotFoundError:  # source tree without a build: callers fall back to kt.gguf.dequant
    _kernels = None


def available() -> bool:
    return _kernels is not None


def _lib():
    if _kernels is None:
        raise RuntimeError("kt._kernels is not built; reinstall kt with `pip install -e .`")
    return _kernels


def isa() -> str:
    return _lib().isa()


def set_isa(name: str) -> None:
    """Force 'scalar', 'avx2', 'avx512' or 'amx' ('' = best); ValueError if unknown or unsupported."""
    _lib().set_isa(name)


def supported_isas() -> list[str]:
    return _lib().supported_isas()


def cpu_features() -> dict[str, bool]:
    return _lib().cpu_features()


def set_threads(n: int) -> None:
    _lib().set_threads(n)


def num_threads() -> int:
    return _lib().num_threads()


def default_threads() -> int:
    """Physical cores this process may run on (the pool's default size)."""
    return _kernels.default_threads() if available() else len(os.sched_getaffinity(0))


def supports(ggml_type: int) -> bool:
    return available() and int(ggml_type) in _kernels.supported_types()


def matmul(raw: np.ndarray, ggml_type, rows: int, cols: int, x: torch.Tensor) -> torch.Tensor:
    """y [T, rows] = x [T, cols] @ W^T, W given as its GGUF blocks raw [rows, row_bytes].

    raw is read in place (an mmap view is fine) and must be C-contiguous.
    """
    if not raw.flags.c_contiguous:
        raise ValueError("raw must be C-contiguous (it is read in place, never copied)")
    if raw.dtype != np.uint8:  # F32 / F16 tensors arrive typed; the bytes are the same
        raw = raw.view(np.uint8)
    raw = raw.reshape(rows, -1)
    x = x.detach().to(device="cpu", dtype=torch.float32).contiguous()  # [T, cols]
    y = torch.empty(x.shape[0], rows, dtype=torch.float32)  # [T, rows]
    _lib().matmul(raw, int(ggml_type), rows, cols, x.numpy(), y.numpy())
    return y


def moe(x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor, gate: tuple, up: tuple, down: tuple) -> torch.Tensor:
    """Routed experts in one native call: y [T, dim] = sum_k weights[:, k] * down(silu(gate(x)) * up(x)),
    expert ids[:, k]. gate / up / down: (raw blocks [n_experts * rows, row_bytes], ggml type, n_experts, rows, cols)."""
    x = x.detach().to(dtype=torch.float32).contiguous()
    y = torch.empty_like(x)
    _lib().moe(x.numpy(), ids.to(torch.int32).contiguous().numpy(), weights.to(torch.float32).contiguous().numpy(),
               gate, up, down, y.numpy())
    return y
