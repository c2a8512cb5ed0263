"""Launch knobs as frozen, validated dataclasses, and the one table of KT_* variables."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENVIRONMENT = {
    "KT_HOME": "model store and settings (default ~/.kt)",
    "KT_ISA": "force a CPU kernel ISA: scalar | avx2 | avx512 | amx (default: the best the CPU has)",
}


def kt_home() -> Path:
    return Path(os.environ.get("KT_HOME") or Path.home() / ".kt")


@dataclass(frozen=True)
class ServeConfig:
    model: str | None = None  # GGUF path, store name, or None for the default model
    host: str = "127.0.0.1"
    port: int = 10002
    max_new_tokens: int = 1024  # default and upper bound of generated tokens per request
    chunk_size: int = 512
    threads: int | None = None
    served_name: str | None = None  # the model id clients see; default: the store name or file stem
    optimize_config: str | None = "auto"  # optimize-rule YAML, or "auto": kt's file for the architecture

    def __post_init__(self):
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be in 1..65535, got {self.port}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {self.chunk_size}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")
