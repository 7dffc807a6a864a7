"""Streaming conversion of any PCM to what the model takes: mono float32 at 24 kHz.

    resampler = StreamResampler(44100, channels=2)
    for block in blocks:                  # float32/float64/int16, shape [n] (mono) or [n, channels]
        out = resampler.process(block)    # float32 [m], 24 kHz mono, m ~ n * 24000 / 44100
    tail = resampler.flush()              # the last samples the filter was holding back

Downmix is the mean of the channels, done before resampling (one channel to filter instead of six).
Resampling is python-soxr's streaming resampler at 'HQ' quality (linear phase, passband to ~91 % of the lower
Nyquist, stopband at 100 %): the sum of the outputs equals what a one-shot resampling of the whole signal gives,
and input at 24 kHz passes through untouched (no filter, no delay).
"""
from __future__ import annotations

import numpy as np

from kyutai_stt.errors import AudioError

TARGET_RATE = 24000          # Hz: Mimi's input rate
MIN_RATE = 8000              # Hz: telephone band; below it there is too little of speech left to transcribe
MAX_RATE = 384000            # Hz: the highest rate audio interfaces and files use
LOW_RATE = 16000             # Hz: below this, accuracy suffers (a warning, not an error)
QUALITY = "HQ"


def check_rate(rate, source: str = "audio") -> int:
    """The sample rate as an int, or an AudioError naming the accepted range."""
    if isinstance(rate, (float, np.floating)) and float(rate).is_integer():
        rate = int(rate)
    if not isinstance(rate, (int, np.integer)) or isinstance(rate, bool):
        raise AudioError(f"{source}: the sample rate must be a whole number of Hz, not {rate!r}")
    rate = int(rate)
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioError(f"{source}: sample rate {rate} Hz is outside the supported range "
                         f"{MIN_RATE}..{MAX_RATE} Hz; resample the audio first (e.g. to 24000 Hz)")
    return rate


def low_rate_warning(rate: int) -> str | None:
    """A warning for audio below 16 kHz (accepted, but it has lost the upper part of speech), else None."""
    if rate >= LOW_RATE:
        return None
    band = "telephone band" if rate <= 8000 else "narrow band"
    return f"{rate} Hz audio ({band}): accuracy will be lower than with 16 kHz or more"


class StreamResampler:
    """Mono 24 kHz float32 out of any supported PCM stream, block by block (see the module docstring)."""

    def __init__(self, in_rate: int, channels: int, *, source: str = "audio"):
        self.source = source
        self.in_rate = check_rate(in_rate, source)
        if not isinstance(channels, (int, np.integer)) or isinstance(channels, bool) or channels < 1:
            raise AudioError(f"{source}: the channel count must be a positive whole number, not {channels!r}")
        self.channels = int(channels)
        self.samples_in = 0               # input frames (samples per channel) seen so far, for error positions
        self._soxr = None
        if self.in_rate != TARGET_RATE:
            import soxr
            self._soxr = soxr.ResampleStream(self.in_rate, TARGET_RATE, 1, dtype="float32", quality=QUALITY)

    def _mono(self, pcm) -> np.ndarray:
        x = np.asarray(pcm)
        if x.ndim == 1:
            if self.channels != 1:
                raise AudioError(f"{self.source}: got mono samples (shape {x.shape}) but the stream was opened "
                                 f"with {self.channels} channels; pass shape [n, {self.channels}]")
        elif x.ndim == 2:
            if x.shape[1] != self.channels:
                raise AudioError(f"{self.source}: got {x.shape[1]} channels (shape {x.shape}) but the stream was "
                                 f"opened with {self.channels}; samples must be shaped [n, channels]")
        else:
            raise AudioError(f"{self.source}: samples must be shaped [n] or [n, channels], not {x.shape}")
        if x.dtype == np.int16:
            x = x.astype(np.float32) * np.float32(1 / 32768)
        elif x.dtype in (np.float32, np.float64):
            finite = np.isfinite(x)
            if not finite.all():
                first = int(np.argwhere(~finite)[0][0])
                raise AudioError(f"{self.source}: the audio contains NaN or infinite samples (first at "
                                 f"{(self.samples_in + first) / self.in_rate:.3f} s); the file is damaged or "
                                 "was written by a broken program")
        else:
            raise AudioError(f"{self.source}: unsupported sample type {x.dtype}; "
                             "give float32, float64 or int16 samples")
        mono = x if x.ndim == 1 else x.mean(axis=1, dtype=np.float64 if x.dtype == np.float64 else np.float32)
        self.samples_in += len(x)
        return np.ascontiguousarray(mono, dtype=np.float32)

    def process(self, pcm) -> np.ndarray:
        """Resample one block; returns float32 [m] (m may be 0 while the filter fills)."""
        mono = self._mono(pcm)
        if self._soxr is None:
            return mono.copy() if mono is pcm else mono
        return np.asarray(self._soxr.resample_chunk(mono), dtype=np.float32)

    def flush(self) -> np.ndarray:
        """End of the stream: the samples the filter still holds. The resampler is then ready for a new stream."""
        self.samples_in = 0
        if self._soxr is None:
            return np.zeros(0, np.float32)
        tail = np.asarray(self._soxr.resample_chunk(np.zeros(0, np.float32), last=True), dtype=np.float32)
        self._soxr.clear()
        return tail
