"""Audio files in, mono float32 24 kHz chunks out, in bounded memory (hours of audio never sit in memory whole).

    info = probe("talk.m4a")              # AudioInfo(sample_rate=44100, channels=2, duration_s=3600.2, ...)
    for chunk in read_chunks("talk.m4a"):  # float32 [chunk_seconds * 24000] (the last one shorter)
        ...

Decoding is FFmpeg through PyAV, packet by packet. Decoded frames (often only 1024 samples) are gathered into blocks
of BLOCK_S, converted from the file's sample format in numpy, then downmixed and resampled to 24 kHz by
kyutai_stt.streaming.resample.StreamResampler (soxr), the same path as any other PCM source: a few calls per second
of audio, not a few per frame (an evaluation reads thousands of short files).
A file is opened with a short probe (PROBE_BYTES); where that is not enough to tell its format, it is opened again
with FFmpeg's default probe.

Every problem a user can fix raises AudioError with one message naming the file: missing, a directory, not
readable, not audio (or damaged beyond reading), no audio stream, no samples, NaN/inf samples, an unsupported
sample rate. Damaged packets in the middle of a readable file (a truncated download, a bad sector) are skipped, as
FFmpeg's own tools do, and reported once through `on_warning`.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kyutai_stt.errors import AudioError
from kyutai_stt.streaming.resample import TARGET_RATE, StreamResampler, check_rate

__all__ = ["AudioError", "AudioInfo", "AUDIO_EXTENSIONS", "SUPPORTED", "check", "probe", "read_chunks"]

SUPPORTED = "wav, flac, mp3, ogg/opus, ogg/vorbis, m4a/aac, webm, aiff, and the audio track of mp4/mkv/mov"
# What dataset discovery (evaluation.py) takes for an audio file; decoding itself goes by content, not by name.
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".oga", ".m4a", ".aac", ".webm", ".mka",
                    ".aiff", ".aif", ".mp4", ".mkv", ".mov")
DEFAULT_CHUNK_S = 10.0
BLOCK_S = 0.5            # seconds of decoded audio converted and resampled at a time
# FFmpeg's default probe reads up to 5 MB and decodes while it does: ~10 ms for any file. The headers of every
# supported format tell their audio stream from the first few kB (an MP3's long ID3 tag may not: then the default).
PROBE_BYTES = 4096
# The WAV demuxer's packet size (FFmpeg's default 4096 bytes: 1024 samples a decoded frame, each frame a round of
# Python); other demuxers ignore the option.
PCM_PACKET_BYTES = 65536
# Integer sample formats (FFmpeg's names, planar or not) and the factor that maps them onto [-1, 1).
_INT_SCALE = {"u8": 1 / 128, "s32": 1 / 2**31, "s64": 1 / 2**63}


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int              # Hz, as stored in the file
    channels: int
    duration_s: float | None      # from the container's header; None when it does not say
    codec: str                    # FFmpeg decoder name, e.g. "flac", "mp3float", "aac", "opus", "pcm_s16le"
    container: str                # FFmpeg demuxer name, e.g. "wav", "flac", "mov,mp4,m4a,3gp,3g2,mj2", "ogg"


def _check_path(path) -> Path:
    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: no such file")
    if p.is_dir():
        raise AudioError(f"{p}: is a directory, not an audio file")
    try:
        with open(p, "rb") as f:
            first = f.read(1)
    except PermissionError:
        raise AudioError(f"{p}: permission denied: this user cannot read the file (check its permissions)") from None
    except OSError as e:
        raise AudioError(f"{p}: cannot read the file ({e.strerror or e})") from None
    if not first:
        raise AudioError(f"{p}: the file is empty (0 bytes): it holds no audio samples")
    return p


def _open(path):
    """(container, audio stream) of a readable file, or AudioError."""
    import av

    p = _check_path(path)
    options = {"max_size": str(PCM_PACKET_BYTES)}
    try:
        try:
            container = av.open(str(p), mode="r", options={**options, "probesize": str(PROBE_BYTES)})
            if not container.streams.audio:
                container.close()
                raise av.error.FFmpegError(0, "no audio stream in the short probe")
        except av.error.FFmpegError:                 # not told apart from its first bytes: FFmpeg's full probe
            container = av.open(str(p), mode="r", options=options)
    except av.error.FFmpegError as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise AudioError(f"{p}: not an audio file this decoder can read, or it is damaged ({reason}; supported: "
                         f"{SUPPORTED})") from None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise AudioError(f"{p}: cannot open the file ({e})") from None
    if not container.streams.audio:
        kinds = sorted({s.type for s in container.streams})
        container.close()
        holds = f"it holds only {', '.join(kinds)} stream(s)" if kinds else "it holds no streams at all"
        raise AudioError(f"{p}: no audio stream in this file ({holds}); give a file with sound")
    return container, container.streams.audio[0]


def _channels(codec_context) -> int:
    layout = getattr(codec_context, "layout", None)
    n = getattr(layout, "nb_channels", None)
    if n is None:
        n = getattr(codec_context, "channels", 0)
    return int(n or 0)


def probe(path) -> AudioInfo:
    """What the file holds (first audio stream), from its header; decodes nothing unless the header is silent."""
    import av

    container, stream = _open(path)
    with container:
        cc = stream.codec_context
        rate, channels = int(cc.sample_rate or 0), _channels(cc)
        if not rate or not channels:          # some containers only know once a frame is decoded
            try:
                frame = next(container.decode(stream), None)
            except av.error.FFmpegError:
                frame = None
            if frame is not None:
                rate, channels = int(frame.sample_rate), len(frame.layout.channels)
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        return AudioInfo(rate, channels, duration, cc.name, container.format.name)


def check(path) -> AudioInfo:
    """probe(), plus what reading the file would refuse at once: a sample rate outside 8..384 kHz, and a file
    whose audio stream decodes to no sample at all. Decodes only up to the first frame with samples (cheap); NaN
    samples and damage further in are found while reading."""
    info = probe(path)
    check_rate(info.sample_rate, str(path))
    damage = _Damage()
    container, stream = _open(path)
    with container:
        if any(frame.samples for frame in _decoded_frames(container, stream, damage)):
            return info
    damaged = damage.packets
    if damaged:
        raise AudioError(f"{path}: no audio could be decoded ({damaged} damaged packet(s)): the file is corrupt or "
                         "truncated")
    raise AudioError(f"{path}: the file holds no audio samples")


class _Damage:
    packets = 0          # packets that could not be read or decoded


def _decoded_frames(container, stream, damage: _Damage):
    """The stream's decoded frames; a packet that fails to decode is skipped (counted), and a container that
    fails to demux ends the stream there (counted): a truncated download still gives what it holds."""
    import av
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.error.FFmpegError:
            damage.packets += 1
            return
        try:
            frames = packet.decode()
        except av.error.FFmpegError:
            damage.packets += 1
            continue
        yield from frames


class _Chunker:
    """Cuts a stream of arrays into arrays of exactly `size` samples (the last one shorter)."""

    def __init__(self, size: int):
        self.size, self.parts, self.count = size, [], 0

    def add(self, x: np.ndarray) -> list[np.ndarray]:
        if len(x):
            self.parts.append(x)
            self.count += len(x)
        out = []
        while self.count >= self.size:
            joined = np.concatenate(self.parts) if len(self.parts) > 1 else self.parts[0]
            out.append(np.ascontiguousarray(joined[:self.size]))
            rest = joined[self.size:]
            self.parts, self.count = ([rest] if len(rest) else []), len(rest)
        return out

    def rest(self) -> np.ndarray | None:
        return np.concatenate(self.parts) if self.parts else None


def _samples(frame) -> np.ndarray:
    """A decoded frame's samples as [n, channels]: int16 as it is (StreamResampler scales it), float32/float64 as
    they are, other integer formats scaled to float32."""
    x = frame.to_ndarray()
    channels = len(frame.layout.channels)
    x = x.reshape(channels, -1).T if frame.format.is_planar else x.reshape(-1, channels)
    name = frame.format.name.removesuffix("p")
    if name == "u8":
        return (x.astype(np.float32) - 128) * np.float32(_INT_SCALE[name])
    if name in _INT_SCALE:
        return (x.astype(np.float64) * _INT_SCALE[name]).astype(np.float32)
    return x


def read_chunks(path, chunk_seconds: float = DEFAULT_CHUNK_S, *,
                on_warning: Callable[[str], None] | None = None) -> Iterator[np.ndarray]:
    """Decode `path` into float32 mono 24 kHz chunks of chunk_seconds (all full but the last), streaming."""
    if not chunk_seconds > 0:
        raise ValueError(f"chunk_seconds must be positive, not {chunk_seconds}")
    container, stream = _open(path)
    name = str(path)
    chunker = _Chunker(max(1, round(chunk_seconds * TARGET_RATE)))
    resampler: StreamResampler | None = None
    block: list[np.ndarray] = []              # decoded frames not resampled yet, all of one dtype
    held = total = 0

    def emit(x: np.ndarray) -> Iterator[np.ndarray]:
        nonlocal total
        for chunk in chunker.add(x):
            total += len(chunk)
            yield chunk

    def resampled() -> np.ndarray:
        nonlocal held
        x = np.concatenate(block) if len(block) > 1 else block[0]
        block.clear()
        held = 0
        return resampler.process(x)

    damage = _Damage()
    with container:
        for frame in _decoded_frames(container, stream, damage):
            if not frame.samples:
                continue
            rate, channels = int(frame.sample_rate), len(frame.layout.channels)
            if resampler is None:
                resampler = StreamResampler(rate, channels, source=name)
            elif (rate, channels) != (resampler.in_rate, resampler.channels):
                raise AudioError(f"{name}: the audio changes from {resampler.in_rate} Hz, {resampler.channels} "
                                 f"channel(s) to {rate} Hz, {channels} channel(s) mid-file; convert it to one "
                                 "format first (e.g. ffmpeg -i IN -ar 24000 -ac 1 OUT.wav)")
            samples = _samples(frame)
            if block and samples.dtype != block[0].dtype:
                yield from emit(resampled())
            block.append(samples)
            held += len(samples)
            if held >= BLOCK_S * rate:
                yield from emit(resampled())
        if block:
            yield from emit(resampled())
    if resampler is not None:
        yield from emit(resampler.flush())
    last = chunker.rest()
    if last is not None:
        total += len(last)
        yield last
    damaged = damage.packets
    if total == 0:
        if damaged:
            raise AudioError(f"{name}: no audio could be decoded ({damaged} damaged packet(s)): the file is "
                             "corrupt or truncated")
        raise AudioError(f"{name}: the file holds no audio samples")
    if damaged and on_warning is not None:
        on_warning(f"{name}: skipped {damaged} damaged packet(s) (the file is truncated or corrupt); the audio "
                   "there is missing from the transcript")
