"""Many live streams on one GPU, each fed its own audio as it comes (a server's callers, several microphones):

    live = LiveStreams(resolve_model(None), streams=16)
    a, b = live.open(), live.open()              # stream ids (free slots of the plan)
    live.feed(a, chunk, 48000)                   # any rate, channels and size; queued, no GPU work yet
    for stream, events in live.advance().items():    # every frame that is ready, as few submissions as can be
        ...                                      # Word, Partial, EndOfTurn, Step (streaming/decoder.py)
    last = live.close(a)                         # its flush: the last words; its slot is free again

One plan of `streams` streams (models/stt.py; docs/plan.md "Streams") runs every submission; a stream with no whole
frame of audio waiting sits it out (Engine.submit's `active`): its state and frame index stay as they were, so
a caller whose audio comes late or in bursts gets exactly the transcript it would get alone. Each stream's events
equal a one-stream Transcriber's on the same audio (tests/test_live.py). As a live Transcriber's feed(), advance()
waits for the frames it submitted and returns their events (a frame's GPU time after its last submission, rather
than a frame of audio later).
"""
from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np

from kyutai_stt.engine.runtime import READBACK_DEPTH, Engine
from kyutai_stt.streaming.decoder import DecoderConfig, Event, StreamDecoder
from kyutai_stt.streaming.framing import Framer
from kyutai_stt.streaming.prompt import Prompt
from kyutai_stt.streaming.resample import StreamResampler
from kyutai_stt.streaming.transcriber import FLUSH_EXTRA_FRAMES, feed_samples, stream_results, transcriber_plans
from kyutai_stt.weights.package import Package


class _Caller:
    """One opened stream: its audio path (resampler, framer), the frames waiting for a submission, its decoder,
    and the events not handed out yet."""

    def __init__(self, framer: Framer, decoder: StreamDecoder):
        self.framer, self.decoder = framer, decoder
        self.resampler: StreamResampler | None = None
        self.frames: deque[np.ndarray] = deque()
        self.events: list[Event] = []
        self.samples = 0


class LiveStreams:
    def __init__(self, package: Package | str | Path, streams: int = 8, *, silence_prefix: float | None = None,
                 decoder: DecoderConfig | None = None, verify_hashes: bool = True, prompt: Prompt | None = None,
                 kv_rings: str = "auto"):
        """streams: how many may be open at once (the plan's streams). The other arguments are Transcriber's;
        every stream gets the same."""
        plans = transcriber_plans(package, streams, verify_hashes, silence_prefix, decoder, prompt, kv_rings=kv_rings)
        self.package, plan, self.setup = plans.package, plans.plan, plans.setup
        self.synthetic = self.package.synthetic is not None
        self.streams = streams
        self.engine = Engine(plan, self.package.read_stream, READBACK_DEPTH)
        self._fields = plan.buffer(plan.outputs["results"]).fields
        self._callers: list[_Caller | None] = [None] * streams
        self._owners: dict[int, list[_Caller | None]] = {}      # submission -> the caller on each stream

    def open(self) -> int:
        """A new stream (its silence prefix and prompt first); returns its id, a free slot of the plan."""
        free = [s for s, c in enumerate(self._callers) if c is None]
        if not free:
            raise RuntimeError(f"all {self.streams} streams are open: close() one, or make LiveStreams with more")
        s = free[0]
        caller = _Caller(Framer(self.package.mimi_config.frame_size, self.setup.lead_in.size,
                                lead_in=self.setup.lead_in),
                         StreamDecoder(self.package.tokenizer, self.setup.decoder))
        self._callers[s] = caller
        self.engine.reset_stream(s)           # queued after the frames in flight: a previous caller's come back
        self.engine.write_input("prompt", self.setup.prompt_words, stream=s)
        return s

    def feed(self, stream: int, pcm: np.ndarray, sample_rate: int) -> None:
        """Queue audio of shape [n] or [n, channels] for `stream` (as Transcriber.feed takes it; the rate and
        channel count stay the same within a stream). Nothing runs until advance() or close()."""
        caller = self._caller(stream)
        caller.resampler, mono = feed_samples(caller.resampler, pcm, sample_rate, "close() it and open() another")
        self._queue(caller, mono)

    def advance(self) -> dict[int, list[Event]]:
        """Submit frames until no stream has a whole frame waiting (each submission takes one frame of every
        stream that has one; the others sit it out), then wait for them. Returns their events, per stream id."""
        while any(c is not None and c.frames for c in self._callers):
            self._submit_once()
        self._collect(self.engine.drain())
        return self._hand_out()

    def close(self, stream: int) -> list[Event]:
        """End `stream`: flush its audio (its last words), wait for its results; returns its events not handed out
        yet. The others' results that came back meanwhile wait for the next advance()."""
        caller = self._caller(stream)
        if caller.resampler is not None:                   # as Transcriber.flush: the audio, then its end
            self._queue(caller, caller.resampler.flush())
            while caller.frames:
                self._submit_once()
            caller.decoder.end_of_audio(caller.samples / self.package.mimi_config.sample_rate)
            caller.frames.extend(caller.framer.flush(self.setup.decoder.delay_steps + FLUSH_EXTRA_FRAMES))
            while caller.frames:
                self._submit_once()
            self._collect(self.engine.drain())
            caller.events += caller.decoder.finish()
        self._callers[stream] = None
        events, caller.events = caller.events, []
        return events

    def _caller(self, stream: int) -> _Caller:
        caller = self._callers[stream] if isinstance(stream, int) and 0 <= stream < self.streams else None
        if caller is None:
            raise ValueError(f"stream {stream!r} is not open (open() returns the ids)")
        return caller

    def _queue(self, caller: _Caller, mono: np.ndarray) -> None:
        caller.samples += mono.size
        caller.frames.extend(caller.framer.push(mono))

    def _submit_once(self) -> None:
        pcm = np.zeros((self.streams, self.package.mimi_config.frame_size), np.float32)
        owner: list[_Caller | None] = [None] * self.streams
        for s, caller in enumerate(self._callers):
            if caller is not None and caller.frames:
                pcm[s], owner[s] = caller.frames.popleft(), caller
        self._owners[self.engine.frame] = owner
        self._collect(self.engine.submit({"pcm": pcm}, active=[o is not None for o in owner]))

    def _collect(self, results) -> None:
        for r in results:
            for caller, (token, vad) in zip(self._owners.pop(r.frame), stream_results(self._fields, r, self.streams)):
                if caller is not None:
                    caller.events += caller.decoder.step(token, vad)

    def _hand_out(self) -> dict[int, list[Event]]:
        out = {}
        for s, caller in enumerate(self._callers):
            if caller is not None and caller.events:
                out[s], caller.events = caller.events, []
        return out
