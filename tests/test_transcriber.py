"""The Transcriber on the tiny model: the official loop's token stream, the official rules' events, and the API's
promises (chunking, rates and channels, flush, reset)."""
from __future__ import annotations

import ast
import copy
import re
import wave
from dataclasses import replace
from pathlib import Path

import make_stream_vectors
import numpy as np
import pytest

from kyutai_stt.engine import device as gpu
from kyutai_stt.models.mimi import mimi_plan
from kyutai_stt.models.variants import tuning_for
from kyutai_stt.reference import mimi as mr
from kyutai_stt.streaming.decoder import DecoderConfig
from kyutai_stt.streaming.transcriber import Transcriber, files_mimi_plan

ROOT = Path(__file__).resolve().parent.parent
AUDIO = ROOT / "tests" / "fixtures" / "speech_en_fr_24k.wav"
FIXTURE = ROOT / "tests" / "fixtures" / "reference_tiny_seed0.npz"

STEPS = 40                      # the fixture's official LM steps
VAD_TOLERANCE = 1e-4            # absolute, on probabilities: fp32 summation order (f16 weights equal bf16 exactly)


def fixture_pcm(seconds: float | None = None) -> np.ndarray:
    with wave.open(str(AUDIO)) as f:
        n = f.getnframes() if seconds is None else int(seconds * f.getframerate())
        return np.frombuffer(f.readframes(n), np.int16).astype(np.float32) / 32768


def official_weights_package(tiny_packages):
    """The f16 package (its LM weights equal the bf16 checkpoint bit for bit) with the Mimi tensors in f32, as
    the official encoder holds them: the engine then differs from moshi by summation order only."""
    package = copy.copy(tiny_packages("f16"))
    cfg = package.mimi_config
    mimi_tensors, mimi_streams, _ = mr.package_tensors(mr.official_encoder_tensors(0, cfg), None, cfg)
    package.manifest = {**package.manifest, "tensors": {**package.manifest["tensors"], **mimi_tensors}}
    package_read = tiny_packages("f16").read_stream
    package.read_stream = lambda name: mimi_streams[name] if name in mimi_streams else package_read(name)
    return package


def run(transcriber: Transcriber, pcm: np.ndarray, rate: int = 24000, chunk: int | None = None) -> list:
    chunk = chunk or len(pcm)
    events = []
    for i in range(0, len(pcm), chunk):
        events += transcriber.feed(pcm[i:i + chunk], rate)
    return events + transcriber.flush()


def non_step(events) -> list[dict]:
    return [e.to_dict() for e in events if e.type != "step"]


@pytest.fixture(scope="module")
def transcriber(tiny_packages):
    return Transcriber(tiny_packages("q4"), silence_prefix=0.0)


def test_token_stream_equals_the_official_loop_and_events_the_official_rules(tiny_packages):
    with np.load(FIXTURE) as z:
        tokens, vad = z["lm_tokens"], z["lm_vad_probs"]
    t = Transcriber(official_weights_package(tiny_packages), silence_prefix=0.0)
    pcm = fixture_pcm(STEPS * 0.08)
    events = run(t, pcm)
    steps = [e for e in events if e.type == "step"]
    assert len(steps) == STEPS + t.decoder_config.delay_steps + 2        # the audio, then the flush's silence
    np.testing.assert_array_equal([s.token for s in steps[:STEPS]], tokens)
    np.testing.assert_allclose([s.vad for s in steps[:STEPS]], vad, atol=VAD_TOLERANCE)
    config = {**make_stream_vectors.DEFAULTS, "silence_prefix": 0.0}
    expected = make_stream_vectors.official_events([s.token for s in steps], [s.vad for s in steps],
                                                   t.package.tokenizer, config, audio_end=len(pcm) / 24000)
    assert make_stream_vectors.events_equal(non_step(events), expected)
    words = [e for e in events if e.type == "word"]
    assert words and words[-1].end <= len(pcm) / 24000, "the flush releases the open word within the audio"


def test_chunk_size_does_not_change_anything(transcriber):
    pcm = fixture_pcm(0.8)
    whole = run(transcriber, pcm)
    for chunk in (1, 777):         # 777 samples: a frame (1920) is cut in a different place each time
        if chunk == 1:
            pcm_small = pcm[:2000]          # sample-by-sample is slow in Python: a short stretch proves the point
            assert non_step(run(transcriber, pcm_small, chunk=1)) == non_step(run(transcriber, pcm_small))
            continue
        assert [e.to_dict() for e in run(transcriber, pcm, chunk=chunk)] == [e.to_dict() for e in whole]


def test_flush_leaves_the_transcriber_ready_and_reset_drops_a_stream(transcriber):
    pcm = fixture_pcm(0.8)
    first = [e.to_dict() for e in run(transcriber, pcm)]
    transcriber.feed(fixture_pcm(0.5)[::-1].copy(), 24000)         # a stream abandoned half-way
    transcriber.reset()
    assert [e.to_dict() for e in run(transcriber, pcm)] == first
    assert [e.to_dict() for e in run(transcriber, pcm)] == first
    assert transcriber.flush() == [], "flushing an empty stream feeds nothing"


def test_any_rate_and_channel_count(transcriber):
    """44.1 kHz stereo int16 and 96 kHz x 6 channels go through; the transcript timing stays in the caller's
    seconds (the last word ends within the audio)."""
    pcm = fixture_pcm(1.0)
    for rate, channels, dtype in ((44100, 2, np.int16), (96000, 6, np.float32), (8000, 1, np.float32)):
        n = int(len(pcm) * rate / 24000)
        mono = np.interp(np.arange(n) * 24000 / rate, np.arange(len(pcm)), pcm).astype(np.float32)
        multi = np.repeat(mono[:, None], channels, axis=1)
        if dtype == np.int16:
            multi = (multi * 32767).astype(np.int16)
        before = transcriber.stats.audio_seconds
        events = run(transcriber, multi, rate, chunk=3000)
        assert transcriber.stats.audio_seconds - before == pytest.approx(1.0, abs=0.01)
        words = [e for e in events if e.type == "word"]
        assert all(w.end <= 1.0 + 1e-6 for w in words), (rate, channels, words)
        assert any(e.type == "step" for e in events)


def test_silence_prefix_shifts_nothing_in_the_callers_time(tiny_packages):
    t = Transcriber(tiny_packages("q4"), silence_prefix=0.48)
    events = run(t, fixture_pcm(1.0))
    steps = [e for e in events if e.type == "step"]
    assert len(steps) == 6 + 13 + 8                                # prefix frames, the audio's, flush
    words = [e for e in events if e.type == "word"]
    assert words and all(0 <= w.start <= w.end <= 1.0 for w in words)
    assert all(e.time >= 0 for e in events if e.type == "endOfTurn")


def test_rate_change_mid_stream_is_refused(transcriber):
    transcriber.feed(np.zeros(4800, np.float32), 48000)
    with pytest.raises(ValueError, match="48000 Hz x 1 channels"):
        transcriber.feed(np.zeros(2400, np.float32), 24000)
    transcriber.reset()


def test_decoder_settings_reach_the_decoder(tiny_packages):
    t = Transcriber(tiny_packages("q4"), decoder=DecoderConfig(eot_threshold=0.9, eot_head=1), silence_prefix=0.2)
    assert (t.decoder.config.eot_threshold, t.decoder.config.eot_head, t.decoder.config.silence_prefix) == (0.9, 1, 0.2)


def test_batched_readback_and_two_passes_give_the_same_events(tiny_packages, transcriber):
    """Files read results back 16 frames at a time (one GPU wait per batch) and, by default, take two passes (Mimi
    several frames a submission, then the LM on its codes: Tuning.mimi_frames, tests/test_variants.py): the same
    events as live, in bursts. 3 frames a submission: the stream's frames are not a multiple of it (its last
    submission is partial); then a second stream on the same transcriber, from a clean state."""
    pcm = fixture_pcm(1.6)
    live = [e.to_dict() for e in run(transcriber, pcm)]
    batched = Transcriber(tiny_packages("q4"), silence_prefix=0.0, readback_batch=16, mimi_frames=1)
    assert batched.mimi is None and [e.to_dict() for e in run(batched, pcm, chunk=4000)] == live
    two = Transcriber(tiny_packages("q4"), silence_prefix=0.0, readback_batch=16, mimi_frames=3)
    assert two.mimi is not None
    for _ in range(2):
        assert [e.to_dict() for e in run(two, pcm, chunk=4000)] == live
    assert two.stats.frames == 2 * batched.stats.frames, "one LM step per frame"
    with pytest.raises(ValueError, match="mimi_frames must be a positive integer"):
        Transcriber(tiny_packages("q4"), mimi_frames=0)


def test_readme_python_example(tiny_packages, tmp_path, capsys):
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"<!-- python example[^>]*-->\n```python\n(.*?)```", readme, re.S).group(1)
    clip = tmp_path / "talk.wav"
    with wave.open(str(AUDIO)) as src, wave.open(str(clip), "wb") as out:
        out.setparams(src.getparams())
        out.writeframes(src.readframes(int(2.0 * src.getframerate())))
    package = str(tiny_packages("q4").root)
    assert code.count("resolve_model(None)") == 1 and code.count('"talk.mp3"') == 1
    exec(code.replace("resolve_model(None)", f"resolve_model({package!r})").replace('"talk.mp3"', repr(str(clip))),
         {})
    printed = capsys.readouterr().out.splitlines()
    timed = [line for line in printed[:-1] if re.match(r"^ *\d+\.\d\d- *\d+\.\d\d \S", line)]
    flushed = ast.literal_eval(printed[-1])
    assert len(timed) == len(printed) - 1 and isinstance(flushed, list)
    assert timed or flushed, "2 s of speech give words"


def test_files_take_the_most_mimi_frames_the_device_binds(tiny_packages, monkeypatch):
    """files_mimi_plan: the device's frames a submission, halved until Mimi's largest buffer fits the device's
    binding limit (a GPU that binds less gets a smaller plan, not an error); a number given is kept (the engine
    then says --mimi-frames if it does not fit); 1, or nothing that fits: the whole-frame plan."""
    package = tiny_packages("q4")
    streams, tuning = 4, replace(tuning_for(*gpu.device_traits()), mimi_rows=128)     # 32 frames a stream
    largest = {f: mimi_plan(package, tuning.mimi, streams, f).largest_buffer().size for f in (8, 16, 32)}
    assert largest[8] < largest[16] < largest[32]
    for limit, frames in ((largest[32], 32), (largest[32] - 4, 16), (largest[16] - 4, 8), (1 << 20, 1)):
        monkeypatch.setattr(gpu, "binding_limit", lambda limit=limit: limit)
        got, plan = files_mimi_plan(package, tuning, streams, None)
        assert got == frames and (plan is None) == (frames == 1), (limit, got)
    assert files_mimi_plan(package, tuning, streams, 32)[0] == 32, "a number given is kept"
    assert files_mimi_plan(package, tuning, streams, 1) == (1, None)


def test_a_live_feed_returns_every_frame_it_completed(tiny_packages):
    """Live audio (readback_batch 0): feed() waits for the frames it submitted, so each call's events carry a
    step for every whole frame it completed, none later (the GPU's readback ring no longer holds one back)."""
    live = Transcriber(tiny_packages("q4"), silence_prefix=0.0)
    frame = live.package.mimi_config.frame_size
    noise = (0.05 * np.random.default_rng(0).standard_normal(10 * frame)).astype(np.float32)
    steps = [e.frame for e in live.feed(noise[:3 * frame], 24000) if e.type == "step"]
    assert steps == [0, 1, 2]
    assert [e for e in live.feed(noise[3 * frame:4 * frame - 5], 24000) if e.type == "step"] == []
    assert [e.frame for e in live.feed(noise[4 * frame - 5:5 * frame], 24000) if e.type == "step"] == [3, 4]
