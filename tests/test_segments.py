"""Long recordings cut at pauses and run as a batch (streaming/segments.py): where the cuts fall, how the pieces are
stitched, and that each segment's words equal a run of that segment alone, moved by its start."""
from __future__ import annotations

import fake_model
import numpy as np
from audio_helpers import sine

from kyutai_stt.streaming.batch import Transcript
from kyutai_stt.streaming.decoder import Word
from kyutai_stt.streaming.segments import (
    FRAME,
    MIN_SEGMENT_S,
    Segment,
    cut_points,
    segment_count,
    segment_length,
    stitch,
    transcribe_segmented,
)

RATE = 24_000


def test_cuts_fall_in_the_pauses_on_frame_boundaries():
    rng = np.random.default_rng(0)
    samples = (0.3 * rng.standard_normal(110 * RATE)).astype(np.float32)
    pauses = [25.0, 57.5, 80.0]      # 0.2 s of near-silence each, within 3.75 s (an eighth of 30 s) of the targets
    #                                  27.5, 55 and 82.5 s (110 s in 4 even parts)
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
    # As many segments as planned, never more than the streams: none is left to run alone after the others.
    assert len(cut_points(samples, 30.0, max_segments=3)) == 3
    for seconds, streams in [(600, 40), (610, 41), (610, 40), (600, 64), (3600, 64), (20, 4)]:
        assert segment_count(seconds, segment_length(seconds, streams)) <= streams, (seconds, streams)
    # The command plans segment_count(d, MIN_SEGMENT_S) streams for a file: each then gets one segment.
    assert segment_count(610, segment_length(610, segment_count(610, MIN_SEGMENT_S))) == 41
    rng_long = (0.3 * rng.standard_normal(600 * RATE)).astype(np.float32)
    assert len(cut_points(rng_long, segment_length(600, 40))) == 40 == segment_count(600, MIN_SEGMENT_S)


def test_stitch_moves_times_and_drops_the_flush_ends_of_turn():
    first = Transcript([Word("a", 0.5, 0.9)], [1.0, 2.4], 2.0)           # 2.4: in its flush, after its 2 s
    last = Transcript([Word("b", 0.1, 0.4)], [1.5], 1.0)                  # the last segment keeps its flush's
    whole = stitch([Segment(0, 2 * RATE), Segment(2 * RATE, 3 * RATE)], [first, last])
    assert [(w.text, w.start, w.end) for w in whole.words] == [("a", 0.5, 0.9), ("b", 2.1, 2.4)]
    assert whole.end_of_turns == [1.0, 3.5] and whole.seconds == 3.0


def test_each_segment_equals_a_run_of_it_alone():
    """transcribe_segmented hands the batch exactly each segment's samples and moves each segment's words by its
    start: on the fake recogniser (tests/fake_model.py: one word per second of audio, named by its frequency),
    the stitched words equal runs of each segment alone, moved into place. That a segment on a stream of a batch
    equals a run of it alone on the real engine is tests/test_batch.py's equality, on the same BatchTranscriber."""
    tones = [sine(hz, RATE, 2.0) for hz in (300, 700, 1500)]
    pause = np.zeros(int(0.24 * RATE), np.float32)
    samples = np.concatenate([tones[0], pause, tones[1], pause, tones[2]]).astype(np.float32)
    segments = cut_points(samples, segment_s=2.2, search_s=0.4)
    assert len(segments) == 3 and all(s.start % FRAME == 0 for s in segments)
    batch = fake_model.FakeBatchTranscriber("unused", streams=3)
    (whole,) = transcribe_segmented(batch, [samples], segment_s=2.2, search_s=0.4)
    alone = fake_model.FakeTranscriber("unused")
    expected = []
    for s in segments:
        alone.reset()
        events = alone.feed(samples[s.start:s.end], RATE) + alone.flush()
        expected += [(e.text, e.start + s.start / RATE, e.end + s.start / RATE) for e in events
                     if isinstance(e, fake_model.Word)]
    assert [(w.text, w.start, w.end) for w in whole.words] == expected
    assert [w.text for w in whole.words][:2] == ["300hz", "300hz"] and "1500hz" in [w.text for w in whole.words]
    assert whole.seconds == samples.size / RATE
