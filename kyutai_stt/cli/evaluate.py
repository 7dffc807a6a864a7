"""`kyutai-stt eval DATASET_DIR`: word error rate and real-time factor of a model on a dataset folder
(kyutai_stt/evaluation.py; docs/eval.md documents the layouts, the text normalisation and the report)."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from kyutai_stt.atomic import write_atomic
from kyutai_stt.cli.common import (
    add_kv_rings_argument,
    checked_audio,
    checked_targets,
    model_info,
    synthetic_note,
)
from kyutai_stt.config import MAX_SILENCE_PREFIX_S
from kyutai_stt.errors import UserError
from kyutai_stt.evaluation import TABLE_HEADER, dataset_files, discover, evaluate, summary_line, table_row
from kyutai_stt.models.lm import MAX_STREAMS
from kyutai_stt.streaming.batch import BatchTranscriber
from kyutai_stt.streaming.files import FILE_READBACK_BATCH, transcribe_file
from kyutai_stt.streaming.transcriber import Transcriber
from kyutai_stt.weights.cache import resolve_model


def add_arguments(parser) -> None:
    parser.add_argument("dataset", type=Path, metavar="DATASET_DIR",
                        help="LibriSpeech layout (e.g. LibriSpeech/test-clean) or name.<audio> + name.txt pairs")
    parser.add_argument("--model", default=None,
                        help="model package directory, URL or Hugging Face id (default: the real model)")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N files (by name)")
    parser.add_argument("--output", type=Path, default=None, metavar="REPORT.json",
                        help="also write the full report (per file and summary) as JSON")
    parser.add_argument("--silence-prefix", type=float, default=None, metavar="S",
                        help="seconds of silence fed before each file (default: the model's config, at least 1)")
    parser.add_argument("--batch", type=int, default=1, metavar="N",
                        help="files transcribed at once on the GPU (the same transcripts, far faster on a GPU); "
                             "the rows then come when all files are done, each with the batch's overall RTF")
    add_kv_rings_argument(parser)


def run(args) -> int:
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be at least 1, not {args.limit}")
    if not 1 <= args.batch <= MAX_STREAMS:
        raise UserError(f"--batch {args.batch}: from 1 to {MAX_STREAMS}")
    if args.silence_prefix is not None and not 0 <= args.silence_prefix <= MAX_SILENCE_PREFIX_S:   # refuses nan
        raise UserError(f"--silence-prefix must be 0 or more seconds (at most {MAX_SILENCE_PREFIX_S:g}), not "
                        f"{args.silence_prefix}")
    layout, items = discover(args.dataset)
    if args.limit is not None:
        items = items[:args.limit]
    if args.output is not None and (args.output.is_dir() or not args.output.parent.is_dir()):
        raise UserError(f"--output {args.output}: give a file name in an existing folder, such as report.json")

    if args.output is not None:              # never one of the dataset's files; writable before the model loads
        checked_targets(dataset_files(items), [args.output])

    checked_audio([item.audio for item in items])
    package_dir = resolve_model(args.model, progress=lambda message: print(message, file=sys.stderr, flush=True))
    warn = lambda m: print(f"warning: {m}", file=sys.stderr)      # noqa: E731
    streams = min(args.batch, len(items))
    if streams > 1:
        transcriber = BatchTranscriber(package_dir, streams, silence_prefix=args.silence_prefix,
                                       kv_rings=args.kv_rings)
    else:
        transcriber = Transcriber(package_dir, silence_prefix=args.silence_prefix, readback_batch=FILE_READBACK_BATCH,
                                  kv_rings=args.kv_rings)
    synthetic = bool(transcriber.synthetic)
    model = model_info(package_dir, transcriber)
    if synthetic:
        print(synthetic_note(args.model or str(package_dir)) + " Its WER is meaningless too.", file=sys.stderr)

    def transcribe(path: Path) -> tuple[str, float, float]:
        started = time.perf_counter()
        words, _, audio_s = transcribe_file(transcriber, path, warn=warn)
        return " ".join(w.text for w in words), audio_s, time.perf_counter() - started

    if streams > 1:
        transcribe = _batch_results(transcriber, [item.audio for item in items], warn)

    print(TABLE_HEADER, flush=True)
    report = evaluate(items, transcribe, dataset=str(args.dataset), layout=layout, model=model,
                      synthetic=synthetic, on_result=lambda r: print(table_row(r), flush=True))
    print(summary_line(report), flush=True)
    if args.output is not None:
        write_atomic(args.output, json.dumps(report.to_dict(), ensure_ascii=False, indent=1) + "\n")
    return 0


def _batch_results(batch: BatchTranscriber, paths: list[Path], warn):
    """Every file transcribed on the batch's streams at once; returns evaluate()'s transcribe(path) over the
    results. The wall time is shared out in proportion to each file's audio: the totals (and so the report's RTF)
    are the measured ones; a row's RTF is the batch's."""
    started = time.perf_counter()
    transcripts = batch.transcribe(paths, warn=warn)
    wall_s = time.perf_counter() - started
    audio_s = sum(t.seconds for t in transcripts) or 1.0
    results = {path: (" ".join(w.text for w in t.words), t.seconds, wall_s * t.seconds / audio_s)
               for path, t in zip(paths, transcripts)}
    return results.__getitem__
