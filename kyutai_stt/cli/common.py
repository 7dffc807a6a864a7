"""What several commands say or check the same way (a module of helpers, not a command)."""
from __future__ import annotations

import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kyutai_stt.errors import UserError
from kyutai_stt.models.variants import KV_RINGS
from kyutai_stt.streaming.audio import AudioInfo, check
from kyutai_stt.streaming.files import READERS
from kyutai_stt.streaming.resample import low_rate_warning


def checked_audio(paths: list[Path]) -> list[AudioInfo]:
    """Every file readable before the model loads (ms per file; FFmpeg works without the GIL, so on READERS
    threads): their AudioInfo in order, a low-rate warning on stderr for each that needs one. The first bad file in
    the given order is the one reported (AudioError)."""
    infos = []
    with ThreadPoolExecutor(READERS) as pool:
        for path, info in zip(paths, pool.map(check, paths)):
            note = low_rate_warning(info.sample_rate)
            if note:
                print(f"warning: {path}: {note}", file=sys.stderr)
            infos.append(info)
    return infos


def synthetic_note(name: str) -> str:
    return (f"NOTE: model {name} is a synthetic package (random weights): its transcript is meaningless; "
            "it only exercises the pipeline.")


def model_info(package_dir, transcriber) -> dict:
    manifest = getattr(getattr(transcriber, "package", None), "manifest", None) or {}
    return {"package": str(package_dir), **{k: manifest[k] for k in ("variant", "quant", "created_by")
                                             if k in manifest}}


def checked_targets(files: list[Path], targets: list[Path]) -> list[Path]:
    """An input is never an output (the transcript would replace the recording), a target is a file or nothing,
    and its folder is writable: all known before the model is loaded, not after the transcription."""
    inputs = {f.resolve(): f for f in files}
    for target in targets:
        same = inputs.get(target.resolve())
        if same is None and target.exists():
            same = next((f for f in files if f.exists() and os.path.samefile(f, target)), None)
        if same is not None:
            raise UserError(f"--output {target} is the input file {same}: writing there would replace it; "
                            "choose another --output")
        if target.exists() and not target.is_file():
            raise UserError(f"--output {target}: exists and is not a file")
    for folder in dict.fromkeys(t.parent for t in targets):
        try:
            fd, probe = tempfile.mkstemp(prefix=".kyutai-stt-probe-", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise UserError(f"--output: cannot write in {folder} ({e.strerror or e}); choose another --output") \
                from None
    return targets


def add_kv_rings_argument(parser) -> None:
    """--kv-rings, for the commands that build plans (models/variants.py KV_RINGS)."""
    parser.add_argument("--kv-rings", default="auto", choices=KV_RINGS,
                        help="what the attention's memory of past steps holds: auto, this device's (f16 on GPUs); "
                             "int8, for many streams at once: the attention reads 56 %% of the bytes, with more "
                             "rounding error (docs/validation.md; needs WGSL's dot4I8Packed)")
