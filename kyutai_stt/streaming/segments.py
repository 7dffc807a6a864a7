"""Long recordings as a batch: cut at pauses into segments that run side by side on the streams of one
BatchTranscriber, then stitched back by time (`kyutai-stt transcribe --parallel-segments`; docs/transcribe.md).

A recording is cut into about as many segments as the batch has streams (every stream busy), never more (a segment
left over would run alone after the others), but none shorter than MIN_SEGMENT_S: the context a segment loses is
the price of its speed. A cut falls at the quietest frame (lowest RMS over 80 ms) within SEARCH_S (at most an
eighth of a segment) of evenly spaced targets, on a frame boundary, so that segment times stay whole frames and the
pieces run about as long as each other (the batch lasts as long as its longest).
Each segment is then transcribed exactly as a recording of its own (its silence prefix, its flush:
streaming/batch.py), and its words are moved by its start. What a cut changes, against
one pass over the whole recording:
- the model starts afresh at each segment: it has none of the context before the cut (the LM sees up to 60 s of
  context; a speaker's name or topic from earlier no longer steers it);
- a word that straddles the cut (a cut inside speech, where no pause was found) is heard in two halves;
- the flush ends every segment with silence, so the end-of-turn detector may fire there: ends of turn after a
  segment's last sample are dropped, but for the last segment's.
The words of each segment equal a run of that segment alone: tests/test_segments.py checks the cutting and
stitching, tests/test_batch.py that a recording on a stream of a batch equals a run of it alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from itertools import accumulate

import numpy as np

from kyutai_stt.streaming.batch import BatchTranscriber, Transcript
from kyutai_stt.streaming.resample import TARGET_RATE

MIN_SEGMENT_S = 15.0    # no segment is planned shorter (10 minutes on 32 streams: 18.75 s segments)
SEARCH_S = 5.0          # a cut is looked for within this much of each target,
SEARCH_FRACTION = 0.125  # and within this fraction of the segment length (15 s segments: 1.875 s)
FRAME = 1920            # samples of one 80 ms frame at 24 kHz: cuts fall on frame boundaries


@dataclass(frozen=True)
class Segment:
    start: int           # first sample
    end: int             # one past the last sample


def segment_length(seconds: float, streams: int) -> float:
    """The planned segment length for a recording of `seconds` on `streams` streams."""
    return max(MIN_SEGMENT_S, seconds / streams)


def segment_count(seconds: float, segment_s: float) -> int:
    """How many segments cut_points makes of a recording of `seconds` at about segment_s each: the nearest whole
    number, so that no piece is much shorter or longer than planned (at most `streams` with segment_length's)."""
    if seconds < 1.5 * segment_s:
        return 1
    return math.ceil(seconds / segment_s - 0.5)          # >= 1 from 1.5 segments on


def cut_points(samples: np.ndarray, segment_s: float, search_s: float = SEARCH_S,
               max_segments: int | None = None) -> list[Segment]:
    """Segments covering samples (24 kHz mono): segment_count's many (at most max_segments), cut at the quietest
    frame within search_s (and SEARCH_FRACTION of segment_s) of evenly spaced targets, so that the pieces run about
    as long side by side; one segment for a recording shorter than 1.5 segment_s."""
    frames = samples.size // FRAME
    count = min(segment_count(samples.size / TARGET_RATE, segment_s), max_segments or frames)
    if count < 2 or frames < 2:
        return [Segment(0, samples.size)]
    energy = np.square(samples[:frames * FRAME].reshape(frames, FRAME), dtype=np.float64).mean(axis=1)
    # The window stays a fraction of the segment: a piece runs at most 2 windows longer than planned.
    search = round(min(search_s, segment_s * SEARCH_FRACTION) * TARGET_RATE / FRAME)
    cuts: list[int] = []
    for k in range(1, count):
        target = round(frames * k / count)
        lo, hi = max(target - search, (cuts[-1] if cuts else 0) + 1), min(target + search, frames - 1)
        cut = lo + int(np.argmin(energy[lo:hi + 1]))       # the first quietest frame: deterministic on ties
        cuts.append(cut)
    bounds = [0, *(c * FRAME for c in cuts), samples.size]
    return [Segment(a, b) for a, b in zip(bounds, bounds[1:])]


def stitch(segments: list[Segment], transcripts: list[Transcript]) -> Transcript:
    """One transcript of the whole recording: each segment's words and ends of turn moved by its start; ends of
    turn in a segment's flush dropped, but for the last segment's."""
    whole = Transcript(seconds=(segments[-1].end - segments[0].start) / TARGET_RATE)
    for i, (segment, t) in enumerate(zip(segments, transcripts)):
        offset = segment.start / TARGET_RATE
        whole.words += [replace(w, start=w.start + offset, end=w.end + offset) for w in t.words]
        last = i == len(segments) - 1
        whole.end_of_turns += [e + offset for e in t.end_of_turns if last or e <= t.seconds]
    return whole


def transcribe_segmented(batch: BatchTranscriber, recordings: list[np.ndarray], on_done=None,
                         segment_s: float | None = None, search_s: float = SEARCH_S) -> list[Transcript]:
    """Every recording (24 kHz mono samples) cut into segments (segment_s: by default segment_length's), all
    segments of all recordings run as one batch; on_done(index, transcript) as each recording's last segment
    finishes; returned in input order."""
    plan = [cut_points(r, segment_s or segment_length(r.size / TARGET_RATE, batch.streams), search_s,
                       max_segments=batch.streams) for r in recordings]
    sources, owner = [], []
    for i, (recording, segments) in enumerate(zip(recordings, plan)):
        sources += [recording[s.start:s.end] for s in segments]
        owner += [i] * len(segments)
    pending = [len(segments) for segments in plan]
    parts: dict[int, Transcript] = {}
    results: dict[int, Transcript] = {}
    firsts = list(accumulate([0, *pending[:-1]]))            # each recording's first segment among the sources

    def done(index: int, transcript: Transcript) -> None:
        parts[index] = transcript
        r = owner[index]
        pending[r] -= 1
        if pending[r] == 0:
            first = firsts[r]
            results[r] = stitch(plan[r], [parts.pop(first + k) for k in range(len(plan[r]))])
            if on_done:
                on_done(r, results[r])

    batch.transcribe(sources, on_done=done)
    return [results[i] for i in range(len(recordings))]
