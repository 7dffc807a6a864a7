"""`kyutai-stt convert SOURCE OUT_DIR`: an official checkpoint -> a model package (format: docs/weights.md).

Three tables decide everything: the name map (official tensor -> package tensor), the value transforms (reshape a
norm, lay a conv out as a matrix, divide a codebook by its usage) and the precision policy (package tensor -> quant
type for each --quant choice). The rest streams tensors one at a time through quant.quantize into package.py's
writer, inside a temporary directory that is renamed to OUT_DIR only when everything is written and checked.
"""
from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import checkpoint, hub, package, quant, safetensors_io
from .atomic import new_directory_for, replace_directory
from .config import LM_FILE, MIMI, LMConfig, MimiConfig
from .errors import UserError
from .synthetic import MARKER_FILE
from .tokenizer import read_sentencepiece

# 64 MiB files: under GitHub Pages' 100 MiB and most CDNs' per-file limits, a small unit of retry/resume, and a
# small transient ArrayBuffer in a browser tab (phones kill tabs past ~1.5 GB); 600 MB -> 10 requests.
DEFAULT_SHARD_MB = 64
CONFIG_FILE = "config.json"
REPORT_AUDIO = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "speech_en_fr_24k.wav"

# ---- 1. The name map: official name ({} = an index) -> package name --------------------------------------------
# Several official tensors mapping to one package name without {} are stacked along rows in checkpoint order.
LM_NAMES = {
    "text_emb.weight": "text_emb",                                              # [8001, D], row 8000 = start
    "emb.{}.weight": "audio_emb.{}",                                            # [2049, D], row 2048 = start
    "transformer.layers.{}.norm1.alpha": "layers.{}.attn_norm",                 # [1, 1, D] -> [D]
    "transformer.layers.{}.self_attn.in_proj_weight": "layers.{}.attn_qkv",     # [3D, D]: q, k, v rows
    "transformer.layers.{}.self_attn.out_proj.weight": "layers.{}.attn_out",    # [D, D]
    "transformer.layers.{}.norm2.alpha": "layers.{}.ffn_norm",                  # [1, 1, D] -> [D]
    "transformer.layers.{}.gating.linear_in.weight": "layers.{}.ffn_in",        # [2F, D]: gate rows, then up rows
    "transformer.layers.{}.gating.linear_out.weight": "layers.{}.ffn_out",      # [D, F]
    "out_norm.alpha": "out_norm",                                               # [1, 1, D] -> [D]
    "text_linear.weight": "text_head",                                          # [8000, D]
    "extra_heads.{}.weight": "vad_heads",                                       # 4 x [6, D] -> [24, D]
}
_SEANET = "encoder.model.{}.conv.conv.{}"
_BLOCK = "encoder.model.{}.block.{}.conv.conv.{}"
_MIMI_LAYER = "encoder_transformer.transformer.layers.{}."
_RVQ = "quantizer.rvq_{}.vq.layers.{{}}._codebook.embedding_sum"
# SEANet convs become [C_out, k * C_in] matrices (see _conv_matrix); stage s runs at stride 4, 5, 6, 8.
MIMI_NAMES = {
    _SEANET.format(0, "weight"): "mimi.conv_in", _SEANET.format(0, "bias"): "mimi.conv_in.bias",
    **{name: package
       for s, index in enumerate((1, 4, 7, 10))
       for name, package in (
           (_BLOCK.format(index, 1, "weight"), f"mimi.blocks.{s}.res_conv1"),        # C -> C/2, k 3
           (_BLOCK.format(index, 1, "bias"), f"mimi.blocks.{s}.res_conv1.bias"),
           (_BLOCK.format(index, 3, "weight"), f"mimi.blocks.{s}.res_conv2"),        # C/2 -> C, k 1
           (_BLOCK.format(index, 3, "bias"), f"mimi.blocks.{s}.res_conv2.bias"),
           (_SEANET.format(index + 2, "weight"), f"mimi.blocks.{s}.down"),           # C -> 2C, k 2r, stride r
           (_SEANET.format(index + 2, "bias"), f"mimi.blocks.{s}.down.bias"))},
    _SEANET.format(14, "weight"): "mimi.conv_out", _SEANET.format(14, "bias"): "mimi.conv_out.bias",
    _MIMI_LAYER + "norm1.weight": "mimi.layers.{}.attn_norm",                  # LayerNorm [512]
    _MIMI_LAYER + "norm1.bias": "mimi.layers.{}.attn_norm.bias",
    _MIMI_LAYER + "self_attn.in_proj_weight": "mimi.layers.{}.attn_qkv",       # [1536, 512]
    _MIMI_LAYER + "self_attn.out_proj.weight": "mimi.layers.{}.attn_out",      # [512, 512]
    _MIMI_LAYER + "layer_scale_1.scale": "mimi.layers.{}.attn_scale",          # [512]
    _MIMI_LAYER + "norm2.weight": "mimi.layers.{}.ffn_norm",
    _MIMI_LAYER + "norm2.bias": "mimi.layers.{}.ffn_norm.bias",
    _MIMI_LAYER + "linear1.weight": "mimi.layers.{}.ffn_in",                   # [2048, 512]
    _MIMI_LAYER + "linear2.weight": "mimi.layers.{}.ffn_out",                  # [512, 2048]
    _MIMI_LAYER + "layer_scale_2.scale": "mimi.layers.{}.ffn_scale",
    "downsample.conv.conv.conv.weight": "mimi.downsample",                     # [512, 4 * 512], stride 2
    "quantizer.rvq_first.input_proj.weight": "mimi.rvq_in",                    # rows 0..255: semantic
    "quantizer.rvq_rest.input_proj.weight": "mimi.rvq_in",                     # rows 256..511: acoustic
    _RVQ.format("first"): "mimi.codebooks",                                    # level 0: rows 0..2047
    _RVQ.format("rest"): "mimi.codebooks",                                     # level 1 + i: rows 2048 (1 + i)..
}
# Derived: per codebook entry |c|^2 of the codebook as stored (after quantisation), for argmin |x|^2 - 2 x.c + |c|^2.
SQNORMS = "mimi.codebook_sqnorms"                                              # [32, 2048] f32
# Official Mimi tensors the package leaves out: the decode path, and codebook bookkeeping (usage is folded in).
MIMI_DROPPED = re.compile(r"^(decoder\.|decoder_transformer\.|upsample\.|quantizer\.rvq_\w+\.output_proj\.)"
                          r"|\._codebook\.(_initialized|cluster_usage)$")

# ---- 2. The precision policy: first matching pattern wins; columns = --quant q4, q4-small, q8, f16 ------------
# Sizes and measured errors: docs/weights.md. The Mimi encoder is kept in f16 by q4 (the default) and q8: every code
# it gets wrong is a wrong input token of the LM (q4-small: 23.6 % of codes equal the f32 encoder's, f16: 98.6 %,
# docs/mimi.md). f16 is the exact package: Mimi in f32 as in the checkpoint, the LM's bf16 values in f16 (exact
# but for the few below f16's normal range, which `--report` counts). A q4/q8 choice for a matrix whose K is not a
# multiple of 64 falls back to f32 (mimi.blocks.0.res_conv2 [64, 32]). f32 tensors are all small (vectors, the VAD
# heads, mimi.conv_in: <= 0.27 MB each).
PRECISION = (
    (("layers.*.attn_norm", "layers.*.ffn_norm", "out_norm"), ("f32", "f32", "f32", "f32")),    # RMSNorm scales
    (("vad_heads",), ("f32", "f32", "f32", "f32")),              # 24 rows (0.2 MB): end-of-turn probabilities
    (("text_emb", "audio_emb.*", "layers.*", "text_head"), ("q4", "q4", "q8", "f16")),
    (("mimi.conv_in", "mimi.*.bias", "mimi.layers.*_norm", "mimi.layers.*_scale", SQNORMS),
     ("f32", "f32", "f32", "f32")),
    (("mimi.codebooks",), ("f16", "q8", "f16", "f32")),          # argmin flips on small errors
    (("mimi.blocks.0.*", "mimi.blocks.1.*", "mimi.downsample", "mimi.rvq_in"), ("f16", "q8", "f16", "f32")),
    (("mimi.*",), ("f16", "q4", "f16", "f32")),                  # transformer, SEANet stages 2-3, conv_out
)
QUANT_CHOICES = ("q4", "q4-small", "q8", "f16")
# What q4-small costs, printed when it is chosen (`python benchmarks/mimi.py --precision`, synthetic seed-0 Mimi,
# fixture audio, 150 frames; `--report` measures it on the checkpoint being converted).
Q4_SMALL_NOTE = ("q4-small keeps the Mimi encoder in q4/q8 (41.1 MB instead of 112.1 MB in f16): measured on the "
                 "synthetic seed-0 Mimi over the fixture audio, 23.6 % of its codes equal the f32 encoder's (72.7 % "
                 "of level 0), against 98.6 % (100 %) for the default q4 policy's f16 encoder; every differing code "
                 "is a different input token for the LM")


def precision(name: str, shape: tuple[int, ...], choice: str) -> str:
    if choice not in QUANT_CHOICES:
        raise quant.QuantError(f"unknown quant type {choice!r}: choose one of {', '.join(QUANT_CHOICES)}")
    for patterns, quants in PRECISION:
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            chosen = quants[QUANT_CHOICES.index(choice)]
            if chosen in ("q4", "q8") and (len(shape) != 2 or shape[1] % (2 * quant.BLOCK)):
                return "f32"
            return chosen
    raise AssertionError(f"no precision rule for package tensor '{name}'")


# ---- 3. From the checkpoint's files to package tensors ---------------------------------------------------------
@dataclass(frozen=True)
class Source:
    path: Path
    index: dict[str, safetensors_io.TensorInfo]


def _compile(names: dict[str, str]) -> list[tuple[re.Pattern, str]]:
    return [(re.compile("^" + re.escape(k).replace(r"\{\}", r"(\d+)") + "$"), v) for k, v in names.items()]


def package_sources(official: list[str], names: dict[str, str], dropped=None) -> dict[str, list[str]]:
    """Package name -> the official names it is made of, in checkpoint order. Every official name is mapped or
    dropped: a tensor the map does not know is a bug in the map, not silently lost."""
    rules, out = _compile(names), {}
    for name in official:
        if dropped is not None and dropped.search(name):
            continue
        for pattern, target in rules:
            m = pattern.match(name)
            if m:
                out.setdefault(target.format(*m.groups()) if "{}" in target else target, []).append(name)
                break
        else:
            raise AssertionError(f"official tensor '{name}' is neither mapped nor dropped")
    return out


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


def _logical_shape(src: Source, names: list[str]) -> tuple[int, ...]:
    shapes = []
    for n in names:
        s = src.index[n].shape
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
    mimi = MIMI
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
            shape = _logical_shape(src, sources)
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
    from .webapp import MARKER
    if (directory / MARKER).is_file():
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


def _end_to_end(args) -> str:
    """--report's last line: the policy's effect on Mimi codes and LM tokens (fidelity.py)."""
    from . import fidelity
    from .audio import read_chunks
    if args.report_frames <= 0 or args.report_steps <= 0:
        return "end to end: not measured (--report-frames or --report-steps is 0)"
    audio = Path(args.report_audio)
    if not audio.is_file():
        return f"end to end: skipped ({audio} not found: pass --report-audio FILE)"
    pcm = np.concatenate(list(read_chunks(audio)))
    _, _, conversion = build(hub.checkpoint_dir(str(args.source)), args.quant)
    effect = fidelity.measure(package.open_package(args.out_dir, verify_hashes=False), conversion.source, pcm,
                              args.report_frames, args.report_steps)
    return effect.describe(args.quant) + f" ({audio.name})"


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


def format_report(rows: list[TensorReport]) -> str:
    """Per tensor: type, bytes, relative RMS error with absmax block scales and as stored (least squares), values
    not stored exactly; per group: the worst error; the LM values the policy does not store exactly."""
    lines = [f"{'tensor':<34} {'quant':>5} {'shape':>16} {'bytes':>12} {'rel. RMS absmax':>15} "
             f"{'rel. RMS stored':>15} {'inexact':>10}"]
    for r in rows:
        lines.append(f"{r.name:<34} {r.quant:>5} {'x'.join(map(str, r.shape)):>16} {r.nbytes:>12,} "
                     f"{r.rel_rms_absmax:>15.2e} {r.rel_rms:>15.2e} {r.inexact:>10,}")
    groups: dict[str, list[TensorReport]] = {}
    for r in rows:
        groups.setdefault(_group(r.name), []).append(r)
    lines.append("")
    for group, members in groups.items():
        worst = max(members, key=lambda r: r.rel_rms)
        quants = "/".join(sorted({r.quant for r in members}))
        lines.append(f"{group:<22} {quants:>9} {sum(r.nbytes for r in members) / 1e6:>9.2f} MB   "
                     f"worst {worst.rel_rms:.2e} ({worst.name}; absmax scales {worst.rel_rms_absmax:.2e})")
    lines.append(f"{'total':<22} {'':>9} {sum(r.nbytes for r in rows) / 1e6:>9.2f} MB (tensor data)")
    for part, members in (("LM", [r for r in rows if not r.name.startswith("mimi.")]),
                          ("Mimi", [r for r in rows if r.name.startswith("mimi.")])):
        values = sum(int(np.prod(r.shape)) for r in members)
        lines.append(f"{part} values not stored exactly: {sum(r.inexact for r in members):,} of {values:,}")
    return "\n".join(lines)


def _group(name: str) -> str:
    if name.startswith("mimi."):
        part = name.split(".")[1]
        return {"conv_in": "mimi.seanet", "blocks": "mimi.seanet", "conv_out": "mimi.seanet",
                "layers": "mimi.transformer"}.get(part, "mimi." + part.replace("codebook_sqnorms", "codebooks"))
    if name.startswith("layers."):
        return "lm.norms" if name.endswith("_norm") else "lm.layers"
    return {"text_emb": "lm.embeddings", "out_norm": "lm.norms", "text_head": "lm.text_head",
            "vad_heads": "lm.vad_heads"}.get(name, "lm.embeddings" if name.startswith("audio_emb") else name)


# ---- 5. The command line ---------------------------------------------------------------------------------------
def add_arguments(parser) -> None:
    parser.add_argument("source", nargs="?", default=hub.DEFAULT_REPO, metavar="SOURCE",
                        help=f"a checkpoint directory in the official layout, or a Hugging Face repo id "
                             f"(default {hub.DEFAULT_REPO})")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="the package directory to write")
    parser.add_argument("--quant", default="q4",
                        help="precision policy: q4 (default: LM q4, Mimi encoder f16, <= 680 MB), q4-small (Mimi "
                             "q4/q8 too, ~600 MB, less accurate codes), q8, or f16 (the exact package: LM f16, "
                             "Mimi f32); docs/weights.md lists each tensor's type")
    parser.add_argument("--shard-mb", type=int, default=None,
                        help=f"largest GGUF file in MiB (default {DEFAULT_SHARD_MB}, or what the largest tensor "
                             f"needs: 65 for the f16 package's f32 codebooks)")
    parser.add_argument("--report", action="store_true",
                        help="print each tensor's type, bytes and relative RMS error against the source (with "
                             "absmax and with least-squares block scales), then the policy's end-to-end effect: "
                             "Mimi codes and LM tokens vs the source weights in f32, on --report-audio")
    parser.add_argument("--report-audio", type=Path, default=REPORT_AUDIO, metavar="FILE",
                        help="audio for the end-to-end part of --report (default: the test fixture "
                             "tests/fixtures/speech_en_fr_24k.wav of a source checkout)")
    parser.add_argument("--report-frames", type=int, default=150, metavar="N",
                        help="Mimi frames (80 ms each) of --report's end-to-end part (default 150; 0 skips that part)")
    parser.add_argument("--report-steps", type=int, default=12, metavar="N",
                        help="LM steps of --report's end-to-end part (default 12; seconds each at full size)")
    parser.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists")


def run(args) -> int:
    started = time.perf_counter()
    rows: list[TensorReport] | None = [] if args.report else None
    def progress(name: str, size: int) -> None:
        print(f"  {name}  {size / 1e6:.1f} MB", file=sys.stderr)
    if args.quant == "q4-small":
        print(Q4_SMALL_NOTE, file=sys.stderr)
    manifest = convert(args.source, args.out_dir, args.quant, args.shard_mb, args.force, rows, progress)
    if rows is not None:
        print(format_report(rows))
        print(_end_to_end(args))
    print(f"wrote {args.out_dir}: {len(manifest['files'])} files, {manifest['total_bytes'] / 1e6:.1f} MB, "
          f"{manifest['quant']}, variant {manifest['variant']}, {len(manifest['tensors'])} tensors "
          f"({time.perf_counter() - started:.1f} s)", file=sys.stderr)
    return 0
