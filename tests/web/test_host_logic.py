"""The browser's host logic equals Python's: the delayed-streams decoder (web/stream.js) and the stream framing
(web/framing.js) on the shared vectors, and the transcript downloads (web/formats.js) against
kyutai_stt/streaming/formats.py."""
from __future__ import annotations

import json
from pathlib import Path

import make_stream_vectors
import numpy as np
import pytest

from kyutai_stt.streaming import formats

ROOT = Path(__file__).resolve().parents[2]
VECTORS = sorted((ROOT / "tests" / "vectors" / "stream").glob("*.json"))

DECODE = """async (vector) => {
  const {StreamDecoder} = await import('/stream.js');
  const decoder = new StreamDecoder(vector.tokenizer, vector.config);
  const events = [];
  for (const [token, vad] of vector.steps) events.push(...decoder.step(token, vad));
  events.push(...decoder.finish(vector.audio_end));
  return events.filter((e) => e.type !== 'step');
}"""


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_stream_js_matches_vector(page, path):
    vector = json.loads(path.read_text(encoding="utf-8"))
    got = page.page.evaluate(DECODE, vector)
    assert make_stream_vectors.events_equal(got, vector["events"]), f"\n got:      {got}\n expected: {vector['events']}"


FRAMING = json.loads((ROOT / "tests" / "vectors" / "framing.json").read_text())["cases"]
FRAME = """async (c) => {
  const {Framer} = await import('/framing.js');
  const framer = new Framer(c.frame_size, c.prefix);
  return c.operations.map(([op, arg]) => (op === 'push' ? framer.push(Float32Array.from(arg)) : framer.flush(arg))
    .map((frame) => Array.from(frame)));
}"""


@pytest.mark.parametrize("case", FRAMING, ids=lambda c: c["name"])
def test_framing_js_matches_vector(page, case):
    assert page.page.evaluate(FRAME, case) == case["frames"]


class W:
    def __init__(self, text, start, end):
        self.text, self.start, self.end = text, start, end


def random_transcript(seed: int):
    """Words on the 80 ms grid the decoder produces, with pauses, long words and ends of turn."""
    rng = np.random.default_rng(seed)
    vocabulary = ["le", "chat", "the", "weather", "is", "extraordinarily", "nice", "café", "a&b", "<ok>", "x" * 50]
    words, t = [], 0.0
    for _ in range(int(rng.integers(0, 40))):
        t += 0.08 * int(rng.choice([0, 1, 2, 15]))
        end = t + 0.08 * int(rng.integers(0, 6))
        words.append(W(str(rng.choice(vocabulary)), round(t, 2), round(end, 2)))
        t = end
    turns = sorted(round(0.08 * int(k), 2) for k in rng.integers(0, max(1, int(t / 0.08)) + 2, int(rng.integers(0, 4))))
    return words, turns


RENDER = """async ([words, turns]) => {
  const f = await import('/formats.js');
  return {txt: f.toText(words, turns), srt: f.toSrt(words, turns), vtt: f.toVtt(words, turns)};
}"""


@pytest.mark.parametrize("seed", range(6))
def test_formats_js_equal_python(page, seed):
    words, turns = random_transcript(seed)
    got = page.page.evaluate(RENDER, [[vars(w) for w in words], turns])
    assert got["txt"] == formats.to_text(words, turns)
    assert got["srt"] == formats.to_srt(words, turns)
    assert got["vtt"] == formats.to_vtt(words, turns)
