"""StreamResampler: any PCM block stream -> mono float32 24 kHz; validation of rates, channels and samples."""
from __future__ import annotations

import numpy as np
import pytest
from audio_helpers import peak_hz, sine

from kyutai_stt.errors import AudioError, UserError
from kyutai_stt.streaming.resample import StreamResampler, check_rate, low_rate_warning


def run_blocks(resampler: StreamResampler, x: np.ndarray, block: int) -> np.ndarray:
    outs = [resampler.process(x[i:i + block]) for i in range(0, len(x), block)]
    return np.concatenate(outs + [resampler.flush()])


def test_24k_passes_through_unchanged():
    x = sine(300, 24000, 0.5)
    r = StreamResampler(24000, 1)
    out = run_blocks(r, x, 1000)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, x)
    assert len(r.flush()) == 0


def test_pass_through_returns_a_copy_not_the_callers_buffer():
    x = sine(300, 24000, 0.1)
    out = StreamResampler(24000, 1).process(x)
    x[:] = 0
    assert np.abs(out).max() > 0.4


def test_int16_is_scaled_by_1_over_32768_and_float64_accepted():
    r = StreamResampler(24000, 1)
    out = r.process(np.array([-32768, 16384, 0, 32767], np.int16))
    np.testing.assert_array_equal(out, np.array([-1.0, 0.5, 0.0, 32767 / 32768], np.float32))
    out = r.process(np.array([0.25, -0.125], np.float64))
    assert out.dtype == np.float32 and out.tolist() == [0.25, -0.125]


def test_downmix_is_the_mean_of_the_channels():
    a, b = sine(200, 24000, 0.1), sine(700, 24000, 0.1, 0.3)
    out = StreamResampler(24000, 2).process(np.stack([a, b], axis=1))
    np.testing.assert_allclose(out, (a + b) / 2, atol=1e-7)


@pytest.mark.parametrize("rate, freq, block", [(48000, 1000.0, 4800), (44100, 440.0, 1000), (8000, 440.0, 333),
                                               (96000, 3000.0, 9600), (16000, 250.0, 160)])
def test_resampling_keeps_length_and_frequency(rate, freq, block):
    seconds = 2.0
    x = sine(freq, rate, seconds)
    out = run_blocks(StreamResampler(rate, 1), x, block)
    assert abs(len(out) - 24000 * seconds) <= 1
    assert abs(peak_hz(out) - freq) <= 1.0
    # the amplitude survives (HQ passband is flat): the middle of the output is a 0.5 sine
    assert abs(np.abs(out[6000:-6000]).max() - 0.5) < 0.01


def test_streaming_in_blocks_equals_one_block():
    x = sine(523.0, 44100, 1.0) + sine(3100.0, 44100, 1.0, 0.2)
    whole = run_blocks(StreamResampler(44100, 1), x, len(x))
    pieces = run_blocks(StreamResampler(44100, 1), x, 441)
    np.testing.assert_allclose(pieces, whole, atol=1e-6)


def test_flush_leaves_the_resampler_ready_for_a_new_stream():
    x = sine(440.0, 48000, 0.5)
    r = StreamResampler(48000, 1)
    first = run_blocks(r, x, 4800)
    second = run_blocks(r, x, 4800)
    np.testing.assert_allclose(second, first, atol=1e-7)


def test_six_channels_at_96k():
    planes = np.zeros((96000, 6), np.float32)
    planes[:, 2] = sine(1000.0, 96000, 1.0, 0.6)          # only one channel carries sound: downmix divides by 6
    out = run_blocks(StreamResampler(96000, 6), planes, 9600)
    assert abs(len(out) - 24000) <= 1
    assert abs(peak_hz(out) - 1000.0) <= 1.0
    assert abs(np.abs(out[3000:-3000]).max() - 0.1) < 0.002


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_infinite_samples_are_an_audio_error(bad):
    r = StreamResampler(48000, 2, source="talk.wav")
    r.process(np.zeros((4800, 2), np.float32))                 # 0.1 s of good audio first
    x = np.zeros((4800, 2), np.float32)
    x[2400, 1] = bad
    with pytest.raises(AudioError, match=r"talk.wav: .*contains NaN or infinite samples \(first at 0.150 s\)"):
        r.process(x)


def test_audio_error_is_a_user_error():
    assert issubclass(AudioError, UserError)


@pytest.mark.parametrize("pcm, channels, match", [
    (np.zeros((10, 2), np.float32), 1, "got 2 channels"),
    (np.zeros(10, np.float32), 2, "got mono samples"),
    (np.zeros((10, 6), np.float32), 2, "got 6 channels"),
    (np.zeros((2, 3, 4), np.float32), 1, r"shaped \[n\] or \[n, channels\]"),
    (np.zeros(10, np.int32), 1, "unsupported sample type int32"),
])
def test_bad_blocks_are_clear_errors(pcm, channels, match):
    with pytest.raises(AudioError, match=match):
        StreamResampler(44100, channels).process(pcm)


@pytest.mark.parametrize("rate", [0, 7999, 384001, 1_000_000, -44100])
def test_rates_outside_8k_384k_are_refused(rate):
    with pytest.raises(AudioError, match=r"outside the supported range 8000\.\.384000 Hz"):
        StreamResampler(rate, 1)


@pytest.mark.parametrize("rate", [8000, 11025, 384000, 44100.0])
def test_rates_at_the_limits_are_accepted(rate):
    assert StreamResampler(rate, 1).in_rate == int(rate)


def test_non_integer_rate_and_bad_channel_counts():
    with pytest.raises(AudioError, match="whole number of Hz"):
        check_rate(44100.5)
    for channels in (0, -1, 1.5):
        with pytest.raises(AudioError, match="channel count"):
            StreamResampler(44100, channels)


def test_low_rate_warning():
    assert low_rate_warning(8000) == ("8000 Hz audio (telephone band): accuracy will be lower than with 16 kHz "
                                      "or more")
    assert low_rate_warning(11025).startswith("11025 Hz audio (narrow band)")
    assert low_rate_warning(16000) is None and low_rate_warning(48000) is None
