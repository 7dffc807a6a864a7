"""BatchTranscriber (streaming/batch.py): recordings of different lengths on fewer streams than recordings, so
streams take a new recording while their last one's results are still in flight; each transcript equals a
one-stream Transcriber's on the same recording: the same words, times and ends of turn."""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
from audio_helpers import write_audio

from kyutai_stt.errors import AudioError
from kyutai_stt.streaming.batch import BatchTranscriber
from kyutai_stt.streaming.files import FILE_READBACK_BATCH
from kyutai_stt.streaming.prompt import Prompt
from kyutai_stt.streaming.transcriber import Transcriber

AUDIO = Path(__file__).resolve().parent / "fixtures" / "speech_en_fr_24k.wav"
RATE = 24_000
SILENCE_PREFIX = 0.2          # short lead-ins: the comparison, not the model's defaults, is what is tested
# (start, seconds) of the fixture audio: three recordings of different lengths for two streams.
CLIPS = [(0.3, 1.2), (2.0, 0.5), (4.1, 0.8)]


@pytest.fixture(scope="module")
def clips():
    with wave.open(str(AUDIO)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
    return [pcm[int(a * RATE):int((a + n) * RATE)] for a, n in CLIPS]


def one_by_one(package, clips, prompt=None, kv_rings="auto"):
    # The whole-frame plan, a frame at a time.
    transcriber = Transcriber(package, silence_prefix=SILENCE_PREFIX, readback_batch=FILE_READBACK_BATCH,
                              prompt=prompt, mimi_frames=1, kv_rings=kv_rings)
    if kv_rings == "int8":
        assert "attention_int8" in {p.kernel for p in transcriber.engine.plan.pipelines}
    out = []
    for samples in clips:
        events = transcriber.feed(samples, RATE) + transcriber.flush()
        out.append(([e.to_dict() for e in events if e.to_dict()["type"] == "word"],
                    [float(e.time) for e in events if e.to_dict()["type"] == "endOfTurn"]))
    return out


PROMPT = "the quick brown fox"


@pytest.fixture(scope="module")
def prompted_runs(tiny_packages, clips):
    """Each clip on a one-stream Transcriber with PROMPT: what every batch must equal."""
    return one_by_one(tiny_packages("q4"), clips, Prompt(PROMPT))


@pytest.fixture(scope="module")
def plain_runs(tiny_packages, clips):
    """Clips 1 and 2 on a one-stream Transcriber without a prompt."""
    return one_by_one(tiny_packages("q4"), [clips[1], clips[2]])


def words_of(transcript):
    return [w.to_dict() for w in transcript.words], transcript.end_of_turns


def test_each_recording_equals_a_one_stream_run(tiny_packages, clips, prompted_runs, tmp_path):
    """Two streams, three recordings (one of them a file), in input order, with a text prompt: each stream gets it
    at its recording's first frame (its part of the prompt input, written while the other runs). Two passes (the
    device's mimi_frames: Mimi's codes first, several frames a submission, then the LM) equal the one-stream
    whole-frame run; the next test takes one pass."""
    package = tiny_packages("q4")
    prompt, expected = Prompt(PROMPT), prompted_runs
    wav = tmp_path / "clip.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(RATE)
        w.writeframes((np.clip(clips[2], -1, 1 - 2 ** -15) * 32768).astype(np.int16).tobytes())
    sources = [clips[0], clips[1], wav]
    batch = BatchTranscriber(package, streams=2, silence_prefix=SILENCE_PREFIX, prompt=prompt)
    assert batch.mimi_frames > 1, "the device's default takes two passes"
    finished = []
    got = batch.transcribe(sources, on_done=lambda i, t: finished.append(i))
    assert sorted(finished) == [0, 1, 2] and finished[0] == 1, "the short one first; its stream took the third"
    for i, (transcript, (words, eots)) in enumerate(zip(got, expected)):
        assert words_of(transcript) == (words, eots), f"recording {i}"
        assert transcript.seconds == len(clips[i]) / RATE
    assert sum(len(w) for w, _ in expected) >= 3, "the recordings have words (equal empty lists would prove little)"
    again = batch.transcribe(sources[1:2])                 # the same batch transcriber, a second call
    assert [words_of(t) for t in again] == expected[1:2]


def test_streams_argument_is_checked(tiny_packages):
    with pytest.raises(ValueError, match="streams must be a positive integer"):
        BatchTranscriber(tiny_packages("q4"), streams=0)
    with pytest.raises(ValueError, match="mimi_frames must be a positive integer"):
        BatchTranscriber(tiny_packages("q4"), mimi_frames=0)


@pytest.mark.parametrize("mimi_frames", [None, 1])
def test_a_bad_file_stops_alone(tiny_packages, clips, plain_runs, tmp_path, mimi_frames):
    """A file with NaN samples mid-way: its stream moves on, the other recordings equal one-stream runs, on_done
    sees all three, and transcribe() raises the file's error at the end (or returns it, raise_errors=False). Two
    passes (the device's mimi_frames: the file fails in Mimi's) and one (mimi_frames=1: the whole-frame plan)."""
    package = tiny_packages("q4")
    bad = tmp_path / "bad.wav"
    samples = clips[0].astype(np.float32)                           # 1.2 s
    samples[RATE + 100] = np.nan                                    # in its second 1 s chunk
    write_audio(bad, samples, RATE, "wavf32")
    expected = plain_runs
    batch = BatchTranscriber(package, streams=2, silence_prefix=SILENCE_PREFIX, mimi_frames=mimi_frames)
    seen = {}
    with pytest.raises(AudioError, match="NaN"):
        batch.transcribe([clips[1], bad, clips[2]], on_done=lambda i, t: seen.update({i: t}))
    assert sorted(seen) == [0, 1, 2] and seen[1].error is not None and seen[1].words == []
    assert [words_of(seen[0]), words_of(seen[2])] == expected
    (result,) = batch.transcribe([bad], raise_errors=False)
    assert isinstance(result.error, AudioError) and result.words == []


def test_int8_rings_batch_equals_one_stream_runs_with_int8_rings(tiny_packages, clips):
    """kv_rings="int8" (attention_int8.wgsl): a batch's transcripts equal one-stream runs with the same rings."""
    package = tiny_packages("q4")
    expected = one_by_one(package, clips, kv_rings="int8")
    batch = BatchTranscriber(package, streams=2, silence_prefix=SILENCE_PREFIX, kv_rings="int8")
    assert "attention_int8" in {p.kernel for p in batch.engine.plan.pipelines}
    assert [words_of(t) for t in batch.transcribe(clips)] == expected
    assert sum(len(w) for w, _ in expected) >= 3, "the recordings have words (equal empty lists would prove little)"
