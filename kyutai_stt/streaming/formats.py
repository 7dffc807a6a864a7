"""Transcript writers: text, json, srt, vtt, from a list of words (anything with .text, .start, .end in seconds)
and, optionally, the times of the ends of turn the model detected.

text  The words joined by spaces, one line per turn: a line ends at each end of turn, and the text ends with a
      newline. An end of turn at time t ends the line before the first word starting at or after t; ends of turn
      before the first word or after the last add nothing. No words: empty text.
json  One object (indent 1, UTF-8, non-ASCII kept):
        {"format": "kyutai-stt-transcript", "version": 1,
         "text": the text format without its final newline (turns separated by "\\n"),
         "words": [{"text", "start", "end"}, ...]      seconds, rounded to the millisecond,
         "end_of_turns": [t, ...]                      seconds, rounded to the millisecond,
         "model": {...}, "synthetic": bool, "audio": {...}}
      "model" and "audio" are what the caller passes (the CLI: the package path, variant and quant; the file's
      path, sample rate, channels, codec and duration); "synthetic" is true when the model has random weights.
srt / vtt
      Subtitle cues grouping consecutive words. A cue ends at an end of turn, before a pause longer than
      PAUSE_S, when its text would need more than MAX_LINES lines of MAX_LINE_CHARS characters, or when it would
      last longer than MAX_CUE_S. Lines wrap at spaces; a word longer than a line gets a line of its own. A cue
      runs from its first word's start to its last word's end. SRT times are HH:MM:SS,mmm, VTT times
      HH:MM:SS.mmm (hours grow past 99 if needed); VTT text escapes &, < and >.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

PAUSE_S = 0.8            # a silence longer than this between two words starts a new cue
MAX_LINE_CHARS = 42      # characters per subtitle line (the common broadcast limit)
MAX_LINES = 2            # lines per cue
MAX_CUE_S = 5.0          # the longest a cue may last
EPS = 1e-6              # seconds: limits are compared with this slack, so 1.4 -> 2.2 is a pause of 0.8, not more
JSON_FORMAT = "kyutai-stt-transcript"
JSON_VERSION = 1


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    lines: tuple[str, ...]


def _turns(words: Sequence, end_of_turns: Iterable[float]) -> list[list]:
    """The words split into turns: a turn ends before the first word starting at or after each end of turn."""
    eots = sorted(end_of_turns)
    turns, current, k = [], [], 0
    for word in words:
        crossed = False
        while k < len(eots) and eots[k] <= word.start + EPS:
            crossed, k = True, k + 1
        if crossed and current:
            turns.append(current)
            current = []
        current.append(word)
    if current:
        turns.append(current)
    return turns


def _clean(text: str) -> str:
    return " ".join(str(text).split())


def to_text(words: Sequence, end_of_turns: Iterable[float] = ()) -> str:
    lines = [" ".join(t for t in (_clean(w.text) for w in turn) if t) for turn in _turns(words, end_of_turns)]
    return "".join(line + "\n" for line in lines)


def to_json(words: Sequence, end_of_turns: Iterable[float] = (), *, model: dict | None = None,
            synthetic: bool = False, audio: dict | None = None) -> str:
    eots = sorted(end_of_turns)
    doc = {
        "format": JSON_FORMAT, "version": JSON_VERSION,
        "text": to_text(words, eots).rstrip("\n"),
        "words": [{"text": _clean(w.text), "start": round(float(w.start), 3), "end": round(float(w.end), 3)}
                  for w in words],
        "end_of_turns": [round(float(t), 3) for t in eots],
        "model": model or {}, "synthetic": bool(synthetic), "audio": audio or {},
    }
    return json.dumps(doc, ensure_ascii=False, indent=1) + "\n"


def _wrap(texts: list[str]) -> list[str] | None:
    """Greedy wrap into lines of MAX_LINE_CHARS; None when more than MAX_LINES lines are needed."""
    lines: list[str] = []
    for t in texts:
        if lines and len(lines[-1]) + 1 + len(t) <= MAX_LINE_CHARS:
            lines[-1] += " " + t
        else:
            lines.append(t)
    return lines if len(lines) <= MAX_LINES else None


def cues(words: Sequence, end_of_turns: Iterable[float] = ()) -> list[Cue]:
    out: list[Cue] = []
    for turn in _turns(words, end_of_turns):
        group: list = []
        for word in turn:
            text = _clean(word.text)
            if not text:
                continue
            if group:
                too_late = word.start - group[-1].end > PAUSE_S + EPS
                too_long = word.end - group[0].start > MAX_CUE_S + EPS
                too_wide = _wrap([_clean(w.text) for w in group] + [text]) is None
                if too_late or too_long or too_wide:
                    out.append(_cue(group))
                    group = []
            group.append(word)
        if group:
            out.append(_cue(group))
    return out


def _cue(group: list) -> Cue:
    texts = [_clean(w.text) for w in group]
    lines = _wrap(texts) or [" ".join(texts)]       # a lone word wider than two lines stays whole
    start = float(group[0].start)
    return Cue(start, max(start, float(group[-1].end)), tuple(lines))


def timestamp(seconds: float, separator: str) -> str:
    """HH:MM:SS<separator>mmm, rounded to the millisecond (negative times clamp to zero)."""
    ms = max(0, round(float(seconds) * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{separator}{ms:03d}"


def to_srt(words: Sequence, end_of_turns: Iterable[float] = ()) -> str:
    blocks = [f"{i}\n{timestamp(c.start, ',')} --> {timestamp(c.end, ',')}\n" + "\n".join(c.lines) + "\n"
              for i, c in enumerate(cues(words, end_of_turns), 1)]
    return "\n".join(blocks)


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_vtt(words: Sequence, end_of_turns: Iterable[float] = ()) -> str:
    blocks = [f"{timestamp(c.start, '.')} --> {timestamp(c.end, '.')}\n"
              + "\n".join(_vtt_escape(line) for line in c.lines) + "\n"
              for c in cues(words, end_of_turns)]
    return "\n".join(["WEBVTT\n", *blocks])


FORMATS = ("text", "json", "srt", "vtt")
EXTENSIONS = {"text": ".txt", "json": ".json", "srt": ".srt", "vtt": ".vtt"}


def render(fmt: str, words: Sequence, end_of_turns: Iterable[float] = (), *, model: dict | None = None,
           synthetic: bool = False, audio: dict | None = None) -> str:
    """The transcript in one of FORMATS (model/synthetic/audio are used by json only)."""
    if fmt == "json":
        return to_json(words, end_of_turns, model=model, synthetic=synthetic, audio=audio)
    writer = {"text": to_text, "srt": to_srt, "vtt": to_vtt}.get(fmt)
    if writer is None:
        raise ValueError(f"unknown transcript format {fmt!r}; one of {', '.join(FORMATS)}")
    return writer(words, end_of_turns)
