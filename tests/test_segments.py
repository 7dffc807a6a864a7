"""Long recordings cut at pauses and run as a batch (streaming/segments.py): where the cuts fall, how the pieces are
stitched, and, on the tiny model, that each segment's words equal a run of that segment alone, moved by its start."""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from kyutai_stt.streaming.batch import BatchTranscriber, Transcript
from kyutai_stt.streaming.decoder import Word
from kyutai_stt.streaming.files import FILE_READBACK_BATCH
from kyutai_stt.streaming.segments import (
    FRAME,
    MIN_SEGMENT_S,
    Segment,
    cut_points,
    segment_length,
    stitch,
    transcribe_segmented,
)
from kyutai_stt.streaming.transcriber import Transcriber

RATE = 24_000
AUDIO = Path(__file__).resolve().parent / "fixtures" / "speech_en_fr_24k.wav"


def test_cuts_fall_in_the_pauses_on_frame_boundaries():
    rng = np.random.default_rng(0)
    samples = (0.3 * rng.standard_normal(110 * RATE)).astype(np.float32)
    pauses = [27.0, 61.0, 88.5]      # 0.2 s of near-silence each, within 5 s of the targets 30, 57, 91 s
    for t in pauses:
        samples[int(t * RATE):int((t + 0.2) * RATE)] *= 1e-3
    segments = cut_points(samples, 30.0)
    assert [s.start for s in segments[1:]] == [s.end for s in segments[:-1]]
    assert segments[0].start == 0 and segments[-1].end == samples.size
    assert all(s.start % FRAME == 0 for s in segments)
    cuts = [s.start / RATE for s in segments[1:]]
    assert len(cuts) == 3 and all(t <= c <= t + 0.2 for c, t in zip(cuts, pauses)), cuts
    assert cut_points(samples[:40 * RATE], 30.0) == [Segment(0, 40 * RATE)]     # under 1.5 segments: whole
    assert segment_length(600, 32) == 18.75 and segment_length(60, 32) == MIN_SEGMENT_S


def test_stitch_moves_times_and_drops_the_flush_ends_of_turn():
    first = Transcript([Word("a", 0.5, 0.9)], [1.0, 2.4], 2.0)           # 2.4: in its flush, after its 2 s
    last = Transcript([Word("b", 0.1, 0.4)], [1.5], 1.0)                  # the last segment keeps its flush's
    whole = stitch([Segment(0, 2 * RATE), Segment(2 * RATE, 3 * RATE)], [first, last])
    assert [(w.text, w.start, w.end) for w in whole.words] == [("a", 0.5, 0.9), ("b", 2.1, 2.4)]
    assert whole.end_of_turns == [1.0, 3.5] and whole.seconds == 3.0


def test_each_segment_equals_a_run_of_it_alone(tiny_packages):
    package = tiny_packages("q4")
    with wave.open(str(AUDIO)) as w:
        samples = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
    samples = samples[int(0.3 * RATE):int(2.1 * RATE)]              # 1.8 s of speech: two segments
    segments = cut_points(samples, segment_s=0.9, search_s=0.2)
    assert len(segments) == 2 and segments[1].start % FRAME == 0
    batch = BatchTranscriber(package, streams=2, silence_prefix=0.2)
    (whole,) = transcribe_segmented(batch, [samples], segment_s=0.9, search_s=0.2)
    alone = Transcriber(package, silence_prefix=0.2, readback_batch=FILE_READBACK_BATCH)
    expected = []
    for s in segments:
        alone.reset()
        events = alone.feed(samples[s.start:s.end], RATE) + alone.flush()
        expected += [(e.text, e.start + s.start / RATE, e.end + s.start / RATE) for e in events
                     if e.to_dict()["type"] == "word"]
    assert [(w.text, w.start, w.end) for w in whole.words] == expected
    assert len(expected) >= 2, "the segments have words (equal empty lists would prove little)"
    assert whole.seconds == samples.size / RATE
