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
from kyutai_stt.streaming.transcriber import FLUSH_EXTRA_FRAMES, stream_results, streams_plan
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


def _chunks(source, warn) -> Iterator[np.ndarray]:
    if isinstance(source, np.ndarray):
        samples = np.asarray(source, np.float32).reshape(-1)
        step = int(CHUNK_S * TARGET_RATE)
        return (samples[i:i + step] for i in range(0, samples.size, step))
    return read_chunks(Path(source), CHUNK_S, on_warning=warn)


class BatchTranscriber:
    def __init__(self, package: Package | str | Path, streams: int = 4, *, silence_prefix: float | None = None,
                 decoder: DecoderConfig | None = None, verify_hashes: bool = True, prompt: Prompt | None = None):
        """streams: recordings transcribed at once (the plan's streams, up to lm.MAX_STREAMS: docs/plan.md). The
        other arguments are Transcriber's; every recording gets the same."""
        self.package, plan, self.setup = streams_plan(package, streams, verify_hashes, silence_prefix, decoder,
                                                      prompt)
        self.synthetic = self.package.synthetic is not None
        self.streams = streams
        self.engine = Engine(plan, self.package.read_stream, FILE_READBACK_BATCH, batch_readback=True)
        self._fields = plan.buffer(plan.outputs["results"]).fields

    def transcribe(self, sources: Sequence, warn=None, on_done=None, raise_errors: bool = True) -> list[Transcript]:
        """Every source (a file, or 24 kHz mono float32 samples) transcribed; returned in input order.
        on_done(index, transcript) is called as each recording finishes (in finishing order)."""
        frame_size = self.package.mimi_config.frame_size
        tail = self.setup.decoder.delay_steps + FLUSH_EXTRA_FRAMES
        waiting = deque(enumerate(sources))
        slots: list[_Recording | None] = [None] * self.streams
        owners: dict[int, list[_Recording | None]] = {}          # submission -> the recording on each stream
        done: dict[int, Transcript] = {}
        self.engine.reset()

        def collect(results) -> None:
            for r in results:
                for recording, (token, vad) in zip(owners.pop(r.frame), stream_results(self._fields, r, self.streams)):
                    if recording is None:
                        continue
                    recording.take(recording.decoder.step(token, vad))
                    recording.collected += 1
                    if recording.done:
                        finish(recording)

        def finish(recording: _Recording) -> None:
            if recording.result.error is None:
                recording.take(recording.decoder.finish())
            else:
                recording.result.words, recording.result.end_of_turns = [], []
            done[recording.index] = recording.result
            recording.result.seconds = recording.samples / TARGET_RATE
            if on_done:
                on_done(recording.index, recording.result)

        with ThreadPoolExecutor(READERS, thread_name_prefix="kyutai-stt-read") as pool:
            upcoming: deque[_Recording] = deque()

            def next_recording() -> _Recording | None:
                """The next recording; the `streams` after it are being read already."""
                while waiting and len(upcoming) <= self.streams:
                    index, source = waiting.popleft()
                    upcoming.append(_Recording(index, source, Framer(frame_size, self.setup.lead_in.size,
                                                                     lead_in=self.setup.lead_in),
                                               StreamDecoder(self.package.tokenizer, self.setup.decoder), tail,
                                               warn, pool))
                return upcoming.popleft() if upcoming else None

            pcm = np.zeros((self.streams, frame_size), np.float32)    # rewritten each frame (submit copies it)
            while True:
                owner: list[_Recording | None] = [None] * self.streams
                for s in range(self.streams):
                    while True:
                        recording = slots[s]
                        frame = recording.next_frame() if recording is not None else None
                        if frame is not None:
                            pcm[s], owner[s] = frame, recording
                            break
                        if recording is not None and recording.result.error is not None and recording.done:
                            finish(recording)                     # failed with nothing in flight
                        slots[s] = next_recording()               # the stream takes the next recording
                        if slots[s] is None:
                            pcm[s] = 0                            # it sits the frame out
                            break
                        self.engine.reset_stream(s)
                        self.engine.write_input("prompt", self.setup.prompt_words, stream=s)
                if not any(owner):
                    break
                owners[self.engine.frame] = owner
                collect(self.engine.submit({"pcm": pcm}, active=[o is not None for o in owner]))
        collect(self.engine.drain())
        results = [done[i] for i in range(len(done))]
        failed = [t.error for t in results if t.error is not None]
        if failed and raise_errors:
            raise failed[0]
        return results
