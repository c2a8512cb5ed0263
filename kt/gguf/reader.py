"""Open single and split GGUF files through the `gguf` package, memory-mapped, validated.

Tensor data is never copied at load: every `GGUFTensor.data` is a view into the
file's read-only mmap, so pages are read only when a kernel touches them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader, GGUFValueType
from gguf.constants import GGUF_MAGIC

from kt.gguf.errors import GGUFError

SUPPORTED_VERSIONS = (2, 3)
SPLIT_NAME = re.compile(r"^(?P<stem>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


@dataclass(frozen=True)
class GGUFTensor:
    name: str
    ggml_type: GGMLQuantizationType
    shape: tuple[int, ...]  # row-major (numpy) order: (rows, cols) for a matrix
    data: np.ndarray  # raw bytes (uint8) of the blocks, a view into the mmap
    path: Path

    @property
    def n_bytes(self) -> int:
        return self.data.nbytes


class _CheckedReader(GGUFReader):
    """GGUFReader that checks type and bounds of every tensor before it slices the mmap,
    and reads metadata arrays in one piece (the stock reader makes one numpy object per
    element: 10 s and 700 MB for a 262k-token vocabulary)."""

    def __init__(self, path, mode="r"):
        self.string_arrays: dict[int, list[str]] = {}
        super().__init__(path, mode)

    def _get_field_parts(self, orig_offs, raw_type):
        if GGUFValueType(raw_type) != GGUFValueType.ARRAY:
            return super()._get_field_parts(orig_offs, raw_type)
        item_type = GGUFValueType(int(self._get(orig_offs, np.uint32)[0]))
        count = int(self._get(orig_offs + 4, np.uint64)[0])
        start = orig_offs + 12
        head = [self._get(orig_offs, np.uint32), self._get(orig_offs + 4, np.uint64)]
        if item_type == GGUFValueType.STRING:
            strings, end = _read_strings(self.data, start, count)
            self.string_arrays[orig_offs] = strings
            return end - orig_offs, head, [], [GGUFValueType.ARRAY, item_type]
        nptype = self.gguf_scalar_to_np.get(item_type)
        if nptype is None:
            raise ValueError(f"metadata array of unsupported type {item_type.name}")
        values = self._get(start, nptype, count)
        return 12 + int(values.nbytes), head + [values], [2], [GGUFValueType.ARRAY, item_type]

    def _build_tensors(self, start_offs, fields):
        file_size = len(self.data)
        for field in fields:
            _, name_data, _, dims, raw_dtype, offset = field.parts
            name = bytes(name_data).decode("utf-8", "replace")
            try:
                ggml_type = GGMLQuantizationType(int(raw_dtype[0]))
            except ValueError:
                raise ValueError(f"tensor {name!r} has unknown quant type {int(raw_dtype[0])}") from None
            block, type_size = GGML_QUANT_SIZES[ggml_type]
            n_elems = int(np.prod(dims.astype(np.int64)))
            if int(dims[0]) % block:
                raise ValueError(f"tensor {name!r} row of {int(dims[0])} is not a multiple of the {ggml_type.name} block {block}")
            end = int(start_offs) + int(offset[0]) + n_elems * type_size // block
            if end > file_size:
                raise ValueError(f"tensor {name!r} data ends at byte {end}, outside the file ({file_size} bytes); truncated?")
        super()._build_tensors(start_offs, fields)


def _read_strings(data: np.ndarray, offset: int, count: int) -> tuple[list[str], int]:
    buf = memoryview(data)
    out = []
    for _ in range(count):
        n = int.from_bytes(buf[offset:offset + 8], "little")
        if offset + 8 + n > len(buf):
            raise ValueError("metadata string runs past the end of the file; truncated?")
        out.append(bytes(buf[offset + 8:offset + 8 + n]).decode("utf-8", "replace"))
        offset += 8 + n
    return out, offset


def _check_header(path: Path) -> None:
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8:
        raise GGUFError(path, f"not a GGUF file (only {len(head)} bytes)")
    if int.from_bytes(head[:4], "little") != GGUF_MAGIC:
        raise GGUFError(path, f"not a GGUF file (bad magic {head[:4]!r})")
    version = int.from_bytes(head[4:8], "little")
    if version not in SUPPORTED_VERSIONS:
        raise GGUFError(path, f"unsupported GGUF version {version} (supported: 2, 3)")


def _open_one(path: Path) -> GGUFReader:
    if not path.is_file():
        raise GGUFError(path, "no such file")
    _check_header(path)
    try:
        return _CheckedReader(path, "r")
    except ValueError as e:
        raise GGUFError(path, str(e)) from None
    except (IndexError, OverflowError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise GGUFError(path, f"truncated or corrupt header ({type(e).__name__}: {e})") from None


def split_paths(path: Path) -> list[Path]:
    """All parts of a split model given any one of them; [path] for a single file."""
    m = SPLIT_NAME.match(path.name)
    if not m:
        return [path]
    count = int(m["count"])
    return [path.with_name(f"{m['stem']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]


def _field_value(reader: _CheckedReader, field) -> Any:
    if field.types[:1] == [GGUFValueType.ARRAY] and field.types[-1] == GGUFValueType.STRING:
        key_bytes = field.parts[1].nbytes
        return reader.string_arrays[field.offset + 8 + key_bytes + 4]  # offset of the value
    if field.types[:1] == [GGUFValueType.ARRAY]:
        return field.parts[field.data[0]].tolist()
    return field.contents()


class GGUFFile:
    """Metadata and tensors of one model, from a single GGUF file or all parts of a split one."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.paths = split_paths(self.path)
        self.metadata: dict[str, Any] = {}
        self.tensors: dict[str, GGUFTensor] = {}
        for part in self.paths:
            self._add_part(part)

    def _add_part(self, part: Path) -> None:
        reader = _open_one(part)
        for key, field in reader.fields.items():
            if key.startswith("GGUF.") or key in self.metadata:
                continue
            try:
                self.metadata[key] = _field_value(reader, field)
            except Exception as e:  # a malformed value is a corrupt file, not a crash
                raise GGUFError(part, f"metadata key {key!r} is unreadable ({e})") from None
        for t in reader.tensors:
            if t.name in self.tensors:
                raise GGUFError(part, f"tensor {t.name!r} appears in more than one split part")
            rows = int(np.prod(t.shape[1:], dtype=np.int64))  # 1 for a vector
            raw = t.data.view(np.uint8).reshape(rows, -1)
            self.tensors[t.name] = GGUFTensor(t.name, t.tensor_type, tuple(int(d) for d in reversed(t.shape)), raw, part)
        expected = self.metadata.get("split.count")
        if expected is not None and int(expected) != len(self.paths):
            raise GGUFError(part, f"split.count says {expected} parts, the file name says {len(self.paths)}")

    @property
    def architecture(self) -> str:
        return self.require("general.architecture")

    def require(self, key: str) -> Any:
        if key not in self.metadata:
            raise GGUFError(self.path, f"required metadata key {key!r} is missing")
        return self.metadata[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    def tensor(self, name: str) -> GGUFTensor:
        if name not in self.tensors:
            raise GGUFError(self.path, f"required tensor {name!r} is missing")
        return self.tensors[name]
