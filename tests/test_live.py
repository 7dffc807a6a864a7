"""LiveStreams (streaming/live.py): callers feeding audio as it comes, in bursts and gaps, on fewer streams than
callers (a stream closed and opened again for the next one): each caller's events (every step's token and VAD, the
words, the ends of turn) equal a one-stream Transcriber's on the same audio, while the others sit frames out."""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from kyutai_stt.streaming.live import LiveStreams
from kyutai_stt.streaming.transcriber import Transcriber

AUDIO = Path(__file__).resolve().parent / "fixtures" / "speech_en_fr_24k.wav"
RATE = 24_000
SILENCE_PREFIX = 0.2          # short lead-ins: the comparison, not the model's defaults, is what is tested
CLIPS = [(0.3, 1.1), (2.0, 0.5), (4.1, 0.7)]      # (start, seconds) of the fixture audio, one per caller


@pytest.fixture(scope="module")
def clips():
    with wave.open(str(AUDIO)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
    return [pcm[int(a * RATE):int((a + n) * RATE)] for a, n in CLIPS]


def comparable(events) -> list[dict]:
    """Everything but the partial texts (their timing follows the readback, not the audio)."""
    return [e.to_dict() for e in events if e.type != "partial"]


def test_callers_in_bursts_and_gaps_equal_one_stream_runs(tiny_packages, clips):
    package = tiny_packages("q4")
    alone = Transcriber(package, silence_prefix=SILENCE_PREFIX)
    expected = [comparable(alone.feed(clip, RATE) + alone.flush()) for clip in clips]
    assert any(e["type"] == "word" for e in expected[0]), "the first caller says something"

    live = LiveStreams(package, streams=2, silence_prefix=SILENCE_PREFIX)
    rng = np.random.default_rng(3)
    ids = {0: live.open(), 1: live.open()}         # callers 0 and 1 now; caller 2 takes the first freed slot
    fed = [0, 0, 0]
    got: list[list] = [[], [], []]
    with pytest.raises(RuntimeError, match="all 2 streams are open"):
        live.open()
    while len(ids) or fed[2] == 0:
        for caller, stream in list(ids.items()):
            if fed[caller] < clips[caller].size and rng.random() < 0.5:      # a burst, or nothing this round
                n = int(rng.integers(100, 6000))
                live.feed(stream, clips[caller][fed[caller]:fed[caller] + n], RATE)
                fed[caller] += n
        for stream, events in live.advance().items():
            got[next(c for c, s in ids.items() if s == stream)] += events
        for caller, stream in list(ids.items()):
            if fed[caller] >= clips[caller].size:
                got[caller] += live.close(stream)
                del ids[caller]
                if fed[2] == 0:
                    ids[2] = live.open()
                    assert ids[2] == stream, "the caller takes the freed slot"
    for caller in range(3):
        assert comparable(got[caller]) == expected[caller], f"caller {caller}"
    with pytest.raises(ValueError, match="is not open"):
        live.feed(ids.get(0, 0), clips[0][:100], RATE)


@pytest.mark.parametrize("kv_rings", ["auto", "int8"])
def test_advance_returns_the_frames_it_submitted(tiny_packages, clips, kv_rings):
    """advance() waits for what it submitted: a caller's steps come back in the same call as its audio (with the
    device's KV rings, and with int8 rings: a server's many callers)."""
    live = LiveStreams(tiny_packages("q4"), streams=2, silence_prefix=0.0, kv_rings=kv_rings)
    kernels = {p.kernel for p in live.engine.plan.pipelines}
    assert ("attention_int8" in kernels) == (kv_rings == "int8")
    frame = live.package.mimi_config.frame_size
    a, b = live.open(), live.open()
    live.feed(a, clips[0][:2 * frame], RATE)
    live.feed(b, clips[1][:frame], RATE)
    steps = {s: [e.frame for e in events if e.type == "step"] for s, events in live.advance().items()}
    assert steps == {a: [0, 1], b: [0]}
    live.feed(b, clips[1][frame:2 * frame], RATE)
    steps = {s: [e.frame for e in events if e.type == "step"] for s, events in live.advance().items()}
    assert steps == {b: [1]}
