"""`kyutai-stt convert SOURCE OUT_DIR`: an official checkpoint -> a model package (weights/convert.py does the work;
format: docs/weights.md). --report prints what the precision policy costs, per tensor and end to end."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from kyutai_stt.reference import fidelity
from kyutai_stt.streaming.audio import read_chunks
from kyutai_stt.weights import hub, package
from kyutai_stt.weights.convert import DEFAULT_SHARD_MB, TensorReport, build, convert
from kyutai_stt.weights.names import Q4_SMALL_NOTE

REPORT_AUDIO = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "speech_en_fr_24k.wav"


def _end_to_end(args) -> str:
    """--report's last line: the policy's effect on Mimi codes and LM tokens (fidelity.py)."""
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
