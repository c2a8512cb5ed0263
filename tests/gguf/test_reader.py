"""GGUF reading: split files, zero-copy loading, and one clear line for every kind of broken file."""
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from gguf import GGUFReader

from kt.gguf.errors import GGUFError
from kt.gguf.reader import GGUFFile, split_paths
from kt.models import load_model


@pytest.fixture
def model_copy(smollm2_path, tmp_path):
    dst = tmp_path / "model.gguf"
    shutil.copy(smollm2_path, dst)
    return dst


def _file_offset(reader: GGUFReader, part: np.ndarray) -> int:
    return part.__array_interface__["data"][0] - reader.data.__array_interface__["data"][0]


def _patch(path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _tensor_field(path, name):
    reader = GGUFReader(path)
    tensor = next(t for t in reader.tensors if t.name == name)
    return reader, tensor.field


def _rename_bytes(path, old: bytes, new: bytes) -> None:
    assert len(old) == len(new)
    blob = path.read_bytes()
    assert blob.count(old) >= 1
    path.write_bytes(blob.replace(old, new, 1))


def _load(path):
    return load_model(GGUFFile(path))


def _corrupt_magic(p):
    _patch(p, 0, b"GGML")


def _corrupt_version(p):
    _patch(p, 4, (99).to_bytes(4, "little"))


def _truncate_data(p):
    with open(p, "r+b") as f:
        f.truncate(p.stat().st_size // 2)


def _truncate_header(p):
    with open(p, "r+b") as f:
        f.truncate(4096)


def _offset_outside(p):
    reader, field = _tensor_field(p, "blk.3.ffn_up.weight")
    at = _file_offset(reader, field.parts[-1])
    del reader, field
    _patch(p, at, (10**12).to_bytes(8, "little"))


def _unknown_type(p):
    reader, field = _tensor_field(p, "blk.0.attn_q.weight")
    at = _file_offset(reader, field.parts[-2])
    del reader, field
    _patch(p, at, (250).to_bytes(4, "little"))


def _missing_key(p):
    _rename_bytes(p, b"llama.block_count", b"llama.block_cXunt")


def _missing_tensor(p):
    _rename_bytes(p, b"blk.7.attn_v.weight", b"blk.7.attn_v.weighX")


CASES = {
    "bad magic": (_corrupt_magic, "not a GGUF file"),
    "unsupported version": (_corrupt_version, "unsupported GGUF version 99"),
    "truncated data": (_truncate_data, "outside the file"),
    "truncated header": (_truncate_header, "truncated"),
    "tensor data outside the file": (_offset_outside, "outside the file"),
    "unknown quant type": (_unknown_type, "unknown quant type 250"),
    "missing key": (_missing_key, "required metadata key 'llama.block_count' is missing"),
    "missing tensor": (_missing_tensor, "required tensor 'blk.7.attn_v.weight' is missing"),
}


@pytest.mark.parametrize("case", CASES)
def test_broken_file_is_one_clear_line(case, model_copy):
    corrupt, expected = CASES[case]
    corrupt(model_copy)
    with pytest.raises(GGUFError) as err:
        _load(model_copy)
    message = str(err.value)
    assert message.startswith(str(model_copy)), message
    assert expected in message, message
    assert "\n" not in message


def test_serve_reports_broken_file_without_traceback(model_copy):
    _corrupt_version(model_copy)
    run = subprocess.run([sys.executable, "-m", "kt.cli", "serve", str(model_copy), "--port", "1"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert lines[-1] == f"kt serve: {model_copy}: unsupported GGUF version 99 (supported: 2, 3)", run.stderr
    assert "Traceback" not in run.stderr


def test_metadata_equals_gguf_readers(smollm2_path):
    reader = GGUFReader(smollm2_path)
    expected = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert GGUFFile(smollm2_path).metadata == expected


def test_missing_file(tmp_path):
    with pytest.raises(GGUFError, match="no such file"):
        GGUFFile(tmp_path / "absent.gguf")


def test_split_model_reads_all_parts(smollm2_path, tmp_path):
    """Split the real model into three parts with the gguf writer and read it back whole."""
    whole = GGUFFile(smollm2_path)
    names = list(whole.tensors)
    parts = [names[:100], names[100:200], names[200:]]
    for i, chunk in enumerate(parts, start=1):
        _write_part(whole, chunk, tmp_path / f"m-{i:05d}-of-00003.gguf", i, with_metadata=(i == 1))
    split = GGUFFile(tmp_path / "m-00001-of-00003.gguf")
    assert split.paths == split_paths(tmp_path / "m-00002-of-00003.gguf")
    assert list(split.tensors) == names
    for name in ("token_embd.weight", "blk.29.ffn_down.weight", "output_norm.weight"):
        assert np.array_equal(split.tensors[name].data, whole.tensors[name].data)
    assert split.architecture == "llama"


def _write_part(whole: GGUFFile, names, path, index, with_metadata):
    from gguf import GGUFWriter
    from gguf.constants import GGUFValueType

    w = GGUFWriter(path, arch="llama")
    w.add_uint16("split.no", index - 1)
    w.add_uint16("split.count", 3)
    if with_metadata:
        for key, value in whole.metadata.items():
            if key not in ("general.architecture",) and not key.startswith("split."):
                w.add_key_value(key, value, _value_type(value, GGUFValueType))
    for name in names:
        t = whole.tensors[name]
        w.add_tensor(name, np.array(t.data), raw_shape=None, raw_dtype=t.ggml_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _value_type(value, T):
    if isinstance(value, bool):
        return T.BOOL
    if isinstance(value, int):
        return T.UINT32 if value >= 0 else T.INT32
    if isinstance(value, float):
        return T.FLOAT32
    if isinstance(value, str):
        return T.STRING
    return T.ARRAY


def test_loading_copies_no_tensor_data(gemma3_path):
    """A 250 MB model loads as mmap views: resident memory grows far less than the file."""
    script = textwrap.dedent(f"""
        import psutil, torch
        from kt.gguf.reader import GGUFFile
        from kt.models import load_model
        before = psutil.Process().memory_info().rss
        model = load_model(GGUFFile({str(gemma3_path)!r}))
        print((psutil.Process().memory_info().rss - before) // 2**20)
    """)
    grown_mb = int(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout)
    file_mb = gemma3_path.stat().st_size // 2**20
    print(f"RSS grew {grown_mb} MB loading a {file_mb} MB model")
    assert grown_mb < file_mb / 5
