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
  vector.steps.forEach(([token, vad], k) => {
    if (k === vector.end_of_audio_step) decoder.endOfAudio(vector.audio_end);   // the flush begins
    events.push(...decoder.step(token, vad));
  });
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


# ---- prompts: web/tokenizer.js encode, web/prompt.js, the decoder's hiding ------------------------------------------

ENCODE = """async ([tokenizer, texts]) => {
  const {Tokenizer} = await import('/tokenizer.js');
  const t = new Tokenizer(tokenizer);
  return texts.map((text) => t.encode(text));
}"""


@pytest.fixture(scope="module")
def synthetic_tokenizer(tmp_path_factory):
    from kyutai_stt.weights import synthetic
    from kyutai_stt.weights.tokenizer import read_sentencepiece
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.model"
    synthetic.write_tokenizer(path)
    return read_sentencepiece(path)


def test_tokenizer_js_encodes_as_sentencepiece(page, synthetic_tokenizer):
    """The shared vectors (tests/test_tokenizer.py checks them against sentencepiece itself)."""
    vectors = json.loads((ROOT / "tests" / "vectors" / "tokenizer_encode.json").read_text(encoding="utf-8"))
    got = page.page.evaluate(ENCODE, [synthetic_tokenizer.to_manifest(), [v["text"] for v in vectors]])
    assert got == [v["ids"] for v in vectors]


PROMPT_JS = """async ([tokenizer, cases]) => {
  const {Tokenizer} = await import('/tokenizer.js');
  const p = await import('/prompt.js');
  const t = new Tokenizer(tokenizer);
  return cases.map(({text, samples, prefix}) => {
    const audio = samples === null ? null : new Float32Array(samples);
    try {
      const checked = p.checkPrompt({text, audio});
      const words = p.promptWords(checked, t, 128);
      return {words: Array.from(words.slice(0, 2 + words[0])), leadIn: p.leadIn(prefix, checked.audio).length,
        hidden: p.hiddenUntil(prefix, checked.audio)};
    } catch (error) {
      return {error: error.message, code: error.code};
    }
  });
}"""


def test_prompt_js_equals_prompt_py(page, synthetic_tokenizer):
    """web/prompt.js and streaming/prompt.py: the same ids, lead-in, hidden boundary and refusals."""
    from kyutai_stt.streaming.prompt import Prompt, PromptError, prompt_ids
    cases = [("bonjour à tous", None, 0), ("", [0.5] * 30000, 5760), ("Loonah", [0.1] * 1920, 24000),
             ("   ", None, 0), ("", None, 0), ("x" * 1001, None, 0), ("à " * 200, None, 0), ("", [], 0)]
    got = page.page.evaluate(PROMPT_JS, [synthetic_tokenizer.to_manifest(),
                                         [{"text": t, "samples": a, "prefix": n} for t, a, n in cases]])
    for (text, samples, prefix), js in zip(cases, got):
        try:
            prompt = Prompt(text, None if samples is None else np.array(samples, np.float32))
            ids = prompt_ids(prompt, synthetic_tokenizer, 128)
        except PromptError as e:
            assert js.get("code") == "prompt" and js["error"] == str(e), (text, js, e)
            continue
        assert js == {"words": [len(ids), 0, *ids], "leadIn": prompt.lead_in(prefix).size,
                      "hidden": pytest.approx(prompt.hidden_until(prefix))}, text


HIDDEN = """async ([tokenizer, config, tokens]) => {
  const {StreamDecoder} = await import('/stream.js');
  const decoder = new StreamDecoder(tokenizer, config);
  const events = [];
  for (const token of tokens) events.push(...decoder.step(token, []));
  events.push(...decoder.finish(1.6));
  return events.filter((e) => e.type !== 'step');
}"""


def test_stream_js_hides_the_prompt_audio_words_as_python(page):
    """The official prompted token stream (tests/fixtures/prompt_tiny_seed0, audio and text prompt) through both
    decoders with the Transcriber's settings for it: the same events, and the prompt's words hidden."""
    from kyutai_stt.streaming.decoder import DecoderConfig, StreamDecoder
    from kyutai_stt.weights.tokenizer import Tokenizer
    tokens = np.load(ROOT / "tests" / "fixtures" / "prompt_tiny_seed0.npz")["audio_text_tokens"].tolist()
    vector = json.loads(next(p for p in VECTORS if p.stem == "official_tiny_fixture").read_text(encoding="utf-8"))
    tokenizer = Tokenizer.from_manifest(vector["tokenizer"])
    config = {**vector["config"], "silence_prefix": 29 * 0.08, "hide_words_before": 24 * 0.08}
    decoder = StreamDecoder(tokenizer, DecoderConfig(**config))
    expected = [e.to_dict() for t in tokens for e in decoder.step(t)] + [e.to_dict() for e in decoder.finish(1.6)]
    expected = [e for e in expected if e["type"] != "step"]
    got = page.page.evaluate(HIDDEN, [vector["tokenizer"], config, tokens])
    assert make_stream_vectors.events_equal(got, expected)
    assert any(e["type"] == "word" for e in got)
    shown = StreamDecoder(tokenizer, DecoderConfig(**{**config, "hide_words_before": 0.0}))
    unhidden = [e for t in tokens for e in shown.step(t)] + shown.finish(1.6)
    assert len([e for e in unhidden if e.type == "word"]) > len([e for e in got if e["type"] == "word"])
