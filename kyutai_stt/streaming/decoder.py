"""Delayed-streams decoding: the LM's text tokens and VAD probabilities, one pair per step, become events.

Host logic only (no GPU): kyutai_stt/web/stream.js is the same code for the browser, and both are pinned by the
shared vectors in tests/vectors/stream/ (token stream -> events).

Word assembly follows the official server (moshi's Rust `asr.rs`), step by step:
  - the step counter is incremented first; outputs are ignored until it reaches `delay_steps` (the model's:
    LMConfig.delay_steps, 6 for stt-1b-en_fr's 0.5 s, 31 for stt-2.6b-en's 2.5 s);
  - token 0 (word boundary) or 3 (padding) closes a non-empty word: the server's Word{start = last stop};
    any other token is appended to the open word;
  - on a 0, stop = (counter - delay_steps) / frame_rate; a closed word still waiting for its end gets it
    (the server's EndWord{stop}); the next word's start is that stop.
Events, as the official clients pair them: a Word(text, start, end) is released when its end is known, from the
EndWord, or from the next word's start when a word closes on a padding token and another follows. Partial carries
the text not yet released (closed words waiting for an end, then the open word), so a live display lags nothing.
finish() releases everything at the current time, after the host fed silence (Transcriber.flush).

End of turn (models with the semantic VAD; the 2.6B family has none, and then none is ever emitted): the semantic
VAD's head `eot_head` (2: "no voice for 2 s") gives P(no voice activity) per step,
optionally smoothed; crossing `eot_threshold` emits one EndOfTurn, re-armed by the next word (as the official
CLI prints `<endofturn>`; unlike it, nothing is emitted before the first word, so silence at the start is quiet).
Times are seconds of the caller's audio: the silence prefix the host fed first is subtracted, and clamped at 0.
A word whose first piece comes at a stop time before `hide_words_before` (stream seconds) is never reported: the
words of an audio prompt (prompt.py).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from kyutai_stt.weights.tokenizer import Tokenizer

WORD_BOUNDARY = 0
PADDING = 3


@dataclass(frozen=True)
class Word:
    text: str
    start: float
    end: float
    type: str = field(default="word", init=False)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Partial:
    text: str           # everything recognised and not yet released as a Word
    type: str = field(default="partial", init=False)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class EndOfTurn:
    time: float
    probability: float  # the (smoothed) no-voice probability that crossed the threshold
    type: str = field(default="endOfTurn", init=False)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Step:
    frame: int              # 0-based LM step
    time: float             # the step's stop time (may be < 0 during the delay)
    token: int
    vad: tuple[float, ...]  # P(no voice activity) per VAD head (0.5, 1, 2, 3 s horizons)
    type: str = field(default="step", init=False)

    def to_dict(self) -> dict:
        return {**asdict(self), "vad": list(self.vad)}


Event = Word | Partial | EndOfTurn | Step


@dataclass(frozen=True)
class DecoderConfig:
    delay_steps: int | None = None  # required by StreamDecoder: the model's (LMConfig.delay_steps; Transcriber sets it)
    frame_rate: float = 12.5
    silence_prefix: float = 0.0    # seconds of silence fed before the caller's audio
    eot_head: int = 2
    eot_threshold: float = 0.5
    eot_smoothing: float = 0.0     # exponential smoothing weight of the previous value: 0 = none (official)
    hide_words_before: float = 0.0  # stream seconds: words beginning earlier are dropped (an audio prompt's)

    @classmethod
    def from_dict(cls, raw: dict) -> DecoderConfig:
        return cls(**raw)


class StreamDecoder:
    def __init__(self, tokenizer: Tokenizer, config: DecoderConfig):
        if not isinstance(config.delay_steps, int) or config.delay_steps < 0:
            raise ValueError(f"delay_steps must be the model's delay in frames, not {config.delay_steps!r}")
        self.tokenizer = tokenizer
        self.config = config
        self.reset()

    def reset(self) -> None:
        self.steps = 0                               # the official counter: incremented before use
        self.open: list[int] = []                    # pieces of the word being read
        self.open_hidden = False                     # the open word began before hide_words_before
        self.waiting: list[tuple[list[int], float]] = []   # closed words without an end: (pieces, start)
        self.last_stop = 0.0
        self.eot_armed = False
        self.no_voice: float | None = None           # smoothed head probability
        self.partial = ""
        self._partial_of: tuple = ((), (), False)         # the pieces self.partial was decoded from
        self.audio_end: float | None = None          # the caller's audio length, once it is known (the flush)

    def step(self, token: int, vad=()) -> list[Event]:
        cfg = self.config
        token = int(token)
        self.steps += 1
        stop = (self.steps - cfg.delay_steps) / cfg.frame_rate
        events: list[Event] = [Step(self.steps - 1, self._time(stop), token, tuple(float(p) for p in vad))]
        if self.steps >= cfg.delay_steps:
            if token in (WORD_BOUNDARY, PADDING):
                if self.open and self.open_hidden:
                    self.open = []
                elif self.open:
                    if self.waiting:                     # a second Word before an EndWord: it ends the first
                        events += self._release(self.last_stop)
                    self.waiting.append((self.open, self.last_stop))
                    self.open = []
                    self.eot_armed = True
            else:
                if not self.open:
                    self.open_hidden = stop < cfg.hide_words_before
                self.open.append(token)
            if token == WORD_BOUNDARY:
                if self.waiting:
                    events += self._release(stop)
                    self.eot_armed = True
                self.last_stop = stop
        events += self._end_of_turn(vad, stop)
        return events + self._partial_changed()

    def end_of_audio(self, audio_end: float) -> None:
        """The caller's audio ends at audio_end seconds (its own time): every word released from now on, during the
        flush's silent frames or by finish(), is clamped to it, as official_events clamps every word."""
        self.audio_end = audio_end

    def finish(self, audio_end: float | None = None) -> list[Event]:
        """Release every word at the current stop time (clamped to audio_end, in the caller's seconds)."""
        if audio_end is not None:
            self.end_of_audio(audio_end)
        stop = max(self.last_stop, (self.steps - self.config.delay_steps) / self.config.frame_rate)
        if self.open and not self.open_hidden:
            self.waiting.append((self.open, self.last_stop))
        self.open = []
        return self._release(stop) + self._partial_changed()

    def _release(self, stop: float) -> list[Event]:
        out, audio_end = [], self.audio_end
        for pieces, start in self.waiting:
            start_s, end_s = self._time(start), self._time(stop)
            if audio_end is not None:
                start_s, end_s = min(start_s, audio_end), min(end_s, audio_end)
            out.append(Word(self.tokenizer.decode(pieces).strip(), start_s, max(start_s, end_s)))
        self.waiting = []
        return [w for w in out if w.text]

    def _end_of_turn(self, vad, stop: float) -> list[Event]:
        cfg = self.config
        if len(vad) <= cfg.eot_head:
            return []
        p = float(vad[cfg.eot_head])
        self.no_voice = p if self.no_voice is None else cfg.eot_smoothing * self.no_voice + (1 - cfg.eot_smoothing) * p
        if self.eot_armed and self.no_voice > cfg.eot_threshold:
            self.eot_armed = False
            return [EndOfTurn(self._time(stop), self.no_voice)]
        return []

    def _partial_changed(self) -> list[Event]:
        # Most steps change no piece (padding, or a boundary closing a word): nothing to decode then.
        of = (tuple(tuple(p) for p, _ in self.waiting), tuple(self.open), self.open_hidden)
        if of == self._partial_of:
            return []
        self._partial_of = of
        texts = [self.tokenizer.decode(p).strip() for p, _ in self.waiting]
        texts += [] if self.open_hidden else [self.tokenizer.decode(self.open).strip()]
        text = " ".join(t for t in texts if t)
        if text == self.partial:
            return []
        self.partial = text
        return [Partial(text)]

    def _time(self, t: float) -> float:
        return max(0.0, t - self.config.silence_prefix)
