"""Minimal safetensors reader/writer on numpy, with bf16 (which numpy lacks) held as raw uint16.

Why not the `safetensors` package: its numpy API cannot hold bf16, and the official LM file is bf16. The format is
small: u64 little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets}}, padded with spaces
to 8 bytes, then the tensors' bytes. The writer orders tensors as the reference writer does (by dtype, then name),
so files written here have the official files' exact byte sizes.
"""
from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kyutai_stt.errors import UserError

# dtype name -> (numpy storage dtype, bytes per element). BF16 is stored as its raw 16 bits.
DTYPES = {"F32": (np.float32, 4), "F16": (np.float16, 2), "BF16": (np.uint16, 2), "I64": (np.int64, 8),
          "I32": (np.int32, 4), "U8": (np.uint8, 1)}
# The reference writer sorts by dtype, larger element types first: its Dtype enum order, descending.
_DTYPE_RANK = {"U8": 1, "BF16": 7, "F16": 6, "I32": 8, "F32": 10, "I64": 11}
_MAX_HEADER = 100 * 1024 * 1024   # the reference reader refuses headers above 100 MB


class SafetensorsError(UserError, ValueError):
    """A safetensors file is truncated, malformed, or holds something unexpected. Names the file (and tensor)."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str                  # safetensors dtype name: "BF16", "F32", ...
    shape: tuple[int, ...]
    offset: int                 # absolute byte offset in the file
    nbytes: int


def read_index(path: str | Path) -> dict[str, TensorInfo]:
    """Parse and check a file's header: every entry well-typed, every tensor inside the data section (after the
    header), its size exactly its shape's, no two tensors overlapping. Errors name the file and the tensor."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise SafetensorsError(f"{path}: truncated ({size} bytes), not a safetensors file")
            (header_len,) = struct.unpack("<Q", head)
            if header_len > _MAX_HEADER or 8 + header_len > size:
                raise SafetensorsError(f"{path}: header length {header_len} does not fit in the file ({size} "
                                       "bytes): truncated or not a safetensors file")
            raw = f.read(header_len)
    except OSError as e:
        raise SafetensorsError(f"{path}: cannot read it ({e.strerror or e})") from None
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError) as e:      # JSON, UTF-8, a 5000-digit number, nesting
        raise SafetensorsError(f"{path}: header is not valid JSON ({str(e)[:200] or type(e).__name__})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: header is a JSON {type(header).__name__}, not an object of tensors")
    data_start, data_size = 8 + header_len, size - 8 - header_len
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        out[name] = _entry(path, name, entry, data_start, data_size)
    spans = sorted((t.offset, t.offset + t.nbytes, t.name) for t in out.values() if t.nbytes)
    for (_, end, first), (begin, _, second) in zip(spans, spans[1:]):
        if begin < end:
            raise SafetensorsError(f"{path}: tensors '{first}' and '{second}' overlap (data_offsets): the file is "
                                   "damaged")
    return out


def _entry(path: Path, name: str, entry, data_start: int, data_size: int) -> TensorInfo:
    """One header entry {dtype, shape, data_offsets: [begin, end]} (offsets relative to the data section)."""
    def bad(problem: str) -> SafetensorsError:
        return SafetensorsError(f"{path}: tensor '{name[:100]}': {problem}")

    def integer(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    if not isinstance(entry, dict):
        raise bad(f"malformed header entry {str(entry)[:80]}")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise bad(f"unsupported dtype {str(dtype)[:40]}")
    if not isinstance(shape, list) or len(shape) > 8 or not all(integer(d) for d in shape):
        raise bad(f"shape {str(shape)[:80]} is not a list of sizes")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(integer(o) for o in offsets):
        raise bad(f"data_offsets {str(offsets)[:80]} is not [begin, end]")
    begin, end = offsets
    expected = DTYPES[dtype][1]
    for d in shape:
        expected *= d
    if begin > end or end - begin != expected:
        raise bad(f"{end - begin} bytes (data_offsets {begin}..{end}) for shape {list(shape)} {dtype}")
    if end > data_size:
        raise SafetensorsError(f"{path}: tensor '{name[:100]}' ends at byte {data_start + end} but the file has "
                               f"{data_start + data_size} bytes: the file is truncated (download it again)")
    return TensorInfo(name, dtype, tuple(shape), data_start + begin, end - begin)


def load_tensor(path: str | Path, info: TensorInfo) -> np.ndarray:
    """One tensor as a read-only memory map (no copy): BF16 comes back as uint16 bits."""
    storage = DTYPES[info.dtype][0]
    return np.memmap(path, dtype=storage, mode="r", offset=info.offset, shape=info.shape)


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round to nearest even, as torch does (NaN stays NaN)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (u + (np.uint32(0x7FFF) + ((u >> 16) & 1))) >> 16
    return np.where(np.isnan(x), np.uint32(0x7FC0), rounded).astype(np.uint16)


def write(path: str | Path, specs: Iterable[tuple[str, str, tuple[int, ...]]],
          produce: Callable[[str], np.ndarray]) -> int:
    """Write a file from (name, dtype, shape) specs, calling produce(name) for each tensor's data in file order,
    so that only one tensor is in memory at a time. Writes to a temporary name and renames. Returns the size."""
    path = Path(path)
    ordered, text, _ = _layout(specs)
    tmp = path.with_name(path.name + ".partial")
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(text)))
            f.write(text)
            for name, dtype, shape in ordered:
                data = np.ascontiguousarray(produce(name))
                if data.dtype != DTYPES[dtype][0] or data.shape != tuple(shape):
                    raise ValueError(f"{name}: produced {data.dtype}{data.shape}, expected {dtype}{tuple(shape)}")
                f.write(data.tobytes())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path.stat().st_size


def file_size(specs: Iterable[tuple[str, str, tuple[int, ...]]]) -> int:
    """The bytes write() would write for these specs, computed without writing (a 5 GB layout checked in ms)."""
    _, text, data = _layout(specs)
    return 8 + len(text) + data


def _layout(specs) -> tuple[list, bytes, int]:
    """(specs in file order, the padded JSON header, data bytes), as the reference writer lays a file out."""
    ordered = sorted(specs, key=lambda s: (-_DTYPE_RANK[s[1]], s[0]))
    header, offset = {}, 0
    for name, dtype, shape in ordered:
        nbytes = int(np.prod(shape, dtype=np.int64)) * DTYPES[dtype][1]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    return ordered, text + b" " * (-len(text) % 8), offset
