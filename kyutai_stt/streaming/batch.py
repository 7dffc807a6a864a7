"""Many recordings at once on one GPU: the whole-frame plan for S streams (docs/plan.md "Streams"), each stream
transcribing one recording after another, every weight read once per frame for all of them.

    batch = BatchTranscriber(resolve_model(None), streams=8)
    for result in batch.transcribe([Path("a.wav"), Path("b.mp3"), samples_24k]):   # in input order
        result.words, result.end_of_turns, result.seconds

Each recording runs exactly as a one-stream Transcriber runs it (its own silence prefix, prompt, flush and decoder
state): its words, times and ends of turn are the same (tests/test_batch.py). A stream whose recording is done
takes the next one at once (Engine.reset_stream; its last results are still in flight and are read as its
previous recording's); while no recording is left for it, it sits the frames out (Engine.submit's `active`).
Files are read as `kyutai-stt transcribe` reads them (streaming/audio.py, 1 s chunks), ahead of their frames on
READERS threads (files.ReadAhead), the next `streams` recordings' first chunks too, while the GPU runs. A file
that turns out bad mid-way (damage, NaN samples) stops alone: its stream takes the next recording, the others run
on, its transcript comes back with `error` set (and no words), and once every recording is done transcribe()
raises the first such AudioError (raise_errors=False: returns them all instead). on_done sees every recording,
failed ones included.

Two passes (mimi_frames > 1: every device's default, Tuning.mimi_frames): Mimi needs nothing from the LM, so it encodes
every recording first, mimi_frames frames of each stream a submission (models/mimi.py `frames`: each of its weights
read once for streams x mimi_frames frames, where the whole-frame plan reads them every frame), and the codes come
back to the host (128 bytes a frame). Then the LM alone (models/lm.py lm_plan) runs every recording frame by frame
on them: step k reads frame k - 1's codes (start tokens at step 0), as it does in the whole-frame plan. The codes
are frame by frame streaming's (tests/models/test_mimi_frames.py), so the transcripts are the same
(tests/test_batch.py). A stream whose recording ends within a submission takes the next one at the next submission.
mimi_frames=1: the whole-frame plan, one submission per frame (what LiveStreams runs).
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kyutai_stt.engine.runtime import Engine
from kyutai_stt.streaming.audio import AudioError, read_chunks
from kyutai_stt.streaming.decoder import DecoderConfig, StreamDecoder
from kyutai_stt.streaming.files import CHUNK_S, FILE_READBACK_BATCH, READERS, ReadAhead, take_events
from kyutai_stt.streaming.framing import Framer
from kyutai_stt.streaming.prompt import Prompt
from kyutai_stt.streaming.resample import TARGET_RATE
from kyutai_stt.streaming.transcriber import FLUSH_EXTRA_FRAMES, stream_results, transcriber_plans
from kyutai_stt.weights.package import Package


@dataclass
class Transcript:
    words: list = field(default_factory=list)              # decoder Word events, in order
    end_of_turns: list[float] = field(default_factory=list)
    seconds: float = 0.0                                     # of the recording's audio
    error: AudioError | None = None                          # the recording could not be read to its end


class _Recording:
    """One recording on one stream: its frames as they are read (the lead-in first, the flush's silence last), its
    decoder, and how many of its submitted frames have come back."""

    def __init__(self, index: int, source, framer: Framer, decoder: StreamDecoder, tail: int, warn, pool):
        self.index, self.framer, self.decoder, self.tail = index, framer, decoder, tail
        self.chunks: Iterator[np.ndarray] | None = ReadAhead(_chunks(source, warn), pool)
        self.frames: deque[np.ndarray] = deque()
        self.codes: list[np.ndarray] = []          # two passes: Mimi's codes of its frames, [n, n_q] at a time
        self.samples = 0
        self.submitted = self.collected = 0
        self.result = Transcript()

    def next_frame(self) -> np.ndarray | None:
        """The next frame to submit, or None once every frame (the flush's too) has been, or it failed."""
        while not self.frames and self.chunks is not None:
            try:
                chunk = next(self.chunks, None)
            except AudioError as error:                         # the recording ends here, unflushed
                self.result.error, self.chunks = error, None
                return None
            if chunk is None:                                   # the audio ended: flush
                self.chunks = None
                self.decoder.end_of_audio(self.samples / TARGET_RATE)
                self.frames.extend(self.framer.flush(self.tail))
            else:
                self.samples += chunk.size
                self.frames.extend(self.framer.push(chunk))
        if not self.frames:
            return None
        self.submitted += 1
        return self.frames.popleft()

    def take(self, events) -> None:
        take_events(events, self.result.words, self.result.end_of_turns)

    @property
    def done(self) -> bool:
        return self.chunks is None and not self.frames and self.collected == self.submitted


class _Coded:
    """A recording's second pass (two passes): the LM's codes input for each of its frames (start tokens, then the
    codes of the frame before), with the recording's decoder and transcript. A recording that failed has none."""

    def __init__(self, recording: _Recording, start: np.ndarray):
        self.index, self.decoder, self.result = recording.index, recording.decoder, recording.result
        self.samples = recording.samples
        codes = recording.codes if recording.result.error is None else []
        self.rows: deque[np.ndarray] = deque([start, *np.concatenate(codes)[:-1]] if codes else [])
        self.submitted = self.collected = 0

    def next_frame(self) -> np.ndarray | None:
        if not self.rows:
            return None
        self.submitted += 1
        return self.rows.popleft()

    take = _Recording.take

    @property
    def done(self) -> bool:
        return not self.rows and self.collected == self.submitted


def _chunks(source, warn) -> Iterator[np.ndarray]:
    if isinstance(source, np.ndarray):
        samples = np.asarray(source, np.float32).reshape(-1)
        step = int(CHUNK_S * TARGET_RATE)
        return (samples[i:i + step] for i in range(0, samples.size, step))
    return read_chunks(Path(source), CHUNK_S, on_warning=warn)


class BatchTranscriber:
    def __init__(self, package: Package | str | Path, streams: int = 4, *, silence_prefix: float | None = None,
                 decoder: DecoderConfig | None = None, verify_hashes: bool = True, prompt: Prompt | None = None,
                 mimi_frames: int | None = None, kv_rings: str = "auto"):
        """streams: recordings transcribed at once (the plan's streams, up to lm.MAX_STREAMS: docs/plan.md).
        mimi_frames: frames of each stream Mimi encodes a submission in the first of two passes (module docstring);
        1: one pass of the whole-frame plan; None: this device's (transcriber.files_mimi_plan). The other arguments are
        Transcriber's; every recording gets the same."""
        plans = transcriber_plans(package, streams, verify_hashes, silence_prefix, decoder, prompt, mimi_frames,
                                  kv_rings)
        self.package, plan, self.setup, self.mimi_frames = plans.package, plans.plan, plans.setup, plans.mimi_frames
        self.synthetic = self.package.synthetic is not None
        self.streams = streams
        self.engine = Engine(plan, self.package.read_stream, FILE_READBACK_BATCH, batch_readback=True)
        self.mimi = None if plans.mimi is None else Engine(plans.mimi, self.package.read_stream, FILE_READBACK_BATCH,
                                                           batch_readback=True)
        self._fields = plan.buffer(plan.outputs["results"]).fields

    def transcribe(self, sources: Sequence, warn=None, on_done=None, raise_errors: bool = True) -> list[Transcript]:
        """Every source (a file, or 24 kHz mono float32 samples) transcribed; returned in input order.
        on_done(index, transcript) is called as each recording finishes (in finishing order)."""
        done: dict[int, Transcript] = {}
        with ThreadPoolExecutor(READERS, thread_name_prefix="kyutai-stt-read") as pool:
            recordings = self._read_ahead(sources, warn, pool)
            if self.mimi is None:
                self._run("pcm", recordings, self.package.mimi_config.frame_size, done, on_done)
            else:
                encoded = self._encode(recordings)
        if self.mimi is not None:
            cfg = self.package.config
            start = np.full(cfg.n_q, cfg.card, np.uint32)          # the codes buffer's reset fill: start tokens
            self._run("codes", (_Coded(r, start) for r in encoded), cfg.n_q, done, on_done)
        results = [done[i] for i in range(len(done))]
        failed = [t.error for t in results if t.error is not None]
        if failed and raise_errors:
            raise failed[0]
        return results

    def _read_ahead(self, sources: Sequence, warn, pool) -> Iterator[_Recording]:
        """The recordings in input order, each made (its reading started) `streams` recordings before it is taken."""
        tail = self.setup.decoder.delay_steps + FLUSH_EXTRA_FRAMES
        frame_size = self.package.mimi_config.frame_size
        upcoming: deque[_Recording] = deque()
        for index, source in enumerate(sources):
            upcoming.append(_Recording(index, source, Framer(frame_size, self.setup.lead_in.size,
                                                             lead_in=self.setup.lead_in),
                                       StreamDecoder(self.package.tokenizer, self.setup.decoder), tail, warn, pool))
            if len(upcoming) > self.streams:
                yield upcoming.popleft()
        yield from upcoming

    def _encode(self, recordings: Iterator[_Recording]) -> list[_Recording]:
        """The first of two passes: every recording's frames through Mimi, mimi_frames of each stream a submission,
        their codes kept (_Recording.codes). Returns the recordings in input order."""
        engine, streams, frames = self.mimi, self.streams, self.mimi_frames
        pcm = np.zeros((streams, frames, self.package.mimi_config.frame_size), np.float32)
        slots: list[_Recording | None] = [None] * streams
        owners: dict[int, list[tuple[_Recording | None, int]]] = {}    # submission -> (recording, frames) a stream
        encoded: list[_Recording] = []
        engine.reset()

        def collect(results) -> None:
            for r in results:
                codes = r.outputs["codes"].reshape(streams, frames, -1)
                for s, (recording, count) in enumerate(owners.pop(r.frame)):
                    if count:
                        recording.codes.append(codes[s, :count].copy())

        while True:
            owner: list[tuple[_Recording | None, int]] = [(None, 0)] * streams
            for s in range(streams):
                count = 0
                while count < frames:
                    frame = slots[s].next_frame() if slots[s] is not None else None
                    if frame is not None:
                        pcm[s, count] = frame
                        count += 1
                    elif count:
                        break                   # the next recording starts with the next submission
                    else:
                        slots[s] = next(recordings, None)
                        if slots[s] is None:
                            break               # nothing left: the stream encodes silence, unread
                        encoded.append(slots[s])
                        engine.reset_stream(s)
                pcm[s, count:] = 0
                owner[s] = (slots[s], count)
            if not any(count for _, count in owner):
                break
            owners[engine.frame] = owner
            collect(engine.submit({"pcm": pcm}))
        collect(engine.drain())
        return encoded

    def _run(self, role: str, recordings: Iterator, width: int, done: dict[int, Transcript], on_done) -> None:
        """The recordings on the streams of self.engine, one frame each a submission (role: their frames' input,
        `width` words a stream): each stream takes the next recording as soon as its own is submitted, its
        results go through the recording's decoder."""
        engine, streams = self.engine, self.streams
        slots: list = [None] * streams
        owners: dict[int, list] = {}                              # submission -> the recording on each stream
        engine.reset()

        def collect(results) -> None:
            for r in results:
                for recording, (token, vad) in zip(owners.pop(r.frame), stream_results(self._fields, r, streams)):
                    if recording is None:
                        continue
                    recording.take(recording.decoder.step(token, vad))
                    recording.collected += 1
                    if recording.done:
                        finish(recording)

        def finish(recording) -> None:
            if recording.result.error is None:
                recording.take(recording.decoder.finish())
            else:
                recording.result.words, recording.result.end_of_turns = [], []
            done[recording.index] = recording.result
            recording.result.seconds = recording.samples / TARGET_RATE
            if on_done:
                on_done(recording.index, recording.result)

        inputs = np.zeros((streams, width), np.float32 if role == "pcm" else np.uint32)   # submit copies it
        while True:
            owner: list = [None] * streams
            for s in range(streams):
                while True:
                    recording = slots[s]
                    frame = recording.next_frame() if recording is not None else None
                    if frame is not None:
                        inputs[s], owner[s] = frame, recording
                        break
                    if recording is not None and recording.result.error is not None and recording.done:
                        finish(recording)                         # failed with nothing in flight
                    slots[s] = next(recordings, None)             # the stream takes the next recording
                    if slots[s] is None:
                        inputs[s] = 0                             # it sits the frame out
                        break
                    engine.reset_stream(s)
                    engine.write_input("prompt", self.setup.prompt_words, stream=s)
            if not any(owner):
                break
            owners[engine.frame] = owner
            collect(engine.submit({role: inputs}, active=[o is not None for o in owner]))
        collect(engine.drain())
