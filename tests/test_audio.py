"""Decoding files (PyAV) into 24 kHz mono chunks: formats, rates, channels, damaged files, bounded memory."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from audio_helpers import peak_hz, sine, unreadable_file, write_audio, write_video_only, write_wav_int16

from kyutai_stt.streaming.audio import AudioError, probe, read_chunks


def decode(path, chunk_seconds=0.5, **kw) -> tuple[list[np.ndarray], np.ndarray]:
    chunks = list(read_chunks(path, chunk_seconds, **kw))
    return chunks, np.concatenate(chunks)


# kind, rate, channels, codec FFmpeg reports, how much longer than the source the decoded audio may be (codec
# priming/padding: exact for PCM and FLAC)
CASES = [
    ("wav16", 8000, 1, "pcm_s16le", 0.0),
    ("wav16", 24000, 2, "pcm_s16le", 0.0),
    ("flac", 44100, 2, "flac", 0.0),
    ("mp3", 44100, 2, "mp3float", 0.06),
    ("opus", 48000, 1, "opus", 0.03),
    ("aac", 44100, 2, "aac", 0.06),
    ("wavf32", 96000, 6, "pcm_f32le", 0.0),
    ("flac", 96000, 6, "flac", 0.0),
    ("wav16", 16000, 1, "pcm_s16le", 0.0),
]


@pytest.mark.parametrize("kind, rate, channels, codec, slack", CASES)
def test_formats_rates_and_channels(tmp_path, kind, rate, channels, codec, slack):
    seconds, freq = 1.5, 440.0 if rate < 16000 else 1234.0
    planes = np.zeros((channels, round(rate * seconds)), np.float32)
    planes[0] = sine(freq, rate, seconds, 0.6)        # sound on the first channel only: the downmix divides it
    path = write_audio(tmp_path / f"x.{kind}", planes, rate, kind)
    info = probe(path)
    assert (info.sample_rate, info.channels, info.codec) == (rate, channels, codec)
    assert info.duration_s == pytest.approx(seconds, abs=0.05)
    chunks, x = decode(path)
    assert x.dtype == np.float32 and x.ndim == 1
    assert all(len(c) == 12000 for c in chunks[:-1]) and 0 < len(chunks[-1]) <= 12000
    assert 24000 * seconds - 1 <= len(x) <= 24000 * (seconds + slack) + 1
    assert abs(peak_hz(x) - freq) <= 1.0
    middle = x[6000:-6000]
    expected = 0.6 / channels
    assert abs(np.abs(middle).max() - expected) < (0.01 if slack == 0 else 0.1 * expected + 0.005)


def test_lossless_24k_is_bit_exact_after_int16_scaling(tmp_path):
    rng = np.random.default_rng(0)
    x = np.clip(rng.normal(0, 0.2, 24000), -1, 1).astype(np.float32)
    path = write_wav_int16(tmp_path / "n.wav", x, 24000)
    _, out = decode(path, 0.3)
    np.testing.assert_array_equal(out, np.round(x * 32767).astype(np.int16) / np.float32(32768))


def test_probe_reads_the_header_without_decoding(tmp_path):
    path = write_wav_int16(tmp_path / "long.wav", sine(100, 22050, 3.0), 22050)
    info = probe(path)
    assert (info.sample_rate, info.channels, info.duration_s, info.container) == (22050, 1, 3.0, "wav")


def test_chunk_seconds_must_be_positive(tmp_path):
    path = write_wav_int16(tmp_path / "a.wav", sine(100, 24000, 0.1), 24000)
    with pytest.raises(ValueError):
        list(read_chunks(path, 0))


# ---- files a user might give by mistake ------------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match=r"nope.wav: no such file"):
        probe(tmp_path / "nope.wav")


def test_directory(tmp_path):
    with pytest.raises(AudioError, match="is a directory, not an audio file"):
        list(read_chunks(tmp_path))


def test_unreadable_file():
    import av  # noqa: F401  (imported before the effective user loses access to the virtualenv)
    with unreadable_file() as path:
        with pytest.raises(AudioError, match="secret.wav: permission denied"):
            probe(path)


def test_text_file_named_mp3(tmp_path):
    path = tmp_path / "notes.mp3"
    path.write_text("this is not audio at all\n" * 40)
    with pytest.raises(AudioError, match=r"notes.mp3: not an audio file this decoder can read.*supported: wav, "
                                         r"flac, mp3, ogg/opus"):
        probe(path)


def test_random_bytes_named_wav(tmp_path):
    path = tmp_path / "noise.wav"
    path.write_bytes(np.random.default_rng(1).bytes(4000))
    with pytest.raises(AudioError, match="not an audio file this decoder can read"):
        list(read_chunks(path))


def test_zero_byte_file(tmp_path):
    (tmp_path / "z.flac").touch()
    with pytest.raises(AudioError, match=r"z.flac: the file is empty \(0 bytes\): it holds no audio samples"):
        probe(tmp_path / "z.flac")


def test_wav_with_no_samples(tmp_path):
    path = write_wav_int16(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    assert probe(path).channels == 1
    with pytest.raises(AudioError, match=r"empty.wav: the file holds no audio samples"):
        list(read_chunks(path))


def test_video_without_audio(tmp_path):
    path = write_video_only(tmp_path / "clip.mp4")
    with pytest.raises(AudioError, match=r"clip.mp4: no audio stream in this file \(it holds only video"):
        probe(path)


def test_nan_samples_in_a_float_wav(tmp_path):
    x = sine(440, 16000, 1.0)
    x[12000] = np.nan
    path = write_audio(tmp_path / "nan.wav", x, 16000, "wavf32")
    with pytest.raises(AudioError, match=r"nan.wav: the audio contains NaN or infinite samples \(first at 0.750 s"):
        list(read_chunks(path))


def test_unsupported_sample_rate_in_a_file(tmp_path):
    path = write_wav_int16(tmp_path / "low.wav", sine(100, 4000, 0.5), 4000)
    assert probe(path).sample_rate == 4000
    with pytest.raises(AudioError, match=r"low.wav: sample rate 4000 Hz is outside the supported range"):
        list(read_chunks(path))


def test_truncated_flac_gives_what_it_holds_and_warns(tmp_path):
    whole = write_audio(tmp_path / "whole.flac", sine(440, 44100, 4.0), 44100, "flac")
    data = whole.read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(data[:len(data) * 2 // 3])
    warnings = []
    _, x = decode(cut, on_warning=warnings.append)
    assert 24000 * 0.5 < len(x) < 24000 * 3.5
    assert abs(peak_hz(x) - 440.0) <= 2.0
    assert len(warnings) == 1 and "cut.flac: skipped 1 damaged packet(s)" in warnings[0]


def test_truncated_m4a_without_its_index_is_a_clear_error(tmp_path):
    whole = write_audio(tmp_path / "whole.m4a", sine(440, 44100, 1.0), 44100, "aac")
    cut = tmp_path / "cut.m4a"
    cut.write_bytes(whole.read_bytes()[:whole.stat().st_size // 2])
    with pytest.raises(AudioError, match="cut.m4a: not an audio file this decoder can read, or it is damaged"):
        probe(cut)


def test_truncated_wav_header_only(tmp_path):
    whole = write_wav_int16(tmp_path / "w.wav", sine(440, 16000, 1.0), 16000)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[:44])         # the header promises 1 s; no sample follows
    with pytest.raises(AudioError, match="cut.wav: the file holds no audio samples"):
        list(read_chunks(cut))


# ---- long files: bounded memory ---------------------------------------------------------------------------------

def test_long_file_is_decoded_in_bounded_memory(tmp_path):
    minutes, rate = 3, 44100
    path = tmp_path / "long.wav"
    seconds_per_block, blocks = 10, minutes * 6
    # written block by block so that the test itself never holds the whole signal
    import wave
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        for b in range(blocks):
            t = (np.arange(seconds_per_block * rate) + b * seconds_per_block * rate) / rate
            s = np.round(0.4 * np.sin(2 * np.pi * 300 * t) * 32767).astype("<i2")
            w.writeframes(np.stack([s, s], axis=1).tobytes())
    decoded_bytes = minutes * 60 * 24000 * 4          # the whole file as float32 mono 24 kHz: 17 MB
    tracemalloc.start()
    try:
        total, count, peak_value = 0, 0, 0.0
        for chunk in read_chunks(path, 2.0):
            total += len(chunk)
            count += 1
            peak_value = max(peak_value, float(np.abs(chunk).max()))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == minutes * 60 * 24000 and count == minutes * 30
    assert abs(peak_value - 0.4) < 0.01
    assert peak < decoded_bytes / 8, f"peak traced memory {peak / 1e6:.1f} MB for a {decoded_bytes / 1e6:.0f} MB decode"
