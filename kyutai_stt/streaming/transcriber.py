"""The Python API: PCM in (any rate, any channel count, chunks of any size), events out.

    t = Transcriber(resolve_model(None))             # or a package directory
    for chunk in chunks:                              # float32/int16, shape [n] or [n, channels]
        for event in t.feed(chunk, sample_rate=44100):
            ...                                       # Word, Partial, EndOfTurn, Step (kyutai_stt.streaming.decoder)
    events = t.flush()                                # the last words, at once; then ready for a new stream

Audio is downmixed and resampled to 24 kHz (resample.py), cut into 80 ms frames (framing.py), and each frame is one
submission of the whole-frame plan (models/stt.py: the LM step, then Mimi, on the GPU). For files (readback_batch
> 1) frames go through Mimi several at a time first (mimi_frames: models/mimi.py `frames`, the same codes as frame
by frame), and the LM alone (models/lm.py lm_plan) then steps through their codes. For live audio each feed()
waits for the frames it submitted (pipelined among themselves: engine/runtime.py) and returns their events; files
read results back N frames at a time. Results go through the delayed-streams decoder (streaming/decoder.py).
prompt=Prompt(text=..., audio=...) steers every stream's transcript (streaming/prompt.py): the text prompt goes to
the GPU with the stream's first frame, the audio prompt is fed after the silence prefix, and its words are hidden.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from kyutai_stt.config import MAX_SILENCE_PREFIX_S, stream_settings
from kyutai_stt.engine import device as gpu
from kyutai_stt.engine.plan import Plan, decode_streams
from kyutai_stt.engine.runtime import READBACK_DEPTH, Engine
from kyutai_stt.errors import AudioError
from kyutai_stt.models.lm import lm_plan
from kyutai_stt.models.mimi import mimi_plan
from kyutai_stt.models.stt import stt_plan
from kyutai_stt.models.variants import tuning_for, with_kv_rings
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


@dataclass(frozen=True)
class Plans:
    """What a transcriber runs (transcriber_plans)."""
    package: Package
    plan: Plan                    # the whole frame, or (mimi given) the LM alone, fed Mimi's codes
    setup: StreamSetup
    mimi_frames: int              # Mimi's frames of each stream a submission (1: the whole-frame plan)
    mimi: Plan | None             # Mimi's plan of mimi_frames frames a submission (files), or None


def transcriber_plans(package: Package | str | Path, streams, verify_hashes: bool, silence_prefix: float | None,
                      decoder: DecoderConfig | None, prompt: Prompt | None, mimi_frames: int | None = 1,
                      kv_rings: str = "auto") -> Plans:
    """For every transcriber (Transcriber, BatchTranscriber, LiveStreams): the package opened and checked, the plans
    of `streams` streams for this device (files_mimi_plan: mimi_frames 1 is the whole-frame plan, None the
    device's choice for files; kv_rings: variants.KV_RINGS), and what every stream starts with."""
    package = open_checked(package, verify_hashes, silence_prefix, prompt)
    check_positive("streams", streams)
    traits = gpu.device_traits()
    tuning = with_kv_rings(tuning_for(*traits), kv_rings, traits[4])
    frames, mimi = files_mimi_plan(package, tuning, streams, mimi_frames)
    plan = stt_plan(package, tuning, streams) if mimi is None else lm_plan(package, tuning, streams)
    return Plans(package, plan, stream_setup(package, plan, silence_prefix, decoder, prompt), frames, mimi)


def check_positive(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")


def files_mimi_plan(package: Package, tuning, streams: int, frames: int | None) -> tuple[int, Plan | None]:
    """Mimi's plan for files, `frames` of each stream a submission: (frames, the plan), or (1, None) for Mimi and
    the LM together (the whole-frame plan). frames None: the device's (Tuning.mimi_frames), halved until the plan's
    largest buffer fits this device (a GPU that binds less still gets the largest plan it holds); a number given
    is taken as it is (the engine refuses it, naming --mimi-frames, if it does not fit)."""
    explicit = frames is not None
    frames = tuning.mimi_frames(streams) if frames is None else frames
    check_positive("mimi_frames", frames)
    while frames > 1:
        plan = mimi_plan(package, tuning.mimi, streams, frames)
        if explicit or plan.largest_buffer().size <= gpu.binding_limit():
            return frames, plan
        frames //= 2
    return 1, None


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
                 prompt: Prompt | None = None, mimi_frames: int | None = None, kv_rings: str = "auto"):
        """silence_prefix: seconds of silence fed before each stream (times are reported without it); None: the
        model's (config.stream_settings: its config's audio_silence_prefix_seconds, at least 1 s). The decoder's
        delay_steps, unless given, is the model's. readback_batch: 0 for live audio (feed() returns the events of
        every frame it completed: it waits for the GPU once, a frame's GPU time after its last submission); N > 1
        for files: results are read back N frames at a time, one GPU wait per N frames (faster; events come in
        bursts). prompt: a text and/or audio prompt for every stream (streaming/prompt.py;
        PromptError when unusable). mimi_frames: frames Mimi encodes a submission ahead of the LM (events then come
        that many frames later); 1: Mimi and the LM step together, a frame at a time; None: the device's
        (files_mimi_plan) with readback_batch > 1 (files), else 1. kv_rings: what the KV rings hold
        (models/variants.KV_RINGS: "auto", the device's, or "int8", for many streams)."""
        if mimi_frames is None:           # files: the device's choice; live audio: a frame at a time
            mimi_frames = None if readback_batch > 1 else 1
        plans = transcriber_plans(package, 1, verify_hashes, silence_prefix, decoder, prompt, mimi_frames, kv_rings)
        self.package, plan, setup, self.mimi_frames = plans.package, plans.plan, plans.setup, plans.mimi_frames
        self.synthetic = self.package.synthetic is not None
        self.prompt = prompt
        self._lead_in, self._prompt_words, self.decoder_config = setup.lead_in, setup.prompt_words, setup.decoder
        self.engine = Engine(plan, self.package.read_stream, readback_batch or READBACK_DEPTH, readback_batch > 1)
        self._live = readback_batch <= 1          # feed() waits for its frames (an 80 ms frame sooner than not)
        self.mimi = None if plans.mimi is None else Engine(plans.mimi, self.package.read_stream)
        self._result_fields = plan.buffer(plan.outputs["results"]).fields      # read once, decoded per frame
        self.decoder = StreamDecoder(self.package.tokenizer, self.decoder_config)
        self.stats = Stats()
        self._start_stream()

    def reset(self) -> None:
        """Drop the current stream (nothing is released) and start a new one on the same loaded model."""
        self._reset_engines()
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
        if self.mimi is not None:          # the last frames, fewer than mimi_frames, then what Mimi has in flight
            events += self._encode(True)
        events += self._drain()
        events += self.decoder.finish()
        self._reset_engines()
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
        self._waiting: list[np.ndarray] = []          # frames not yet sent to Mimi (mimi_frames > 1)
        self._encoding: deque[int] = deque()          # frames of each Mimi submission in flight
        # The LM step of frame k reads frame k - 1's codes; the first, start tokens (the codes buffer's reset fill).
        cfg = self.package.config
        self._codes = np.full(cfg.n_q, cfg.card, np.uint32)

    def _reset_engines(self) -> None:
        self.engine.reset()
        if self.mimi is not None:
            self.mimi.reset()

    def _push(self, mono: np.ndarray) -> list[Event]:
        """Append the caller's 24 kHz samples; submit every whole frame; decode the results that came back."""
        self.stats.audio_seconds += mono.size / self.package.mimi_config.sample_rate
        self._stream_samples += mono.size
        events = self._submit(self._framer.push(mono))
        return events + self._drain() if self._live else events

    def _drain(self) -> list[Event]:
        """The events of every frame in flight (waits for the GPU)."""
        start = time.perf_counter()
        results = self.engine.drain()
        self.stats.engine_seconds += time.perf_counter() - start
        return self._decode(results)

    def _submit(self, frames: list[np.ndarray]) -> list[Event]:
        if self.mimi is not None:
            self._waiting.extend(frames)
            return self._encode(False)
        return self._step([{"pcm": frame} for frame in frames])

    def _encode(self, last: bool) -> list[Event]:
        """Waiting frames through Mimi, mimi_frames a submission (last: the rest too, then every submission in
        flight); the LM steps through the codes that came back."""
        events, per = [], self.mimi_frames
        while len(self._waiting) >= per or (last and self._waiting):
            chunk, self._waiting = self._waiting[:per], self._waiting[per:]
            pcm = np.zeros((per, self.package.mimi_config.frame_size), np.float32)
            pcm[:len(chunk)] = chunk
            self._encoding.append(len(chunk))
            start = time.perf_counter()
            results = self.mimi.submit({"pcm": pcm})
            self.stats.engine_seconds += time.perf_counter() - start
            events += self._lm_steps(results)
        if last:
            start = time.perf_counter()
            results = self.mimi.drain()
            self.stats.engine_seconds += time.perf_counter() - start
            events += self._lm_steps(results)
        return events

    def _lm_steps(self, mimi_results) -> list[Event]:
        inputs = []
        for r in mimi_results:
            for codes in r.outputs["codes"].reshape(self.mimi_frames, -1)[:self._encoding.popleft()]:
                inputs.append({"codes": self._codes})
                self._codes = codes.copy()
        return self._step(inputs)

    def _step(self, frames_inputs: list[dict]) -> list[Event]:
        """One submission of the plan (the whole frame, or the LM step) per frame, with its inputs. (Several frames
        in one command buffer were measured no faster for files: the host's recording of each frame's dispatches,
        not the submissions, is what the GPU waits for: BENCHMARKS.md.)"""
        events = []
        for inputs in frames_inputs:
            start = time.perf_counter()
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
