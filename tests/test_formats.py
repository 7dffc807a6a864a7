"""Transcript writers: exact output on small word lists."""
from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from kyutai_stt.streaming import formats
from kyutai_stt.streaming.formats import render, timestamp, to_json, to_srt, to_text, to_vtt


@dataclass
class W:
    text: str
    start: float
    end: float


TALK = [W("Hello", 0.5, 0.9), W("world.", 1.0, 1.4), W("How", 2.6, 2.8), W("are", 2.85, 3.0), W("you?", 3.05, 3.3)]


def test_text_one_line_per_turn():
    assert to_text(TALK, [1.6]) == "Hello world.\nHow are you?\n"
    assert to_text(TALK) == "Hello world. How are you?\n"
    assert to_text([]) == "" and to_text([], [1.0]) == ""


def test_text_ends_of_turn_before_the_first_or_after_the_last_word_add_nothing():
    assert to_text(TALK, [0.1, 9.0]) == "Hello world. How are you?\n"
    assert to_text(TALK, [1.5, 1.6, 2.0]) == "Hello world.\nHow are you?\n"      # several: one break
    assert to_text(TALK, [2.6]) == "Hello world.\nHow are you?\n"              # at the word's start: before it
    assert to_text(TALK, [2.61]) == "Hello world. How\nare you?\n"


def test_text_collapses_whitespace_inside_words():
    assert to_text([W(" a ", 0, 1), W("b\n", 1, 2)]) == "a b\n"


def test_srt_and_vtt_break_at_an_end_of_turn():
    srt = to_srt([W("one", 0.0, 0.4), W("two", 0.5, 0.9)], [0.45])
    assert srt == "1\n00:00:00,000 --> 00:00:00,400\none\n\n2\n00:00:00,500 --> 00:00:00,900\ntwo\n"


def test_srt_and_vtt_break_at_a_pause_longer_than_0_8_s():
    expected_srt = ("1\n00:00:00,500 --> 00:00:01,400\nHello world.\n\n"
                    "2\n00:00:02,600 --> 00:00:03,300\nHow are you?\n")
    assert to_srt(TALK) == expected_srt                       # pause 1.4 -> 2.6 = 1.2 s
    assert to_vtt(TALK) == ("WEBVTT\n\n00:00:00.500 --> 00:00:01.400\nHello world.\n\n"
                            "00:00:02.600 --> 00:00:03.300\nHow are you?\n")
    exactly = [W("a", 0.6, 1.4), W("b", 2.2, 2.5)]            # pause exactly 0.8 s: same cue
    assert to_srt(exactly) == "1\n00:00:00,600 --> 00:00:02,500\na b\n"
    longer = [W("a", 0.6, 1.4), W("b", 2.21, 2.5)]
    assert to_srt(longer).count("-->") == 2


def test_cues_wrap_at_42_characters_and_hold_two_lines():
    words = [W(f"w{i:03d}", 0.2 * i, 0.2 * i + 0.15) for i in range(20)]    # 4 characters each
    # 8 words make 39 characters (9 would make 44): two lines of 8 words, then a new cue
    cues = formats.cues(words)
    assert [c.lines for c in cues] == [
        (" ".join(f"w{i:03d}" for i in range(8)), " ".join(f"w{i:03d}" for i in range(8, 16))),
        (" ".join(f"w{i:03d}" for i in range(16, 20)),)]
    assert all(len(line) <= formats.MAX_LINE_CHARS for c in cues for line in c.lines)
    assert (cues[0].start, cues[0].end) == (0.0, pytest.approx(15 * 0.2 + 0.15))
    assert cues[1].start == pytest.approx(16 * 0.2)


def test_cues_last_at_most_5_s():
    words = [W(str(i), float(i), i + 0.9) for i in range(10)]      # pauses of 0.1 s, one word per second
    cues = formats.cues(words)
    assert [c.lines for c in cues] == [("0 1 2 3 4",), ("5 6 7 8 9",)]
    assert to_srt(words) == ("1\n00:00:00,000 --> 00:00:04,900\n0 1 2 3 4\n\n"
                             "2\n00:00:05,000 --> 00:00:09,900\n5 6 7 8 9\n")


def test_a_word_wider_than_a_line_gets_its_own_cue_lines():
    long = "x" * 50
    cues = formats.cues([W("a", 0, 0.1), W(long, 0.2, 0.3), W("b", 0.4, 0.5)])
    assert [c.lines for c in cues] == [("a", long), ("b",)]


def test_timestamps():
    assert timestamp(0, ",") == "00:00:00,000"
    assert timestamp(1.2, ",") == "00:00:01,200"
    assert timestamp(1.2, ".") == "00:00:01.200"
    assert timestamp(59.9996, ",") == "00:01:00,000"               # rounding carries into the minutes
    assert timestamp(3723.4561, ".") == "01:02:03.456"
    assert timestamp(360000, ",") == "100:00:00,000"
    assert timestamp(-0.01, ",") == "00:00:00,000"


def test_vtt_escapes_markup():
    assert to_vtt([W("<b>&", 0, 1)]) == "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n&lt;b&gt;&amp;\n"
    assert to_srt([W("<b>&", 0, 1)]) == "1\n00:00:00,000 --> 00:00:01,000\n<b>&\n"


def test_empty_subtitles():
    assert to_srt([]) == ""
    assert to_vtt([]) == "WEBVTT\n"


def test_json():
    doc = json.loads(to_json(TALK[:2] + [W("été", 2.6, 2.81234)], [2.0, 1.5004], model={"package": "p"},
                             synthetic=True, audio={"path": "a.wav"}))
    assert doc == {
        "format": "kyutai-stt-transcript", "version": 1,
        "text": "Hello world.\nété",
        "words": [{"text": "Hello", "start": 0.5, "end": 0.9}, {"text": "world.", "start": 1.0, "end": 1.4},
                  {"text": "été", "start": 2.6, "end": 2.812}],
        "end_of_turns": [1.5, 2.0],
        "model": {"package": "p"}, "synthetic": True, "audio": {"path": "a.wav"}}
    assert "été" in to_json([W("été", 0, 1)])                         # UTF-8 kept, not \\u escapes


def test_render_dispatches_and_refuses_unknown_formats():
    assert render("text", TALK, [1.6]) == to_text(TALK, [1.6])
    assert render("srt", TALK) == to_srt(TALK)
    assert render("vtt", TALK) == to_vtt(TALK)
    assert json.loads(render("json", TALK, synthetic=True))["synthetic"] is True
    with pytest.raises(ValueError, match="unknown transcript format 'doc'"):
        render("doc", TALK)
