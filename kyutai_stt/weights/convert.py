"""`kyutai-stt convert SOURCE OUT_DIR`: an official checkpoint -> a model package (format: docs/weights.md).

Three tables decide everything: the name map (official tensor -> package tensor), the value transforms (reshape a
norm, lay a conv out as a matrix, divide a codebook by its usage) and the precision policy (package tensor -> quant
type for each --quant choice). The rest streams tensors one at a time through quant.quantize into package.py's
writer, inside a temporary directory that is renamed to OUT_DIR only when everything is written and checked.
"""
from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kyutai_stt.atomic import SITE_MARKER, new_directory_for, replace_directory
from kyutai_stt.config import LM_FILE, MIMI, LMConfig, MimiConfig
from kyutai_stt.errors import UserError
from kyutai_stt.weights import checkpoint, hub, package, quant, safetensors_io
from kyutai_stt.weights.names import (
    LM_NAMES,
    MIMI_DROPPED,
    MIMI_NAMES,
    QUANT_CHOICES,
    SQNORMS,
    package_sources,
    precision,
)
from kyutai_stt.weights.synthetic import MARKER_FILE
from kyutai_stt.weights.tokenizer import read_sentencepiece

# 64 MiB files: under GitHub Pages' 100 MiB and most CDNs' per-file limits, a small unit of retry/resume, and a
# small transient ArrayBuffer in a browser tab (phones kill tabs past ~1.5 GB); 600 MB -> 10 requests.
DEFAULT_SHARD_MB = 64
CONFIG_FILE = "config.json"


# ---- 3. From the checkpoint's files to package tensors ---------------------------------------------------------
@dataclass(frozen=True)
class Source:
    path: Path
    index: dict[str, safetensors_io.TensorInfo]


def _conv_matrix(w: np.ndarray) -> np.ndarray:
    """[C_out, C_in, k] -> [C_out, k * C_in], column = tap * C_in + c_in (k-major): the input window of a conv
    over a time-major [T, C_in] history is then one contiguous row, and the conv one matrix-vector product."""
    return np.ascontiguousarray(w.transpose(0, 2, 1)).reshape(w.shape[0], -1)


def _official_values(src: Source, name: str) -> np.ndarray:
    """One official tensor in float32 with the package's value transform applied."""
    raw = safetensors_io.load_tensor(src.path, src.index[name])
    x = safetensors_io.bf16_bits_to_f32(raw) if raw.dtype == np.uint16 else np.array(raw, dtype=np.float32)
    if not np.isfinite(x).all():
        raise package.PackageError(f"{src.path}: tensor '{name}' holds NaN or infinite values")
    if name.endswith(".alpha"):
        return x.reshape(-1)
    if name.endswith("._codebook.embedding_sum"):       # moshi: embedding = sum / clamp(usage, min=1e-5)
        usage = _official_values(src, name.replace("embedding_sum", "cluster_usage"))
        return x / np.maximum(usage, 1e-5)[:, None]
    return _conv_matrix(x) if x.ndim == 3 else x


def _logical_shape(official: dict, names: list[str]) -> tuple[int, ...]:
    """The package tensor made of these official tensors (official: name -> shape), as _official_values lays it."""
    shapes = []
    for n in names:
        s = official[n]
        shapes.append((s[-1],) if n.endswith(".alpha") else (s[0], s[1] * s[2]) if len(s) == 3 else s)
    return shapes[0] if len(shapes) == 1 else (sum(s[0] for s in shapes), *shapes[0][1:])


def check_source(src: Source, layout: dict[str, tuple[int, ...]], dtype: str) -> None:
    """The file holds exactly the official layout: names, shapes, dtype. Errors name the file and tensor."""
    for name, shape in layout.items():
        info = src.index.get(name)
        if info is None:
            raise package.PackageError(f"{src.path}: tensor '{name}' is missing (expected {dtype} {list(shape)})")
        if info.shape != shape:
            raise package.PackageError(f"{src.path}: tensor '{name}' has shape {list(info.shape)}, "
                                       f"expected {list(shape)}")
        if info.dtype != dtype:
            raise package.PackageError(f"{src.path}: tensor '{name}' has dtype {info.dtype}, expected {dtype}")
    extra = [n for n in src.index if n not in layout]
    if extra:
        hint = " (does config.json declare the VAD heads, extra_heads_num_heads?)" if "extra_heads" in extra[0] else ""
        raise package.PackageError(f"{src.path}: unexpected tensor '{extra[0]}' (not in the official layout"
                                   f"{hint}; {len(extra)} unexpected in all)")


@dataclass
class Conversion:
    plans: list[package.TensorPlan]
    produce: Callable[[package.TensorPlan], tuple[np.ndarray, dict]]    # -> (source values f32, streams)
    source: Callable[[str], np.ndarray]         # package name -> its source values f32 (transformed, not quantised)


def build(directory: Path, choice: str) -> tuple[LMConfig, MimiConfig, Conversion]:
    """Read and check the checkpoint in `directory`; plan every package tensor (nothing is read yet)."""
    cfg = LMConfig.load(directory / CONFIG_FILE)
    mimi = MimiConfig.load(directory / cfg.mimi_config_name) if cfg.mimi_config_name else MIMI
    files = {"lm": directory / LM_FILE, "mimi": directory / cfg.mimi_name}
    for path in files.values():
        if not path.is_file():
            raise package.PackageError(f"{path}: missing from the checkpoint directory {directory}")
    lm = Source(files["lm"], safetensors_io.read_index(files["lm"]))
    mm = Source(files["mimi"], safetensors_io.read_index(files["mimi"]))
    check_source(lm, checkpoint.lm_layout(cfg), checkpoint.LM_DTYPE)
    check_source(mm, checkpoint.mimi_layout(mimi), checkpoint.MIMI_DTYPE)
    # Layout order, not file order (files sort names alphabetically: layers.10 before layers.2).
    groups = [(lm, package_sources(list(checkpoint.lm_layout(cfg)), LM_NAMES)),
              (mm, package_sources(list(checkpoint.mimi_layout(mimi)), MIMI_NAMES, MIMI_DROPPED))]
    recipe = {}
    for src, mapping in groups:
        for name, sources in mapping.items():
            shape = _logical_shape({n: src.index[n].shape for n in sources}, sources)
            recipe[name] = (src, sources, package.TensorPlan(name, precision(name, shape, choice), shape))
    sq_plan = package.TensorPlan(SQNORMS, precision(SQNORMS, (mimi.n_q, mimi.bins), choice), (mimi.n_q, mimi.bins))

    lock, cache = threading.Lock(), {}

    def codebooks():                     # shared by mimi.codebooks and the squared norms derived from them
        with lock:                       # the two are produced on two threads at once
            if not cache:
                cache["books"] = _produce_tensor(*recipe["mimi.codebooks"])
            return cache["books"]

    def produce(plan: package.TensorPlan):
        if plan.name == "mimi.codebooks":
            return codebooks()
        if plan.name == SQNORMS:
            books = quant.dequantize(codebooks()[1], recipe["mimi.codebooks"][2].quant,
                                     recipe["mimi.codebooks"][2].shape)
            values = np.einsum("nd,nd->n", books, books).reshape(plan.shape)
            return values, quant.quantize(values, plan.quant)
        return _produce_tensor(*recipe[plan.name])

    def source(name: str) -> np.ndarray:
        if name == SQNORMS:                                  # of the source codebooks, for an f32 reference
            books = source("mimi.codebooks")
            return np.einsum("nd,nd->n", books, books).reshape(sq_plan.shape)
        return _source_values(*recipe[name])

    plans = [r[2] for r in recipe.values()] + [sq_plan]
    return cfg, mimi, Conversion(plans, produce, source)


def layout_plans(lm: LMConfig, mimi: MimiConfig, choice: str) -> list[package.TensorPlan]:
    """Every package tensor of a checkpoint with these configs, planned from the official layout alone (nothing
    is read): a package's size, and its plan's buffers, before the (5 GB) checkpoint exists."""
    plans = []
    for layout, name_map, dropped in ((checkpoint.lm_layout(lm), LM_NAMES, None),
                                      (checkpoint.mimi_layout(mimi), MIMI_NAMES, MIMI_DROPPED)):
        for name, sources in package_sources(list(layout), name_map, dropped).items():
            shape = _logical_shape(layout, sources)
            plans.append(package.TensorPlan(name, precision(name, shape, choice), shape))
    shape = (mimi.n_q, mimi.bins)
    return plans + [package.TensorPlan(SQNORMS, precision(SQNORMS, shape, choice), shape)]


def _source_values(src: Source, sources: list[str], plan: package.TensorPlan) -> np.ndarray:
    parts = [_official_values(src, n) for n in sources]
    values = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
    assert values.shape == plan.shape, (plan.name, values.shape, plan.shape)
    return values


def _produce_tensor(src: Source, sources: list[str], plan: package.TensorPlan):
    values = _source_values(src, sources, plan)
    try:
        return values, quant.quantize(values, plan.quant)
    except quant.QuantError as e:
        raise quant.QuantError(f"{src.path}: tensor '{plan.name}' as {plan.quant}: {e}") from None


# ---- 4. Converting: temporary directory, prefetching producer, report ------------------------------------------
@dataclass
class TensorReport:
    name: str
    quant: str
    shape: tuple[int, ...]
    nbytes: int
    rel_rms: float            # |dequantised - source| / |source| over the whole tensor (source = bf16 or fp32)
    rel_rms_absmax: float     # the same with absmax block scales (q4/q8; = rel_rms otherwise): what lsq gained
    inexact: int              # values not stored exactly (dequantised != source): the f16 package's count


def _error(streams: dict, plan: package.TensorPlan, values: np.ndarray) -> tuple[float, int]:
    """(relative RMS error, count of values not stored exactly) of a tensor's streams against its source."""
    error = quant.dequantize(streams, plan.quant, plan.shape) - values
    norm = float(np.sqrt(np.sum(np.square(values, dtype=np.float64))))
    rel = float(np.sqrt(np.sum(np.square(error, dtype=np.float64)))) / norm if norm else 0.0
    return rel, int(np.count_nonzero(error))


class _Prefetcher:
    """Produces the next tensors on two worker threads while the current one is written (numpy releases the GIL
    in its loops): ~1.7x on two cores, with at most three tensors in memory."""
    AHEAD = 2

    def __init__(self, conversion: Conversion, report: list[TensorReport] | None):
        self.plans, self.conversion, self.report = conversion.plans, conversion, report
        self.pool = ThreadPoolExecutor(max_workers=self.AHEAD)
        self.pending: dict[str, object] = {}

    def _work(self, plan: package.TensorPlan):
        values, streams = self.conversion.produce(plan)
        if self.report is not None:
            rel, inexact = _error(streams, plan, values)
            absmax = _error(quant.quantize(values, plan.quant, "absmax"), plan, values)[0] \
                if plan.quant in ("q4", "q8") else rel
            self.report.append(TensorReport(plan.name, plan.quant, plan.shape, plan.nbytes, rel, absmax, inexact))
        return streams

    def __call__(self, plan: package.TensorPlan) -> dict:
        index = self.plans.index(plan)
        for following in self.plans[index:index + self.AHEAD]:
            if following.name not in self.pending:
                self.pending[following.name] = self.pool.submit(self._work, following)
        return self.pending.pop(plan.name).result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def convert(source: str | Path, out_dir: str | Path, choice: str = "q4", shard_mb: int | None = None,
            force: bool = False, report: list[TensorReport] | None = None, on_file=None) -> dict:
    """Convert SOURCE (checkpoint directory or Hugging Face repo id) into the package OUT_DIR; return its manifest.
    Pass a list as `report` to receive one TensorReport per tensor; on_file(name, bytes) reports progress."""
    if choice not in QUANT_CHOICES:
        raise quant.QuantError(f"unknown quant type {choice!r}: choose one of {', '.join(QUANT_CHOICES)}")
    if shard_mb is not None and shard_mb < 1:
        raise UserError(f"--shard-mb must be at least 1, got {shard_mb}")
    out = Path(out_dir).resolve()
    local = Path(source).expanduser()
    if local.is_dir():
        _check_not_source(out, local)
    _check_output(out, force)
    directory = hub.checkpoint_dir(str(source))
    _check_not_source(out, directory)
    cfg, mimi, conversion = build(directory, choice)
    tokenizer = read_sentencepiece(directory / cfg.tokenizer_name)
    if len(tokenizer) != cfg.text_card:
        raise package.PackageError(f"{directory / cfg.tokenizer_name}: {len(tokenizer)} pieces, but config.json "
                                   f"says text_card {cfg.text_card}")
    marker = directory / MARKER_FILE
    meta = {"variant": "vad" if cfg.has_vad_heads else "plain", "quant": choice,
            "config": package.config_json(cfg, mimi), "tokenizer": tokenizer.to_manifest(),
            "synthetic": _synthetic_marker(marker) if marker.is_file() else None}
    try:
        tmp = new_directory_for(out)
        tmp.chmod(0o777 & ~_umask())             # mkdtemp's 0700 would hide the package from a web server
    except OSError as e:
        raise UserError(f"{out}: cannot write there ({e.strerror or e}); choose a writable OUT_DIR") from None
    producer = _Prefetcher(conversion, report)
    try:
        manifest = package.write_package(tmp, conversion.plans, producer, meta, _shard_bytes(shard_mb, conversion),
                                         on_file)
        package.open_package(tmp, verify_hashes=False)          # sizes, offsets and GGUF headers agree
        replace_directory(tmp, out)
    except OSError as e:                         # a full disk, a folder made read-only meanwhile
        raise UserError(f"{out}: writing the package failed ({e.strerror or e}); nothing was left behind: free "
                        "some space or choose another OUT_DIR") from None
    finally:
        producer.close()
        shutil.rmtree(tmp, ignore_errors=True)
    if report is not None:                       # rows arrive in completion order from two threads
        order = {p.name: i for i, p in enumerate(conversion.plans)}
        report.sort(key=lambda r: order[r.name])
    return manifest


def _check_not_source(out: Path, directory: Path) -> None:
    directory = directory.resolve()
    if out == directory or out in directory.parents:
        raise UserError(f"{out}: OUT_DIR would replace the checkpoint {directory} (it is the checkpoint or a "
                        "folder holding it): choose another OUT_DIR")


def _check_output(out: Path, force: bool) -> None:
    """OUT_DIR may be new or an empty directory; with --force also one of our packages or site exports (its
    manifest or marker says so). Anything else is the user's, and is never replaced."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory; choose another OUT_DIR")
    try:
        if not any(out.iterdir()):
            return
    except OSError as e:
        raise UserError(f"{out}: cannot read it ({e.strerror or e})") from None
    if not force:
        raise UserError(f"{out}: already exists; choose another OUT_DIR or pass --force to replace it")
    if not _is_ours(out):
        raise UserError(f"{out}: --force replaces only an empty directory, a kyutai-stt package or a site export, "
                        "and this is neither: choose another OUT_DIR (nothing was changed)")


def _is_ours(directory: Path) -> bool:
    if (directory / SITE_MARKER).is_file():
        return True
    try:
        manifest = json.loads(package.read_manifest(directory / package.MANIFEST))
    except (UserError, ValueError, RecursionError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == package.FORMAT


def _synthetic_marker(path: Path) -> dict:
    """The checkpoint's SYNTHETIC.json (synthetic.py writes it): an object, copied into the manifest."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise UserError(f"{path}: not valid JSON ({str(e)[:200]}): fix or delete it (it only marks a synthetic "
                        "checkpoint)") from None
    if not isinstance(value, dict):
        raise UserError(f"{path}: expected a JSON object; fix or delete it (it only marks a synthetic checkpoint)")
    return value


def _shard_bytes(shard_mb: int | None, conversion: Conversion) -> int:
    """--shard-mb, or by default 64 MiB raised to whole MiB that fit the largest tensor and a header (only the f16
    package needs more: its f32 codebooks are 64 MiB alone)."""
    if shard_mb is not None:
        return shard_mb * 2**20
    largest = max(p.nbytes for p in conversion.plans)
    return max(DEFAULT_SHARD_MB, -(-largest // 2**20) + 1) * 2**20


def _umask() -> int:
    mask = os.umask(0o22)
    os.umask(mask)
    return mask
