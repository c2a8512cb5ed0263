import json

import pytest

from kt import store


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("KT_HOME", str(tmp_path))
    return tmp_path


def test_default_model_registers_from_its_package(home, smollm2_path):
    name, path = store.resolve(None)
    assert (name, path) == ("smollm2-135m", smollm2_path)
    manifest = json.loads((home / "models" / "smollm2-135m.json").read_text())
    assert manifest["path"] == str(smollm2_path) and manifest["quant"] == "Q4_1"
    assert [m.name for m in store.list_models()] == ["smollm2-135m"]


def test_store_name_and_file_path(home, smollm2_path):
    store.register(store.StoredModel("mine", str(smollm2_path), "Q4_1", "test"))
    assert store.resolve("mine") == ("mine", smollm2_path)
    assert store.resolve(str(smollm2_path)) == (smollm2_path.stem, smollm2_path)


def test_unknown_model_names_the_store(home):
    with pytest.raises(store.ModelNotFound, match="not in the store"):
        store.resolve("nothing-like-this")
