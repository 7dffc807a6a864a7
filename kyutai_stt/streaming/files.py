"""A whole audio file through a Transcriber: decoded in chunks (bounded memory for hours of audio), fed, flushed."""
from __future__ import annotations

import itertools
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Executor
from pathlib import Path

from kyutai_stt.streaming.audio import read_chunks
from kyutai_stt.streaming.resample import TARGET_RATE

# Files need no per-frame latency: results are read back this many frames at a time (one GPU wait per batch).
FILE_READBACK_BATCH = 16
CHUNK_S = 1.0                # seconds of audio per Transcriber.feed call (and per progress update)
READ_AHEAD_CHUNKS = 4        # chunks a ReadAhead reads per task: one batch of them ahead of its consumer
# Threads decoding files ahead (FFmpeg and soxr release the GIL): enough to keep up with a GPU serving 64 streams.
READERS = min(8, os.cpu_count() or 1)


class ReadAhead:
    """An iterator's items (e.g. read_chunks' chunks) read on a thread pool, READ_AHEAD_CHUNKS at a time and one
    such batch ahead of the consumer: decoding files (FFmpeg and soxr work without the GIL) overlaps the GPU and
    the host's other work. Items and the error that ended the iterator, if any, come out in order."""

    def __init__(self, items: Iterator, pool: Executor, batch: int = READ_AHEAD_CHUNKS):
        self._items, self._pool, self._batch = items, pool, batch
        self._ready: deque = deque()
        self._error: BaseException | None = None
        self._next = pool.submit(self._take)

    def _take(self) -> tuple[list, BaseException | None]:
        taken = []
        try:
            taken.extend(itertools.islice(self._items, self._batch))
        except Exception as error:   # noqa: BLE001 (handed to the consumer, after the items read before it)
            return taken, error
        return taken, None

    def __iter__(self) -> ReadAhead:
        return self

    def __next__(self):
        while not self._ready:
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            if self._next is None:
                raise StopIteration
            taken, self._error = self._next.result()
            full = len(taken) == self._batch and self._error is None
            self._next = self._pool.submit(self._take) if full else None
            self._ready.extend(taken)
        return self._ready.popleft()


def take_events(events, words: list, end_of_turns: list[float]) -> None:
    """Append the decoder events' words and end-of-turn times, in order (the rest are for live display)."""
    for e in events:
        if e.type == "word":
            words.append(e)
        elif e.type == "endOfTurn":
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
