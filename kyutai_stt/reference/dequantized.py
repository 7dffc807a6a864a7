"""A package's LM weights written back as an official checkpoint, for the official implementation to run.

The validation ladder (docs/validation.md) compares our engine with the official implementation on the *same*
weights. For a q4 package the same weights are its dequantised values, which no official file holds: this module
writes them into the official layout, so that moshi's own loader (tools/make_reference.py) runs on exactly what the
engine runs on.

    write_dequantized_checkpoint(package, source_checkpoint_dir, out_dir)

writes out_dir/model.safetensors with the official tensor names (legacy attention names, as on disk), and copies
config.json, the Mimi file and the tokenizer from the checkpoint the package was converted from, unchanged (the
package's Mimi is not part of this comparison: its encoder is held to the official one separately).

The name map is names.LM_NAMES read backwards, through names.package_sources: applied to the official layout of
the package's config it gives, for each package tensor, the official tensors it was made of in checkpoint order.
That inverse is exact, so no second table exists here: every package tensor is one official tensor except
`vad_heads`, whose rows are the extra_heads.{h}.weight matrices stacked in order, and is split back by rows. The
LM's only value transform is the norm reshape ([1, 1, D] -> [D]), undone by reshaping to the official shape.

Dtype: F32, not the official BF16. A q4 value is an f16 scale times an integer in [-8, 7], up to 14 significant
bits, which bf16 (8 bits) cannot hold; f32 holds it exactly, and moshi's loader casts every floating tensor to the
requested dtype (fp32 in the reference tool) anyway. No torch here: numpy and safetensors_io only.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from kyutai_stt.config import LM_FILE, LMConfig
from kyutai_stt.weights import checkpoint, convert, names, safetensors_io
from kyutai_stt.weights.package import Package, PackageError

DTYPE = "F32"


def official_sources(cfg: LMConfig) -> dict[str, list[tuple[str, tuple[int, ...]]]]:
    """Package LM tensor -> [(official name, official shape)] in checkpoint (= row) order: convert's map inverted."""
    layout = checkpoint.lm_layout(cfg)
    sources = names.package_sources(list(layout), names.LM_NAMES)
    return {package_name: [(n, layout[n]) for n in official] for package_name, official in sources.items()}


def _split(values: np.ndarray, parts: list[tuple[str, tuple[int, ...]]], package_name: str) -> dict[str, np.ndarray]:
    """One dequantised package tensor [rows, ...] -> its official tensors, by rows, reshaped to official shapes."""
    sizes = [int(np.prod(shape)) for _, shape in parts]
    if sum(sizes) != values.size:
        raise PackageError(f"package tensor '{package_name}' {list(values.shape)} does not hold the official "
                           f"tensors {[n for n, _ in parts]} ({sum(sizes)} values)")
    flat, out, start = values.reshape(-1), {}, 0      # row-major: stacked rows = consecutive runs of values
    for (name, shape), size in zip(parts, sizes):
        out[name] = np.ascontiguousarray(flat[start:start + size], dtype=np.float32).reshape(shape)
        start += size
    return out


def write_dequantized_checkpoint(package: Package, source_checkpoint_dir: str | Path,
                                 out_dir: str | Path) -> dict[str, Path]:
    """Write an official-layout checkpoint holding the package's dequantised LM weights (F32); copy config.json,
    the Mimi file (and its config, if named) and the tokenizer from source_checkpoint_dir. Returns the paths (keys
    as synthetic.write_checkpoint: config, lm, mimi, [mimi_config,] tokenizer). config.json is written last,
    atomically."""
    source = Path(source_checkpoint_dir)
    out = Path(out_dir)
    cfg = LMConfig.load(source / convert.CONFIG_FILE)
    if cfg != package.config:
        raise PackageError(f"{package.root}: the package's LM config differs from {source / convert.CONFIG_FILE}: "
                           "it was not converted from this checkpoint")
    sources = official_sources(cfg)
    lm_tensors = [n for n in package.tensor_names() if not n.startswith("mimi.")]
    missing = sorted(set(sources) - set(lm_tensors))
    extra = sorted(set(lm_tensors) - set(sources))
    if missing or extra:
        raise PackageError(f"{package.root}: LM tensors differ from the official layout's "
                           f"(missing {missing[:3]}, unexpected {extra[:3]})")
    owner = {name: package_name for package_name, parts in sources.items() for name, _ in parts}
    specs = [(name, DTYPE, shape) for parts in sources.values() for name, shape in parts]

    cache: dict[str, dict[str, np.ndarray]] = {}      # the last package tensor split (vad_heads: 4 official ones)

    def produce(name: str) -> np.ndarray:
        package_name = owner[name]
        if package_name not in cache:
            cache.clear()
            cache[package_name] = _split(package.dequantize(package_name), sources[package_name], package_name)
        return cache[package_name][name]

    out.mkdir(parents=True, exist_ok=True)
    paths = {"config": out / convert.CONFIG_FILE, "lm": out / LM_FILE, "mimi": out / cfg.mimi_name,
             "tokenizer": out / cfg.tokenizer_name}
    if cfg.mimi_config_name:
        paths["mimi_config"] = out / cfg.mimi_config_name
    safetensors_io.write(paths["lm"], specs, produce)
    for key in set(paths) - {"config", "lm"}:
        shutil.copyfile(source / paths[key].name, paths[key])
    tmp = paths["config"].with_name(paths["config"].name + ".partial")
    shutil.copyfile(source / convert.CONFIG_FILE, tmp)
    os.replace(tmp, paths["config"])
    return paths
