"""`kyutai-stt transcribe FILE...`: audio files to transcripts (text, json, srt, vtt) on this machine's GPU.

Every input is checked first (exists, readable, audio, supported sample rate, at least one sample: audio.check),
so a bad file fails in a second instead of after the model has loaded; NaN samples or damage deep inside a file
are only found when its turn comes (the transcripts of the files before it are kept). Each file is then decoded
in 1 s chunks (streaming/files.py: bounded memory for hours of audio), fed to one Transcriber (reset between
files) and written out with streaming/formats.py. docs/transcribe.md sums it up.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

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
from kyutai_stt.models.lm import MAX_STREAMS
from kyutai_stt.streaming.audio import read_chunks
from kyutai_stt.streaming.batch import BatchTranscriber
from kyutai_stt.streaming.files import CHUNK_S, FILE_READBACK_BATCH, transcribe_file
from kyutai_stt.streaming.formats import EXTENSIONS, FORMATS, render
from kyutai_stt.streaming.prompt import Prompt
from kyutai_stt.streaming.prompt import add_arguments as prompt_arguments
from kyutai_stt.streaming.segments import MIN_SEGMENT_S, segment_count, transcribe_segmented
from kyutai_stt.streaming.transcriber import Transcriber
from kyutai_stt.weights.cache import resolve_model

TTY_REFRESH_S = 0.1          # the progress bar redraws at most this often
PLAIN_INTERVAL_S = 30.0      # without a terminal, one progress line per this many seconds
BAR_WIDTH = 24
DEFAULT_STREAMS = 8          # several files: this many at once by default (tests/test_batch.py: equal transcripts)
# --parallel-segments: segments at once by default (no more than the files' segments of MIN_SEGMENT_S): the more the
# faster on a 10-minute file (BENCHMARKS.md, H100: 7.82, 6.50 and 4.77 s with 8, 16 and 32 at commit 2762a47).
SEGMENT_STREAMS = 64
MAX_MIMI_FRAMES = 64         # --mimi-frames: Mimi's buffers grow with streams x frames

EPILOG = """\
output:
  One FILE: the transcript goes to stdout, or to --output PATH (an existing folder: PATH/<name><ext>).
  Several FILEs: with --output, it is a folder (created if missing) that receives one <name><ext> per input
  (.txt, .json, .srt, .vtt); without it, the transcripts go to stdout one after the other, each preceded by a
  line "==> FILE <==" (text, srt, vtt) or, for json, as one JSON object per line (JSON Lines).
  Files are written atomically (a temporary file, then a rename): never half a transcript.

stderr:
  warnings (low sample rate, damaged packets), a NOTE when the model has random (synthetic) weights, a progress
  bar when stderr is a terminal (otherwise a plain line every 30 s), and at the end one JSON line:
  {"files": N, "audio_s": ..., "wall_s": ..., "rtf": ..., "load_s": ...}; wall_s is the time spent on the files
  (decoding + transcription, model loading excluded: that is load_s), rtf = wall_s / audio_s.
  --quiet drops the progress and the summary; warnings and errors remain.

prompt (experimental, as the official prompting script; the model is very sensitive to the prompt):
  --prompt-text "Loonah" makes the model write that first (a spelling); --prompt-audio loonah.mp3 is fed before
  each file (someone saying it) and its words are left out of the transcript. docs/prompt.md.
"""


# ---- progress -------------------------------------------------------------------------------------------------

def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    """Progress of one file on `stream`: a redrawn bar on a terminal, else a plain line every PLAIN_INTERVAL_S."""

    def __init__(self, stream, name: str, duration_s: float | None, *, tty: bool | None = None,
                 clock=time.perf_counter, enabled: bool = True):
        self.stream, self.name, self.duration_s, self.clock, self.enabled = stream, name, duration_s, clock, enabled
        self.tty = stream.isatty() if tty is None else tty
        self.started = self.last = clock()
        self.drawn = False

    def line(self, done_s: float) -> str:
        elapsed = self.clock() - self.started
        rtf = f"RTF {elapsed / done_s:.2f}" if done_s > 0 else "RTF -"
        if self.duration_s:
            frac = min(1.0, done_s / self.duration_s)
            bar = ("#" * round(frac * BAR_WIDTH)).ljust(BAR_WIDTH, ".") if self.tty else ""
            return (f"{self.name}: {bar + ' ' if bar else ''}{100 * frac:5.1f}% "
                    f"{_clock(done_s)} / {_clock(self.duration_s)} {rtf}")
        return f"{self.name}: {_clock(done_s)} of audio {rtf}"

    def update(self, done_s: float) -> None:
        if not self.enabled:
            return
        now = self.clock()
        if now - self.last < (TTY_REFRESH_S if self.tty else PLAIN_INTERVAL_S):
            return
        self.last = now
        self._write(done_s)

    def _write(self, done_s: float) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + self.line(done_s))
            self.drawn = True
        else:
            self.stream.write(self.line(done_s) + "\n")
        self.stream.flush()

    def abandon(self) -> None:
        """End a half-drawn bar's line, so that an error message starts on a line of its own."""
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False

    def finish(self, done_s: float) -> None:
        if self.enabled and self.tty:
            self._write(done_s)
            self.abandon()


# ---- the command ----------------------------------------------------------------------------------------------

def add_arguments(parser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE",
                        help="audio files (wav, flac, mp3, ogg/opus, m4a/aac, webm, ... any rate 8-384 kHz)")
    parser.add_argument("--model", default=None, metavar="PACKAGE_DIR|URL|HF_ID",
                        help="the model package (default: the real model, downloaded and converted once)")
    parser.add_argument("--format", default="text", choices=FORMATS, help="transcript format (default: text)")
    parser.add_argument("--output", type=Path, default=None, metavar="PATH",
                        help="a file (one input) or a folder (several inputs); default: stdout")
    parser.add_argument("--silence-prefix", type=float, default=None, metavar="S",
                        help="seconds of silence fed before the audio (helps clips that start mid-word; default: "
                             "the model's config, at least 1)")
    parser.add_argument("--quiet", action="store_true", help="no progress and no summary line on stderr")
    parser.add_argument("--parallel-segments", action="store_true",
                        help=f"cut each long file at pauses into segments (one per stream, at least "
                             f"{MIN_SEGMENT_S:g} s) transcribed side by side: far faster on a GPU, but each segment "
                             f"starts without the context before it (docs/transcribe.md); --streams: segments at "
                             f"once (default {SEGMENT_STREAMS})")
    parser.add_argument("--streams", type=int, default=None, metavar="N",
                        help=f"files transcribed at once on the GPU, every weight read once for all of them "
                             f"(default: as many as files, at most {DEFAULT_STREAMS}); the transcripts are the same "
                             f"as one at a time")
    parser.add_argument("--mimi-frames", type=int, default=None, metavar="N",
                        help="frames of each stream the audio encoder takes at a time, ahead of the language model "
                             "(default: this device's; 1: the two together, a frame at a time); the transcripts are "
                             "the same (docs/transcribe.md)")
    add_kv_rings_argument(parser)
    prompt_arguments(parser)


def _targets(files: list[Path], output: Path | None, fmt: str) -> list[Path | None]:
    """Where each transcript goes (None: stdout), checked before any work is done."""
    if output is None:
        return [None] * len(files)
    ext = EXTENSIONS[fmt]
    if len(files) == 1 and not output.is_dir():
        if not output.parent.is_dir():
            raise UserError(f"--output {output}: the folder {output.parent} does not exist")
        return checked_targets(files, [output])
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output}: with several input files, --output must be a folder "
                        "(it receives one transcript per file)")
    targets = [output / (f.stem + ext) for f in files]
    seen: dict[Path, Path] = {}
    for f, t in zip(files, targets):
        if t in seen:
            raise UserError(f"{seen[t]} and {f} would both be written to {t}; rename one, or transcribe them "
                            "separately")
        seen[t] = f
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--output {output}: cannot create the folder ({e.strerror or e})") from None
    return checked_targets(files, targets)


def run(args) -> int:
    if args.silence_prefix is not None and not 0 <= args.silence_prefix <= MAX_SILENCE_PREFIX_S:   # refuses nan
        raise UserError(f"--silence-prefix must be 0 or more seconds (at most {MAX_SILENCE_PREFIX_S:g}), not "
                        f"{args.silence_prefix}")
    infos = checked_audio(args.files)
    targets = _targets(args.files, args.output, args.format)
    prompt = Prompt.load(args.prompt_text, args.prompt_audio)

    if args.streams is not None and not 1 <= args.streams <= MAX_STREAMS:
        raise UserError(f"--streams {args.streams}: from 1 to {MAX_STREAMS}")
    if args.mimi_frames is not None and not 1 <= args.mimi_frames <= MAX_MIMI_FRAMES:
        raise UserError(f"--mimi-frames {args.mimi_frames}: from 1 to {MAX_MIMI_FRAMES}")
    if args.parallel_segments:
        durations = [info.duration_s for info in infos]
        most = sum(segment_count(d, MIN_SEGMENT_S) for d in durations) if None not in durations else SEGMENT_STREAMS
        streams = args.streams or max(1, min(SEGMENT_STREAMS, most))     # a short file: a smaller plan
    else:
        streams = min(args.streams or DEFAULT_STREAMS, len(args.files))

    started = time.perf_counter()
    package_dir = resolve_model(args.model, progress=lambda message: print(message, file=sys.stderr, flush=True))
    if streams > 1 or args.parallel_segments:
        transcriber = BatchTranscriber(package_dir, streams, silence_prefix=args.silence_prefix, prompt=prompt,
                                       mimi_frames=args.mimi_frames, kv_rings=args.kv_rings)
    else:
        transcriber = Transcriber(package_dir, silence_prefix=args.silence_prefix,
                                  readback_batch=FILE_READBACK_BATCH, prompt=prompt, mimi_frames=args.mimi_frames,
                                  kv_rings=args.kv_rings)
    load_s = time.perf_counter() - started
    synthetic = bool(transcriber.synthetic)
    if synthetic:
        print(synthetic_note(args.model or str(package_dir)), file=sys.stderr, flush=True)
    model = model_info(package_dir, transcriber)
    warn = lambda m: print(f"warning: {m}", file=sys.stderr)      # noqa: E731

    several = len(args.files) > 1
    audio_total = wall_total = 0.0

    def emit(i: int, words, eots, audio_s: float) -> bool:
        """Writes file i's transcript; False once stdout's reader has gone."""
        path, info, target = args.files[i], infos[i], targets[i]
        audio = {"path": str(path), "sample_rate": info.sample_rate, "channels": info.channels,
                 "codec": info.codec, "container": info.container, "duration_s": round(audio_s, 3)}
        text = render(args.format, words, eots, model=model, synthetic=synthetic, audio=audio)
        if target is not None:
            write_atomic(target, text)
            return True
        if several and args.format == "json":
            text = json.dumps(json.loads(text), ensure_ascii=False) + "\n"
        elif several:
            text = ("\n" if i else "") + f"==> {path} <==\n" + text
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except BrokenPipeError:          # `... | head`: the reader left; stop quietly, as cat does
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return False
        return True

    def one_file(path: Path, progress: Progress) -> tuple[list, list[float], float]:
        if not args.parallel_segments:
            return transcribe_file(transcriber, path, progress, warn=warn)
        # The whole file in memory (24 kHz float32: 346 MB an hour), then its segments as one batch.
        (t,) = transcribe_segmented(transcriber, [np.concatenate(list(read_chunks(path, CHUNK_S, on_warning=warn)))])
        progress.finish(t.seconds)
        return t.words, t.end_of_turns, t.seconds

    if streams > 1 and not args.parallel_segments:
        audio_total, wall_total, reader_left = _transcribe_batch(transcriber, args, infos, emit, warn)
        if reader_left:
            return 1
    else:
        for i, (path, info) in enumerate(zip(args.files, infos)):
            t0 = time.perf_counter()
            progress = Progress(sys.stderr, path.name, info.duration_s, enabled=not args.quiet)
            try:
                words, eots, audio_s = one_file(path, progress)
            except (UserError, KeyboardInterrupt):
                progress.abandon()
                raise
            if not emit(i, words, eots, audio_s):
                return 1
            audio_total += audio_s
            wall_total += time.perf_counter() - t0
    if not args.quiet:
        print(json.dumps({"files": len(args.files), "audio_s": round(audio_total, 3),
                          "wall_s": round(wall_total, 3),
                          "rtf": round(wall_total / audio_total, 4) if audio_total else None,
                          "load_s": round(load_s, 3), "streams": streams,
                          "mimi_frames": transcriber.mimi_frames}), file=sys.stderr)
    return 0


def _transcribe_batch(batch: BatchTranscriber, args, infos, emit, warn) -> tuple[float, float, bool]:
    """Every file on the batch's streams; transcripts emitted in input order as soon as the files before them are
    done. A file found bad mid-way stops alone: every other transcript is written, then its error is raised (exit
    2). Returns (audio s, wall s, whether stdout's reader left)."""
    started = time.perf_counter()
    total_s = sum(info.duration_s or 0.0 for info in infos)
    progress = Progress(sys.stderr, f"{len(args.files)} files", total_s or None, enabled=not args.quiet)
    finished: dict = {}
    state = {"next": 0, "audio": 0.0, "reader_left": False}

    def on_done(index, transcript) -> None:
        finished[index] = transcript
        state["audio"] += transcript.seconds
        progress.update(state["audio"])
        while state["next"] in finished and not state["reader_left"]:
            t = finished.pop(state["next"])
            if t.error is None:              # a failed file: the others are written, then transcribe raises
                state["reader_left"] = not emit(state["next"], t.words, t.end_of_turns, t.seconds)
            state["next"] += 1

    try:
        batch.transcribe(args.files, warn=warn, on_done=on_done)
    except (UserError, KeyboardInterrupt):
        progress.abandon()
        raise
    progress.finish(state["audio"])
    return state["audio"], time.perf_counter() - started, state["reader_left"]
