"""Small audio files for the audio, transcribe and eval tests, written with PyAV's own encoders (no fixtures)."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import wave
from pathlib import Path

import numpy as np

# kind -> (container format, codec, sample format given to the encoder, file suffix)
KINDS = {
    "wav16": ("wav", "pcm_s16le", "s16", ".wav"),
    "wavf32": ("wav", "pcm_f32le", "flt", ".wav"),
    "flac": ("flac", "flac", "s16", ".flac"),
    "mp3": ("mp3", "libmp3lame", "fltp", ".mp3"),
    "opus": ("ogg", "libopus", "flt", ".ogg"),
    "aac": ("ipod", "aac", "fltp", ".m4a"),
}
LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}


def sine(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_audio(path: Path, planes: np.ndarray, rate: int, kind: str) -> Path:
    """planes: float [channels, n] in [-1, 1] (or [n], mono), encoded as `kind` (a key of KINDS)."""
    import av

    planes = np.atleast_2d(np.asarray(planes, np.float32))
    fmt, codec, sample_fmt, _ = KINDS[kind]
    layout = LAYOUTS[planes.shape[0]]
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        step = stream.codec_context.frame_size or 1024
        for i in range(0, planes.shape[1], step):
            block = planes[:, i:i + step]
            arr = block if sample_fmt.endswith("p") else block.T.reshape(1, -1)
            if sample_fmt.startswith("s16"):
                arr = np.round(arr * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(arr), format=sample_fmt, layout=layout)
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return Path(path)


def write_wav_int16(path: Path, planes: np.ndarray, rate: int) -> Path:
    """A 16-bit PCM wav through the standard library (fast, for long files and for empty ones)."""
    planes = np.atleast_2d(np.asarray(planes, np.float32))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(planes.shape[0])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.round(planes.T * 32767).astype("<i2").tobytes())
    return Path(path)


def peak_hz(x: np.ndarray, rate: int = 24000) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


def write_video_only(path: Path) -> Path:
    """A short mp4 with one video stream and no audio."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 40 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return Path(path)


@contextlib.contextmanager
def unreadable_file():
    """A file this process cannot read: mode 000, and, when running as root (which ignores modes), the effective
    user switched to nobody while the block runs. The folder is traversable by anyone."""
    folder = Path(tempfile.mkdtemp(prefix="kyutai-perm-"))
    folder.chmod(0o755)
    path = write_wav_int16(folder / "secret.wav", sine(440, 16000, 0.2), 16000)
    path.chmod(0)
    root = os.geteuid() == 0
    try:
        if root:
            os.seteuid(65534)
        yield path
    finally:
        if root:
            os.seteuid(0)
        shutil.rmtree(folder)
