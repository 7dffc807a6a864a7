"""The Python API: PCM in (any rate, any channel count, chunks of any size), events out.

    t = Transcriber(resolve_model(None))             # or a package directory
    for chunk in chunks:                              # float32/int16, shape [n] or [n, channels]
        for event in t.feed(chunk, sample_rate=44100):
            ...                                       # Word, Partial, EndOfTurn, Step (kyutai_stt.streaming.decoder)
    events = t.flush()                                # the last words, at once; then ready for a new stream

Audio is downmixed and resampled to 24 kHz (resample.py), cut into 80 ms frames (framing.py), and each frame is one
submission of the whole-frame plan (models/stt.py: the LM step, then Mimi, on the GPU). Results come back one
frame late (engine/runtime.py pipelines the readback) and go through the delayed-streams decoder (streaming/decoder.py).
prompt=Prompt(text=..., audio=...) steers every stream's transcript (streaming/prompt.py): the text prompt goes to
the GPU with the stream's first frame, the audio prompt is fed after the silence prefix, and its words are hidden.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from kyutai_stt.config import MAX_SILENCE_PREFIX_S, stream_settings
from kyutai_stt.engine import device as gpu
from kyutai_stt.engine.plan import Plan, decode_streams
from kyutai_stt.engine.runtime import READBACK_DEPTH, Engine
from kyutai_stt.errors import AudioError
from kyutai_stt.models.lm import lm_plan
from kyutai_stt.models.stt import stt_plan
from kyutai_stt.models.variants import tuning_for
from kyutai_stt.streaming.decoder import DecoderConfig, Event, StreamDecoder
from kyutai_stt.streaming.framing import Framer
from kyutai_stt.streaming.prompt import Prompt, prompt_ids
from kyutai_stt.streaming.resample import StreamResampler
from kyutai_stt.weights.package import Package, open_package

# Silence fed by flush(): the text lags the audio by the model's delay_steps frames; two more let the last word's
# closing token out (the official notes: "≥ 0.5 s + 1 frame").
FLUSH_EXTRA_FRAMES = 2
# feed() takes [n] or [n, channels] with at most this many channels. A 2-D array with more columns is refused (it
# is most likely channels-first [channels, n]), as is a stream's first block with fewer rows than columns (it
# could be either): the layout is never guessed.
MAX_CHANNELS = 8


@dataclass
class Stats:
    frames: int = 0                 # 80 ms frames submitted (prefix and flush silence included)
    audio_seconds: float = 0.0      # of the caller's audio
    engine_seconds: float = 0.0     # wall time inside the GPU engine (submit + readback)

    @property
    def real_time_factor(self) -> float:
        return self.engine_seconds / self.audio_seconds if self.audio_seconds else 0.0

    @property
    def ms_per_frame(self) -> float:
        return 1000 * self.engine_seconds / self.frames if self.frames else 0.0


@dataclass(frozen=True)
class StreamSetup:
    """What every stream of a transcriber starts with."""
    lead_in: np.ndarray           # [samples] f32: the silence prefix, then the audio prompt (if any)
    prompt_words: np.ndarray      # u32 [2 + room]: the plan's "prompt" input [n, e = 0, ids] (zeros: no prompt)
    decoder: DecoderConfig        # the model's delay; times count from after the lead-in; prompt words hidden


def open_checked(package: Package | str | Path, verify_hashes: bool, silence_prefix: float | None,
                 prompt: Prompt | None) -> Package:
    """The transcriber options checked (AudioError, TypeError), then the package opened."""
    if silence_prefix is not None and (not isinstance(silence_prefix, (int, float))
                                       or not 0 <= silence_prefix <= MAX_SILENCE_PREFIX_S):
        raise AudioError(f"silence_prefix must be 0 to {MAX_SILENCE_PREFIX_S:g} seconds, not {silence_prefix!r}")
    if prompt is not None and not isinstance(prompt, Prompt):
        raise TypeError(f"prompt must be a kyutai_stt.streaming.prompt.Prompt, not {type(prompt).__name__}")
    return package if isinstance(package, Package) else open_package(package, verify_hashes)


def streams_plan(package: Package | str | Path, streams, verify_hashes: bool, silence_prefix: float | None,
                 decoder: DecoderConfig | None, prompt: Prompt | None,
                 with_mimi: bool = True) -> tuple[Package, Plan, StreamSetup]:
    """For a transcriber of several streams (BatchTranscriber, LiveStreams): the package opened and checked, the
    whole-frame plan of `streams` streams for this device (with_mimi False: the LM alone, fed codes), and what
    every stream starts with."""
    package = open_checked(package, verify_hashes, silence_prefix, prompt)
    if not isinstance(streams, int) or isinstance(streams, bool) or streams < 1:
        raise ValueError(f"streams must be a positive integer, not {streams!r}")
    tuning = tuning_for(*gpu.device_traits())
    plan = stt_plan(package, tuning, streams) if with_mimi else lm_plan(package, tuning, streams)
    return package, plan, stream_setup(package, plan, silence_prefix, decoder, prompt)


def stream_setup(package: Package, plan, silence_prefix: float | None, decoder: DecoderConfig | None,
                 prompt: Prompt | None) -> StreamSetup:
    """The lead-in, prompt ids and decoder settings of every stream (see Transcriber's arguments)."""
    settings = stream_settings(package.config)
    silence_prefix = settings["silence_prefix"] if silence_prefix is None else silence_prefix
    decoder = decoder or DecoderConfig()
    decoder = replace(decoder, delay_steps=settings["delay_steps"] if decoder.delay_steps is None
                      else decoder.delay_steps)
    rate = package.mimi_config.sample_rate
    prefix = int(round(silence_prefix * rate))
    lead_in = prompt.lead_in(prefix) if prompt else np.zeros(prefix, np.float32)
    room = plan.buffer(plan.inputs["prompt"]).shape[-1] - 2          # [n, e, ids] per stream
    ids = prompt_ids(prompt, package.tokenizer, room)
    words = np.zeros(2 + room, np.uint32)
    words[0], words[2:2 + len(ids)] = len(ids), ids
    lead_in_s = silence_prefix + (lead_in.size - prefix) / rate     # times count from after it
    return StreamSetup(lead_in, words, replace(decoder, silence_prefix=lead_in_s,
                                               hide_words_before=prompt.hidden_until(prefix) if prompt else 0.0))


class Transcriber:
    def __init__(self, package: Package | str | Path, *, silence_prefix: float | None = None,
                 decoder: DecoderConfig | None = None, verify_hashes: bool = True, readback_batch: int = 0,
                 prompt: Prompt | None = None):
        """silence_prefix: seconds of silence fed before each stream (times are reported without it); None: the
        model's (config.stream_settings: its config's audio_silence_prefix_seconds, at least 1 s). The decoder's
        delay_steps, unless given, is the model's. readback_batch: 0 for live audio (each frame's result one frame
        late); N > 1 for files: results are read back N frames at a time, one GPU wait per N frames (faster;
        events come in bursts). prompt: a text and/or audio prompt for every stream (streaming/prompt.py;
        PromptError when unusable)."""
        self.package = open_checked(package, verify_hashes, silence_prefix, prompt)
        self.synthetic = self.package.synthetic is not None
        plan = stt_plan(self.package, tuning_for(*gpu.device_traits()))
        setup = stream_setup(self.package, plan, silence_prefix, decoder, prompt)
        self.prompt = prompt
        self._lead_in, self._prompt_words, self.decoder_config = setup.lead_in, setup.prompt_words, setup.decoder
        self.engine = Engine(plan, self.package.read_stream, readback_batch or READBACK_DEPTH, readback_batch > 1)
        self._result_fields = plan.buffer(plan.outputs["results"]).fields      # read once, decoded per frame
        self.decoder = StreamDecoder(self.package.tokenizer, self.decoder_config)
        self.stats = Stats()
        self._start_stream()

    def reset(self) -> None:
        """Drop the current stream (nothing is released) and start a new one on the same loaded model."""
        self.engine.reset()
        self.decoder.reset()
        self.stats = Stats()
        self._start_stream()

    def feed(self, pcm: np.ndarray, sample_rate: int) -> list[Event]:
        """Audio of shape [n] or [n, channels] (float in [-1, 1] or int16; at most MAX_CHANNELS channels, and a
        stream's first block needs n >= channels: see MAX_CHANNELS). The rate and channel count must stay the same
        within a stream."""
        self._resampler, mono = feed_samples(self._resampler, pcm, sample_rate, "call flush() or reset()")
        return self._push(mono)

    def flush(self) -> list[Event]:
        """Release the last words now: pad the last frame, feed silence at full speed, drain the GPU. The
        transcriber is then ready for a new stream. A stream that received no audio gives nothing."""
        if self._resampler is None:
            return []
        events = self._push(self._resampler.flush())
        self.decoder.end_of_audio(self._stream_samples / self.package.mimi_config.sample_rate)
        events += self._submit(self._framer.flush(self.decoder_config.delay_steps + FLUSH_EXTRA_FRAMES))
        start = time.perf_counter()
        results = self.engine.drain()
        self.stats.engine_seconds += time.perf_counter() - start
        events += self._decode(results)
        events += self.decoder.finish()
        self.engine.reset()
        self.decoder.reset()
        self._start_stream()
        return events

    def _start_stream(self) -> None:
        self._resampler = None            # made by the first feed(), for its rate and channel count
        self._stream_samples = 0          # caller's audio in this stream, 24 kHz samples
        # The stream starts with the lead-in (silence prefix, audio prompt); its first frame carries the text prompt
        # to the GPU.
        self._framer = Framer(self.package.mimi_config.frame_size, self._lead_in.size, lead_in=self._lead_in)
        self._first_frame = True

    def _push(self, mono: np.ndarray) -> list[Event]:
        """Append the caller's 24 kHz samples; submit every whole frame; decode the results that came back."""
        self.stats.audio_seconds += mono.size / self.package.mimi_config.sample_rate
        self._stream_samples += mono.size
        return self._submit(self._framer.push(mono))

    def _submit(self, frames: list[np.ndarray]) -> list[Event]:
        events = []
        for frame in frames:
            start = time.perf_counter()
            inputs = {"pcm": frame}
            if self._first_frame:
                inputs["prompt"], self._first_frame = self._prompt_words, False
            results = self.engine.submit(inputs)
            self.stats.engine_seconds += time.perf_counter() - start
            self.stats.frames += 1
            events += self._decode(results)
        return events

    def _decode(self, results) -> list[Event]:
        events = []
        for r in results:
            ((token, vad),) = stream_results(self._result_fields, r, 1)
            events += self.decoder.step(token, vad)
        return events


def stream_results(fields, result, streams: int) -> list[tuple[int, list[float]]]:
    """Each stream's (token, VAD probabilities) in a frame's result: the plan's "results" output, whose `fields`
    the caller looked up once."""
    decoded = decode_streams(fields, result.outputs["results"], streams)
    return list(zip(decoded["token"][:, 0].tolist(), decoded["vad"].tolist()))


def feed_samples(resampler: StreamResampler | None, pcm, sample_rate: int,
                 to_restart: str) -> tuple[StreamResampler, np.ndarray]:
    """A stream's next audio block checked and resampled: (its resampler, made for the first block's rate and
    channel count; 24 kHz mono samples). to_restart: what the caller calls to start a stream of another format."""
    pcm = _samples(pcm, first=resampler is None)
    channels = 1 if pcm.ndim == 1 else pcm.shape[1]
    if resampler is None:
        resampler = StreamResampler(sample_rate, channels)
    elif (sample_rate, channels) != (resampler.in_rate, resampler.channels):
        raise ValueError(f"this stream is {resampler.in_rate} Hz x {resampler.channels} channels; "
                         f"{to_restart} before feeding {sample_rate} Hz x {channels}")
    return resampler, resampler.process(pcm)


def _samples(pcm, first: bool) -> np.ndarray:
    """feed()'s audio as an array of shape [n] or [n, channels], or an AudioError saying what to pass."""
    if pcm is None or isinstance(pcm, (bytes, bytearray, memoryview, str)) or np.ndim(pcm) == 0:
        hint = " (raw bytes: np.frombuffer(data, np.int16))" if isinstance(pcm, (bytes, bytearray, memoryview)) \
            else ""
        raise AudioError(f"feed() takes an array of samples shaped [n] or [n, channels], not "
                         f"{type(pcm).__name__}{hint}")
    pcm = np.asarray(pcm)
    if pcm.ndim == 2:
        n, channels = pcm.shape
        if channels > MAX_CHANNELS or (first and n < channels):
            raise AudioError(f"feed() got shape {list(pcm.shape)}: samples must be shaped [n, channels] with at "
                             f"most {MAX_CHANNELS} channels (and, in a stream's first block, n >= channels); "
                             f"channels-first audio [channels, n] must be transposed: pcm.T")
    return pcm
