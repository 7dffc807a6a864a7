"""A whole audio file through a Transcriber: decoded in chunks (bounded memory for hours of audio), fed, flushed."""
from __future__ import annotations

from pathlib import Path

from kyutai_stt.streaming.audio import read_chunks
from kyutai_stt.streaming.resample import TARGET_RATE

# Files need no per-frame latency: results are read back this many frames at a time (one GPU wait per batch).
FILE_READBACK_BATCH = 16
CHUNK_S = 1.0                # seconds of audio per Transcriber.feed call (and per progress update)


def event_type(event) -> str:
    return event.to_dict()["type"]


def take_events(events, words: list, end_of_turns: list[float]) -> None:
    """Append the decoder events' words and end-of-turn times, in order (the rest are for live display)."""
    for e in events:
        kind = event_type(e)
        if kind == "word":
            words.append(e)
        elif kind == "endOfTurn":
            end_of_turns.append(float(e.time))


def transcribe_file(transcriber, path: Path, progress=None,
                    warn=None) -> tuple[list, list[float], float]:
    """(words, end-of-turn times, audio seconds) of one file, streamed through the transcriber."""
    transcriber.reset()
    words, eots, samples = [], [], 0

    for chunk in read_chunks(path, CHUNK_S, on_warning=warn):
        take_events(transcriber.feed(chunk, TARGET_RATE), words, eots)
        samples += len(chunk)
        if progress:
            progress.update(samples / TARGET_RATE)
    take_events(transcriber.flush(), words, eots)
    if progress:
        progress.finish(samples / TARGET_RATE)
    return words, eots, samples / TARGET_RATE
