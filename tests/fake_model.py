"""A stand-in for the Transcriber and resolve_model, so the transcribe, eval and mic commands can be tested on their
own (the real model is exercised by the tests marked `real_model`).

The fake follows the Transcriber contract and "hears" the audio: for each full second it is fed it emits one Word
named after that second's dominant frequency rounded to 10 Hz ("440hz"), so the words prove that the decoded,
resampled audio reached it intact; flush() emits the remainder (if >= 0.1 s) and an end of turn.
"""
from __future__ import annotations

import types
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from audio_helpers import peak_hz

from kyutai_stt.cli import evaluate as evaluate_command
from kyutai_stt.cli import mic as mic_command
from kyutai_stt.cli import transcribe as transcribe_command
from kyutai_stt.errors import UserError
from kyutai_stt.streaming.audio import AudioError, read_chunks
from kyutai_stt.streaming.batch import Transcript
from kyutai_stt.streaming.files import take_events

RATE = 24000


class _Event:
    kind = ""

    @property
    def type(self) -> str:          # as the decoder's events
        return self.kind

    def to_dict(self) -> dict:
        return {"type": self.kind, **{k: v for k, v in vars(self).items()}}


@dataclass
class Word(_Event):                 # a dataclass, as the decoder's (segments.stitch moves its times by replace)
    kind: ClassVar[str] = "word"
    text: str
    start: float
    end: float


class EndOfTurn(_Event):
    kind = "endOfTurn"

    def __init__(self, time, probability):
        self.time, self.probability = time, probability


class Step(_Event):
    kind = "step"

    def __init__(self, frame):
        self.frame = frame


class FakeTranscriber:
    synthetic = True
    instances: list[FakeTranscriber] = []

    def __init__(self, package_dir, *, silence_prefix: float | None = None, readback_batch: int = 0, prompt=None,
                 mimi_frames: int | None = None, kv_rings: str = "auto"):
        self.package_dir, self.silence_prefix, self.prompt = Path(package_dir), silence_prefix, prompt
        self.kv_rings = kv_rings
        self.readback_batch = readback_batch
        self.mimi_frames = (4 if readback_batch > 1 else 1) if mimi_frames is None else mimi_frames
        self.package = types.SimpleNamespace(manifest={"variant": "fake", "quant": "q4", "created_by": "tests"})
        self.resets = 0
        self.fed_seconds: list[float] = []
        FakeTranscriber.instances.append(self)
        self.reset()

    def reset(self) -> None:
        self.buf, self.t = np.zeros(0, np.float32), 0.0
        self.resets += 1

    def _word(self, x: np.ndarray) -> Word:
        hz = int(round(peak_hz(x, RATE) / 10) * 10)
        word = Word(f"{hz}hz", self.t, self.t + 0.8 * len(x) / RATE)
        self.t += len(x) / RATE
        return word

    def feed(self, pcm, sample_rate):
        assert sample_rate == RATE, sample_rate
        assert pcm.dtype == np.float32 and pcm.ndim == 1, (pcm.dtype, pcm.shape)
        self.fed_seconds.append(len(pcm) / RATE)
        self.buf = np.concatenate([self.buf, pcm])
        out = [Step(len(self.fed_seconds))]
        while len(self.buf) >= RATE:
            out.append(self._word(self.buf[:RATE]))
            self.buf = self.buf[RATE:]
        return out

    def flush(self):
        out = [self._word(self.buf)] if len(self.buf) >= RATE // 10 else []
        self.buf = np.zeros(0, np.float32)
        return out + [EndOfTurn(self.t + 0.5, 0.9)]


class FakeBatchTranscriber:
    """BatchTranscriber's contract on the fake: every source through one FakeTranscriber (reset between them), the
    transcripts handed to on_done shortest first, as streams running side by side finish, and returned in input
    order."""
    synthetic = True
    instances: list[FakeBatchTranscriber] = []

    def __init__(self, package_dir, streams: int = 4, *, silence_prefix: float | None = None, prompt=None,
                 mimi_frames: int | None = None, kv_rings: str = "auto"):
        self.streams, self.mimi_frames = streams, 4 if mimi_frames is None else mimi_frames
        self.transcriber = FakeTranscriber(package_dir, silence_prefix=silence_prefix, prompt=prompt,
                                           kv_rings=kv_rings)
        self.package = self.transcriber.package
        FakeBatchTranscriber.instances.append(self)

    def transcribe(self, sources, warn=None, on_done=None, raise_errors=True):
        results = []
        for source in sources:
            self.transcriber.reset()
            words, eots, samples = [], [], 0
            chunks = ([source[i:i + RATE] for i in range(0, source.size, RATE)] if isinstance(source, np.ndarray)
                      else read_chunks(Path(source), 1.0, on_warning=warn))
            try:
                for chunk in chunks:
                    samples += chunk.size
                    take_events(self.transcriber.feed(chunk, RATE), words, eots)
            except AudioError as error:             # this file alone stops; raised once all are done
                results.append(Transcript(seconds=samples / RATE, error=error))
                continue
            take_events(self.transcriber.flush(), words, eots)
            results.append(Transcript(words, eots, samples / RATE))
        for index in sorted(range(len(results)), key=lambda i: results[i].seconds):
            if on_done:
                on_done(index, results[index])
        errors = [t.error for t in results if t.error is not None]
        if errors and raise_errors:
            raise errors[0]
        return results


def resolve_model(spec, progress=None):
    if spec is None:
        raise UserError("tests: the fake has no default model")
    if not Path(spec).is_dir():
        raise UserError(f"{spec}: no such model package")
    return Path(spec)


def install(monkeypatch) -> type[FakeTranscriber]:
    """Put the fake in place of the real Transcriber and resolve_model in every command that uses them."""
    FakeTranscriber.instances = []
    FakeBatchTranscriber.instances = []
    for command in (transcribe_command, evaluate_command, mic_command):
        monkeypatch.setattr(command, "Transcriber", FakeTranscriber)
        monkeypatch.setattr(command, "resolve_model", resolve_model)
    for command in (transcribe_command, evaluate_command):
        monkeypatch.setattr(command, "BatchTranscriber", FakeBatchTranscriber)
    return FakeTranscriber
