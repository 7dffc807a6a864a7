"""The model package: a directory that a static file server hosts unchanged (docs/weights.md is the spec).

    manifest.json               format + version, config, files (bytes, sha256), tensors (streams), tokenizer
    model-00001-of-0000N.gguf   the tensors' streams, written and read with the `gguf` library

Each package tensor is stored as the streams of its quantised layout (kyutai_stt/weights/quant.py): q4/q8 as `<name>.qs`
(u32 words, GGUF type I32) and `<name>.d` (f16 scales), f16/f32 as `<name>.w`. Stream data starts on a 256-byte
boundary (GGUF general.alignment = 256, WebGPU's largest minStorageBufferOffsetAlignment), so a host can upload a
stream straight from the file bytes, or bind it at its offset inside a buffer holding a whole shard. The manifest
repeats each stream's file, offset, byte length, dtype and shape: a browser needs no GGUF parser.

This module writes packages (write_package) and opens them (open_package -> Package): the loading API of the
native engine and the tests. Opening checks the format version, the files' sizes, their SHA-256 and that the GGUF
headers agree with the manifest; every error names the file and, where one is at fault, the tensor.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import stat
import zlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from kyutai_stt import __version__
from kyutai_stt.config import LMConfig, MimiConfig
from kyutai_stt.errors import UserError
from kyutai_stt.weights import checkpoint, names, quant
from kyutai_stt.weights.tokenizer import Tokenizer

FORMAT = "kyutai-stt-package"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ALIGNMENT = 256                              # bytes; every stream starts at a multiple of this in its file
MAX_STREAM_BYTES = 128 * 2**20               # WebGPU's default maxStorageBufferBindingSize
STREAM_DTYPES = {"u32": np.uint32, "f16": np.float16, "f32": np.float32}
_GGUF_STORAGE = {"u32": np.int32, "f16": np.float16, "f32": np.float32}   # GGUF has no U32 tensor type
GGUF_ARCH = "kyutai-stt"
# A manifest's file names are data, never paths: one plain name of this form, checked before anything is opened,
# fetched or written (web/package.js has the same rule; tests/vectors/file_names.json pins both). No separators,
# no leading dot or dash, no "..", no URL syntax; not the manifest itself, not a download's temporary name.
SAFE_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
RESERVED_SUFFIX = ".partial"                 # models_cache downloads into NAME.partial
MAX_MANIFEST_BYTES = 64 * 2**20              # the real model's manifest: well under 1 MB (tokenizer pieces, scores)
MAX_FILES = 4096
MAX_FILE_BYTES = 2**40


class PackageError(UserError, ValueError):
    pass


@dataclass(frozen=True)
class StreamSpec:
    name: str                # "qs", "d" or "w"
    dtype: str               # a key of STREAM_DTYPES
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(STREAM_DTYPES[self.dtype]).itemsize


def stream_specs(quant_type: str, shape: tuple[int, ...]) -> list[StreamSpec]:
    """The streams of a tensor of logical shape [N, K] (or any shape for f16/f32) in a layout of quant.py."""
    quant.check_shape(quant_type, shape)
    if quant_type in ("f16", "f32"):
        return [StreamSpec("w", quant_type, tuple(shape))]
    n, k = shape
    per_word = 8 if quant_type == "q4" else 4
    return [StreamSpec("qs", "u32", (n, k // per_word)), StreamSpec("d", "f16", (n, k // quant.BLOCK))]


@dataclass(frozen=True)
class TensorPlan:
    """One package tensor to write: its name, layout and logical shape (rows = outputs)."""
    name: str
    quant: str
    shape: tuple[int, ...]

    @property
    def streams(self) -> list[StreamSpec]:
        return stream_specs(self.quant, self.shape)

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.streams)


def _aligned(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


def _header_bound(tensors: Iterable[TensorPlan], kv_bytes: int) -> int:
    """An upper bound on a shard's GGUF header: fixed part, key/values, per-stream infos, padding."""
    infos = sum(8 + len(t.name) + 3 + 4 + 8 * len(s.shape) + 4 + 8 for t in tensors for s in t.streams)
    return 24 + kv_bytes + infos + ALIGNMENT


def plan_shards(tensors: list[TensorPlan], shard_bytes: int, kv_bytes: int) -> list[list[TensorPlan]]:
    """Consecutive tensors into files of at most shard_bytes (header included); a tensor never straddles files."""
    shards: list[list[TensorPlan]] = [[]]
    for t in tensors:
        for s in t.streams:
            if s.nbytes > MAX_STREAM_BYTES:
                raise PackageError(f"tensor '{t.name}' stream {s.name}: {s.nbytes} bytes exceeds the "
                                   f"{MAX_STREAM_BYTES}-byte limit of a WebGPU binding")
        if _header_bound([t], kv_bytes) + sum(_aligned(s.nbytes) for s in t.streams) > shard_bytes:
            raise PackageError(f"tensor '{t.name}' ({t.nbytes} bytes) does not fit in a {shard_bytes}-byte shard: "
                               "raise --shard-mb")
        candidate = shards[-1] + [t]
        if _header_bound(candidate, kv_bytes) + sum(_aligned(s.nbytes) for c in candidate for s in c.streams) \
                > shard_bytes:
            shards.append([t])
        else:
            shards[-1] = candidate
    return shards


def write_package(out_dir: Path, tensors: list[TensorPlan], produce: Callable[[TensorPlan], dict],
                  meta: dict, shard_bytes: int, on_file: Callable[[str, int], None] | None = None) -> dict:
    """Write the GGUF shards and manifest.json into out_dir (which must exist and be empty).

    produce(plan) returns the tensor's streams {name: array}, called once per tensor in order, so one tensor at a
    time is in memory. meta holds the manifest's other fields (config, variant, quant, tokenizer). on_file(name,
    bytes) is called as each file is finished (progress)."""
    import gguf

    kv = {"kyutai_stt.format": FORMAT, "kyutai_stt.format_version": FORMAT_VERSION,
          "kyutai_stt.config": json.dumps(meta["config"], separators=(",", ":"))}
    kv_bytes = sum(8 + len(k) + 4 + 8 + len(str(v).encode()) for k, v in kv.items()) + 4 * 64
    shards = plan_shards(tensors, shard_bytes, kv_bytes)
    files, entries = [], {}
    for index, shard in enumerate(shards):
        file_name = f"model-{index + 1:05d}-of-{len(shards):05d}.gguf"
        path = out_dir / file_name
        writer = gguf.GGUFWriter(path, GGUF_ARCH)
        writer.add_custom_alignment(ALIGNMENT)
        writer.add_string("kyutai_stt.format", FORMAT)
        writer.add_uint32("kyutai_stt.format_version", FORMAT_VERSION)
        writer.add_string("kyutai_stt.config", kv["kyutai_stt.config"])
        writer.add_uint32("kyutai_stt.shard", index)
        writer.add_uint32("kyutai_stt.shard_count", len(shards))
        for t in shard:
            for s in t.streams:
                writer.add_tensor_info(f"{t.name}.{s.name}", s.shape, np.dtype(_GGUF_STORAGE[s.dtype]), s.nbytes)
        crcs = {}
        try:
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            for t in shard:
                streams = produce(t)
                for s in t.streams:
                    data = np.ascontiguousarray(streams[s.name])
                    if data.dtype != STREAM_DTYPES[s.dtype] or data.shape != s.shape:
                        raise ValueError(f"{t.name}.{s.name}: produced {data.dtype}{data.shape}, expected "
                                         f"{s.dtype}{s.shape}")      # a converter bug, not a user error
                    crcs[t.name, s.name] = zlib.crc32(data)
                    writer.write_tensor_data(data.view(_GGUF_STORAGE[s.dtype]))
        finally:
            writer.close()
        size = path.stat().st_size
        assert size <= shard_bytes, (file_name, size, shard_bytes)
        files.append({"name": file_name, "bytes": size, "sha256": sha256_file(path)})
        if on_file:
            on_file(file_name, size)
        # Offsets as the gguf library reads them back: the manifest cannot disagree with the GGUF header.
        for t in shard:
            entries[t.name] = {"quant": t.quant, "shape": list(t.shape), "streams": {}}
        for info in gguf.GGUFReader(path).tensors:
            name, stream = info.name.rsplit(".", 1)
            spec = next(s for s in stream_specs(entries[name]["quant"], tuple(entries[name]["shape"]))
                        if s.name == stream)
            entries[name]["streams"][stream] = {"file": file_name, "offset": int(info.data_offset),
                                                "nbytes": int(info.n_bytes), "dtype": spec.dtype,
                                                "shape": list(spec.shape), "crc32": crcs[name, stream]}
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "created_by": f"kyutai-stt {__version__}",
                **{k: meta[k] for k in ("variant", "quant", "config")},
                "total_bytes": sum(f["bytes"] for f in files), "files": files, "tensors": entries,
                "tokenizer": meta["tokenizer"], "synthetic": meta.get("synthetic")}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return manifest


def sha256_file(path: Path, chunk: int = 8 * 2**20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def config_json(lm: LMConfig, mimi: MimiConfig) -> dict:
    """The manifest's config: the official config.json, the Mimi settings, and values derived from both."""
    return {"lm": lm.to_official_json(), "mimi": asdict(mimi), "derived": _derived(lm, mimi)}


def _derived(lm: LMConfig, mimi: MimiConfig) -> dict:
    return {"head_dim": lm.head_dim, "ffn_dim": lm.ffn_dim, "num_params": lm.num_params,
            "has_vad_heads": lm.has_vad_heads, "mimi_hop_length": mimi.hop_length,
            "mimi_frame_size": mimi.frame_size, "mimi_downsample_stride": mimi.downsample_stride,
            "mimi_head_dim": mimi.dimension // mimi.num_heads}


# ---- reading --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Stream:
    file: str
    offset: int
    nbytes: int
    dtype: str
    shape: tuple[int, ...]
    crc32: int


@dataclass(frozen=True)
class TensorEntry:
    name: str
    quant: str
    shape: tuple[int, ...]
    streams: dict[str, Stream]


class Package:
    """An opened, verified package. streams() gives GPU-ready bytes as read-only memory maps (no copies)."""

    def __init__(self, root: Path, manifest: dict, tensors: dict[str, TensorEntry]):
        self.root = root
        self.manifest = manifest
        self.config = LMConfig.from_official_json(manifest["config"]["lm"], f"{root / MANIFEST}: config.lm")
        self.mimi_config = MimiConfig.from_manifest(manifest["config"]["mimi"], f"{root / MANIFEST}: config.mimi")
        self.tokenizer = Tokenizer.from_manifest(manifest["tokenizer"], str(root / MANIFEST))
        if len(self.tokenizer) != self.config.text_card:
            raise PackageError(f"{root / MANIFEST}: the tokenizer has {len(self.tokenizer)} pieces, but config.lm "
                               f"says text_card {self.config.text_card}")
        self.variant: str = manifest["variant"]
        self.quant: str = manifest["quant"]
        # Set when converted from a synthetic checkpoint (random weights): transcripts are then meaningless.
        self.synthetic: dict | None = manifest.get("synthetic")
        self._tensors = tensors
        self._maps: dict[str, np.memmap] = {}

    def tensor_names(self) -> list[str]:
        return list(self._tensors)

    def tensor(self, name: str) -> TensorEntry:
        try:
            return self._tensors[name]
        except KeyError:
            raise PackageError(f"{self.root / MANIFEST}: no tensor '{name}' in this package") from None

    def streams(self, name: str) -> dict[str, np.ndarray]:
        """{stream: typed array of the stream's shape}, views of a memory map of the shard file."""
        out = {}
        for key, s in self.tensor(name).streams.items():
            if s.file not in self._maps:
                self._maps[s.file] = np.memmap(self.root / s.file, dtype=np.uint8, mode="r")
            raw = self._maps[s.file][s.offset:s.offset + s.nbytes]
            out[key] = raw.view(STREAM_DTYPES[s.dtype]).reshape(s.shape)
        return out

    def read_stream(self, stream: str) -> np.ndarray:
        """One stream by its plan name '<tensor>.<qs|d|w>' (what a plan's weight buffers are made of)."""
        tensor, kind = stream.rsplit(".", 1)
        return self.streams(tensor)[kind]

    def dequantize(self, name: str) -> np.ndarray:
        """The tensor in float32 through quant.dequantize: the numpy reference for the GPU kernels."""
        entry = self.tensor(name)
        return quant.dequantize(self.streams(name), entry.quant, entry.shape)

    @property
    def nbytes(self) -> int:
        return int(self.manifest["total_bytes"])


def open_package(path: str | Path, verify_hashes: bool = True) -> Package:
    """Open a package directory: check the manifest (fields, file names, config against every tensor), the
    files' sizes, (optionally) their SHA-256, and that each GGUF header agrees with the manifest.
    verify_hashes=False skips hashing (a package verified before)."""
    root = Path(path)
    manifest_path = root / MANIFEST
    manifest = _load_json(read_manifest(manifest_path), str(manifest_path))
    tensors = check_manifest(manifest, str(manifest_path))
    for f in manifest["files"]:
        _check_file(root, f, tensors, verify_hashes)
    _check_gguf_headers(root, manifest, tensors)
    try:
        return Package(root, manifest, tensors)
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, UserError):
            raise
        raise PackageError(f"{manifest_path}: malformed manifest ({type(e).__name__}: {e})") from None


def read_manifest(path: Path) -> bytes:
    """The bytes of a manifest.json: a regular file (not a FIFO, which would block, nor a directory) of at most
    MAX_MANIFEST_BYTES."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise PackageError(f"{path}: not a regular file ({path.parent} is not a model package)")
        if info.st_size > MAX_MANIFEST_BYTES:
            raise PackageError(f"{path}: {info.st_size} bytes, more than a manifest's {MAX_MANIFEST_BYTES}")
        with open(path, "rb") as f:
            return f.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise PackageError(f"{path}: not found ({path.parent} is not a model package)") from None
    except OSError as e:
        raise PackageError(f"{path}: cannot read it ({e.strerror or e})") from None


def parse_manifest(data: bytes, source: str) -> dict:
    """manifest.json bytes -> its object, every field checked (check_manifest). Raises PackageError."""
    manifest = _load_json(data, source)
    check_manifest(manifest, source)
    return manifest


def _load_json(data: bytes, source: str):
    if len(data) > MAX_MANIFEST_BYTES:
        raise PackageError(f"{source}: more than a manifest's {MAX_MANIFEST_BYTES} bytes")
    try:
        manifest = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except RecursionError:
        raise PackageError(f"{source}: not a manifest (nested too deeply)") from None
    except ValueError as e:                      # JSONDecodeError, UnicodeDecodeError, a 5000-digit integer
        raise PackageError(f"{source}: not valid JSON ({str(e)[:200]})") from None
    return manifest


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def check_manifest(manifest, source: str) -> dict[str, TensorEntry]:
    """Every field of a manifest object, without reading a byte of its files: types, file names (SAFE_FILE_NAME),
    sizes, hashes, each stream inside its file, and the config against every tensor's shape and type. What a
    download checks before it writes anything; returns the tensors."""
    tensors = _parse_manifest(manifest, source)
    _check_config(manifest, tensors, source)
    return tensors


def check_file_name(name, where: str) -> str:
    """A manifest's file name, refused unless it is a plain name of SAFE_FILE_NAME's form."""
    if not isinstance(name, str):
        raise PackageError(f"{where}: file name {name!r} is not a string")
    if not SAFE_FILE_NAME.fullmatch(name) or ".." in name or name.lower() == MANIFEST \
            or name.endswith(RESERVED_SUFFIX):
        raise PackageError(f"{where}: file name {name[:140]!r} is not a plain file name (letters, digits, '.', '_',"
                           f" '-'; no path, no leading dot, no '..'): this package is not safe to use")
    return name


def _integer(value, where: str, low: int = 0, high: int = 2**53) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise PackageError(f"{where}: expected an integer in [{low}, {high}], got {str(value)[:60]}")
    return value


def _check_files(manifest, source: str) -> dict[str, int]:
    """files: [{name, bytes, sha256}] -> {name: bytes}."""
    files = manifest.get("files")
    if not isinstance(files, list) or not 1 <= len(files) <= MAX_FILES:
        raise PackageError(f"{source}: 'files' must be a list of 1 to {MAX_FILES} entries")
    sizes: dict[str, int] = {}
    for i, f in enumerate(files):
        where = f"{source}: files[{i}]"
        if not isinstance(f, dict):
            raise PackageError(f"{where}: expected an object {{name, bytes, sha256}}")
        name = check_file_name(f.get("name"), where)
        if name.lower() in {n.lower() for n in sizes}:
            raise PackageError(f"{where}: file name {name!r} is listed twice")
        sizes[name] = _integer(f.get("bytes"), f"{where} ({name}): bytes", 1, MAX_FILE_BYTES)
        sha = f.get("sha256")
        if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise PackageError(f"{where} ({name}): sha256 must be 64 lowercase hex digits")
    if manifest.get("total_bytes") != sum(sizes.values()) or isinstance(manifest.get("total_bytes"), bool):
        raise PackageError(f"{source}: total_bytes {str(manifest.get('total_bytes'))[:40]} is not the sum of the "
                           f"files' bytes ({sum(sizes.values())})")
    return sizes


def _check_stream(raw, where: str, files: dict[str, int]) -> Stream:
    if not isinstance(raw, dict):
        raise PackageError(f"{where}: expected an object")
    file = raw.get("file")
    if file not in files:
        check_file_name(file, where)
        raise PackageError(f"{where}: file {file!r} is not listed in 'files'")
    offset = _integer(raw.get("offset"), f"{where}: offset")
    nbytes = _integer(raw.get("nbytes"), f"{where}: nbytes", 0, MAX_STREAM_BYTES)
    if offset + nbytes > files[file]:
        raise PackageError(f"{where}: bytes {offset}..{offset + nbytes} lie outside {file} ({files[file]} bytes)")
    dtype, shape = raw.get("dtype"), raw.get("shape")
    if not isinstance(dtype, str) or dtype not in STREAM_DTYPES:
        raise PackageError(f"{where}: dtype {str(dtype)[:40]!r} is not one of {sorted(STREAM_DTYPES)}")
    if not isinstance(shape, list) or not 1 <= len(shape) <= 4:
        raise PackageError(f"{where}: shape must be a list of 1 to 4 sizes")
    shape = tuple(_integer(d, f"{where}: shape", 1, 2**31) for d in shape)
    return Stream(file, offset, nbytes, dtype, shape, _integer(raw.get("crc32"), f"{where}: crc32", 0, 2**32 - 1))


def _parse_manifest(manifest, source: str) -> dict[str, TensorEntry]:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise PackageError(f"{source}: not a {FORMAT} manifest")
    if manifest.get("format_version") != FORMAT_VERSION or isinstance(manifest.get("format_version"), bool):
        raise PackageError(f"{source}: format version {str(manifest.get('format_version'))[:40]}, but this "
                           f"kyutai-stt reads version {FORMAT_VERSION}: convert the checkpoint again with this version")
    files = _check_files(manifest, source)
    raw_tensors = manifest.get("tensors")
    if not isinstance(raw_tensors, dict) or not raw_tensors:
        raise PackageError(f"{source}: 'tensors' must be an object of tensor entries")
    tensors = {}
    try:
        for name, raw in raw_tensors.items():
            where = f"{source}: tensor '{name[:100]}'"
            if not isinstance(raw, dict) or not isinstance(raw.get("streams"), dict) \
                    or not isinstance(raw.get("quant"), str) or not isinstance(raw.get("shape"), list) \
                    or not 1 <= len(raw["shape"]) <= 4:
                raise PackageError(f"{where}: expected {{quant, shape, streams}}")
            shape = tuple(_integer(d, f"{where}: shape", 1, 2**31) for d in raw["shape"])
            streams = {k: _check_stream(s, f"{where}: stream '{k[:20]}'", files) for k, s in raw["streams"].items()}
            entry = TensorEntry(name, raw["quant"], shape, streams)
            try:
                expected = {s.name: s for s in stream_specs(entry.quant, entry.shape)}
            except quant.QuantError as e:
                raise PackageError(f"{source}: tensor '{name}': {e}") from None
            for key, s in streams.items():
                spec = expected.pop(key, None)
                if spec is None or (s.dtype, s.shape, s.nbytes) != (spec.dtype, spec.shape, spec.nbytes) \
                        or s.offset % ALIGNMENT:
                    raise PackageError(f"{source}: tensor '{name}': stream '{key}' does not match its {entry.quant}"
                                       f" layout {list(entry.shape)} (or names an unlisted file)")
            if expected:
                raise PackageError(f"{source}: tensor '{name}': streams {sorted(expected)} missing")
            tensors[name] = entry
        missing = [k for k in ("variant", "quant", "config", "tokenizer", "total_bytes") if k not in manifest]
        if missing:
            raise PackageError(f"{source}: malformed manifest: no field '{missing[0]}'")
        for key, typ in (("variant", str), ("quant", str), ("config", dict), ("tokenizer", dict)):
            if not isinstance(manifest[key], typ):
                raise PackageError(f"{source}: field '{key}' must be a{'n object' if typ is dict else ' string'}")
        if manifest.get("synthetic") is not None and not isinstance(manifest["synthetic"], dict):
            raise PackageError(f"{source}: field 'synthetic' must be an object or null")
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
        if isinstance(e, UserError):
            raise
        raise PackageError(f"{source}: malformed manifest ({type(e).__name__}: {e})") from None
    return tensors


def expected_tensors(lm: LMConfig, mimi: MimiConfig) -> dict[str, tuple[tuple[int, ...], set[str]]]:
    """Package tensor -> (logical shape, the quant types a conversion may give it), derived from the configs
    through the converter's name map and precision policy (names.py: the one definition of a package's
    tensors). An official [C_out, C_in, k] conv is a [C_out, k * C_in] matrix, a [1, 1, D] norm a [D] vector, and
    official tensors mapped to one package name are stacked along rows."""
    return dict(_expected_tensors((lm.dim, lm.hidden_scale, lm.num_layers, lm.n_q, lm.card, lm.text_card,
                                   lm.extra_heads_num_heads, lm.extra_heads_dim), mimi))


@functools.lru_cache(maxsize=16)
def _expected_tensors(key: tuple, mimi: MimiConfig) -> dict:
    """expected_tensors for the LMConfig fields the layout depends on (an LMConfig holds dicts: not hashable)."""
    fields = ("dim", "hidden_scale", "num_layers", "n_q", "card", "text_card", "extra_heads_num_heads",
              "extra_heads_dim")
    lm = LMConfig(**dict(zip(fields, key)))
    out = {}
    for layout, name_map, dropped in ((checkpoint.lm_layout(lm), names.LM_NAMES, None),
                                      (checkpoint.mimi_layout(mimi), names.MIMI_NAMES, names.MIMI_DROPPED)):
        for name, sources in names.package_sources(list(layout), name_map, dropped).items():
            shapes = [(layout[n][-1],) if n.endswith(".alpha") else
                      (layout[n][0], layout[n][1] * layout[n][2]) if len(layout[n]) == 3 else layout[n]
                      for n in sources]
            out[name] = (shapes[0][0] if len(shapes) == 1 else sum(s[0] for s in shapes), *shapes[0][1:])
    out[names.SQNORMS] = (mimi.n_q, mimi.bins)
    return {name: (shape, {names.precision(name, shape, c) for c in names.QUANT_CHOICES})
            for name, shape in out.items()}


def _check_config(manifest: dict, tensors: dict[str, TensorEntry], source: str) -> None:
    """The config a package claims must be the one its tensors were made for: every tensor of that config present
    with its shape and a quant type the converter gives it, nothing else; the Mimi config the one this engine
    runs; the derived values recomputed. Else the engine would run meaningless arithmetic without an error."""
    config = manifest["config"]
    if not isinstance(config.get("lm"), dict) or not isinstance(config.get("mimi"), dict):
        raise PackageError(f"{source}: config must hold objects 'lm' and 'mimi'")
    lm = LMConfig.from_official_json(config["lm"], f"{source}: config.lm")
    mimi = MimiConfig.from_manifest(config["mimi"], f"{source}: config.mimi")
    expected = expected_tensors(lm, mimi)
    for name, (shape, quants) in expected.items():
        entry = tensors.get(name)
        if entry is None:
            raise PackageError(f"{source}: tensor '{name}' is missing, but config.lm (dim {lm.dim}, "
                               f"{lm.num_layers} layers, n_q {lm.n_q}) needs it")
        if entry.shape != shape:
            which = f"config.mimi (dimension {mimi.dimension}, {mimi.num_layers} layers, n_q {mimi.n_q})" \
                if name.startswith("mimi.") else f"config.lm (dim {lm.dim}, n_q {lm.n_q}, text_card {lm.text_card})"
            raise PackageError(f"{source}: tensor '{name}' has shape {list(entry.shape)}, but {which} gives "
                               f"{list(shape)}: the config and the tensors disagree; convert the checkpoint again")
        if entry.quant not in quants:
            raise PackageError(f"{source}: tensor '{name}' is {entry.quant}; this engine runs it as "
                               f"{'/'.join(sorted(quants))} only")
    extra = [n for n in tensors if n not in expected]
    if extra:
        raise PackageError(f"{source}: tensor '{extra[0][:100]}' is not part of the model config.lm describes "
                           f"({len(extra)} such tensors)")
    # config.mimi is what from_manifest checked above; the derived values must be recomputed from both configs.
    claimed, derived = json.loads(json.dumps(_derived(lm, mimi))), config.get("derived")
    if derived != claimed:
        diff = sorted(k for k in {**claimed, **(derived if isinstance(derived, dict) else {})}
                      if (derived if isinstance(derived, dict) else {}).get(k) != claimed.get(k))
        raise PackageError(f"{source}: config.derived disagrees with what this kyutai-stt runs for this model "
                           f"(keys {diff[:5]}): the package was edited or made for another model; convert "
                           f"the checkpoint again")
    if manifest["variant"] != ("vad" if lm.has_vad_heads else "plain"):
        raise PackageError(f"{source}: variant {manifest['variant'][:20]!r} disagrees with config.lm "
                           f"(extra_heads_num_heads {lm.extra_heads_num_heads})")


def _check_file(root: Path, entry: dict, tensors: dict[str, TensorEntry], verify_hash: bool) -> None:
    path = root / entry["name"]
    inside = [(t.name, k, s) for t in tensors.values() for k, s in t.streams.items() if s.file == entry["name"]]
    if not path.is_file():
        raise PackageError(f"{path}: missing (it holds {_tensor_list(inside)}): download the package again")
    size = path.stat().st_size
    if size < entry["bytes"]:
        cut = next(((n, k) for n, k, s in inside if s.offset + s.nbytes > size), None)
        at = f"tensor '{cut[0]}' (stream {cut[1]}) runs past the end" if cut else "the header is cut"
        raise PackageError(f"{path}: truncated: {size} bytes, the manifest says {entry['bytes']}; {at}: "
                           "download it again")
    if size != entry["bytes"]:
        raise PackageError(f"{path}: {size} bytes, the manifest says {entry['bytes']}: not this package's file")
    if verify_hash and sha256_file(path) != entry["sha256"]:
        with open(path, "rb") as f:
            bad = [(n, k) for n, k, s in inside if zlib.crc32(_read(f, s.offset, s.nbytes)) != s.crc32]
        where = ", ".join(f"tensor '{n}' (stream {k})" for n, k in bad[:5]) if bad else \
            "outside the tensor data (GGUF header or padding)"
        raise PackageError(f"{path}: SHA-256 mismatch (expected {entry['sha256']}): the file is corrupt, damage in "
                           f"{where}: download it again")


def _read(f, offset: int, nbytes: int) -> bytes:
    f.seek(offset)
    return f.read(nbytes)


def _tensor_list(inside) -> str:
    names = list(dict.fromkeys(n for n, _, _ in inside))
    return "no tensors" if not names else f"tensors '{names[0]}' .. '{names[-1]}'"


_GGUF_TYPES = {"u32": 26, "f16": 1, "f32": 0}     # GGMLQuantizationType of _GGUF_STORAGE: I32, F16, F32


def _check_gguf_headers(root: Path, manifest: dict, tensors: dict[str, TensorEntry]) -> None:
    """Each GGUF file, read by the gguf library, holds exactly what the writer put there for this manifest: its
    metadata (the manifest's config among it), the streams the manifest places in it with their shapes and types,
    and zeros between them. With the file's SHA-256 (verified separately, and optional), no byte goes unchecked."""
    import gguf

    placed = {}
    for t in tensors.values():
        for k, s in t.streams.items():
            placed.setdefault(s.file, {})[f"{t.name}.{k}"] = s
    config = json.dumps(manifest["config"], separators=(",", ":"))
    for index, f in enumerate(manifest["files"]):
        path = root / f["name"]
        try:
            reader = gguf.GGUFReader(path)
            fields = {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")}
            infos = [(str(info.name), int(info.data_offset), int(info.n_bytes), int(info.tensor_type),
                      [int(d) for d in reversed(info.shape)]) for info in reader.tensors]
            header_end = max(fl.offset + sum(p.nbytes for p in fl.parts)
                             for fl in [*reader.fields.values(), *(t.field for t in reader.tensors)])
        except Exception as e:      # noqa: BLE001 - the gguf library on damaged bytes: IndexError, struct, numpy...
            raise PackageError(f"{path}: not a readable GGUF file ({type(e).__name__}: {str(e)[:200]}): the "
                               "file is damaged; download or convert it again") from None
        if fields.get("kyutai_stt.format_version") != FORMAT_VERSION:
            raise PackageError(f"{path}: GGUF key kyutai_stt.format_version is not {FORMAT_VERSION}")
        written = {"general.architecture": GGUF_ARCH, "general.alignment": ALIGNMENT, "kyutai_stt.format": FORMAT,
                   "kyutai_stt.format_version": FORMAT_VERSION, "kyutai_stt.config": config,
                   "kyutai_stt.shard": index, "kyutai_stt.shard_count": len(manifest["files"])}
        if fields != written:
            key = sorted(k for k in {**fields, **written} if fields.get(k) != written.get(k))[0]
            raise PackageError(f"{path}: GGUF metadata '{key[:100]}' is not what the manifest implies: the file was "
                               "edited or belongs to another package; download or convert it again")
        expected = dict(placed.get(f["name"], {}))
        for name, offset, nbytes, kind, shape in infos:
            s = expected.pop(name, None)
            if s is None or (offset, nbytes, kind, shape) != (s.offset, s.nbytes, _GGUF_TYPES[s.dtype], list(s.shape)):
                raise PackageError(f"{path}: GGUF tensor '{name[:100]}' is not where or what the manifest says")
        if expected:
            raise PackageError(f"{path}: GGUF lacks tensor '{next(iter(expected))}' listed in the manifest")
        _check_padding(path, header_end, sorted((o, n) for _, o, n, _, _ in infos))


def _check_padding(path: Path, header_end: int, spans: list[tuple[int, int]]) -> None:
    """The bytes between the header and the first stream, and between streams, are the writer's zero padding."""
    with open(path, "rb") as f:
        at = header_end
        for offset, nbytes in spans:
            if offset < at or _read(f, at, offset - at).strip(b"\0"):
                raise PackageError(f"{path}: bytes {at}..{offset} should be zero padding: the file is damaged; "
                                   "download it again")
            at = offset + nbytes
        if f.seek(0, 2) > at and _read(f, at, f.tell() - at).strip(b"\0"):
            raise PackageError(f"{path}: bytes after the last stream should be zero padding: the file is damaged; "
                               "download it again")
