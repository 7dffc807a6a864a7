"""Prompts in the Python host (prompt.py, Transcriber(prompt=...)): the official prompting script's token stream on
the tiny model end to end (Mimi and the LM on the GPU, the text prompt enforced there), the audio prompt's words
hidden, times from the caller's audio, and clear refusals of unusable prompts."""
from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest

from kyutai_stt.errors import AudioError
from kyutai_stt.streaming.decoder import DecoderConfig, StreamDecoder
from kyutai_stt.streaming.prompt import SEPARATOR_FRAMES, Prompt, PromptError, prompt_ids
from kyutai_stt.streaming.transcriber import Transcriber

FIXTURES = Path(__file__).resolve().parent / "fixtures"
FIXTURE = FIXTURES / "prompt_tiny_seed0"


def wav(path: Path, frames: int | None = None) -> np.ndarray:
    with wave.open(str(path)) as f:
        n = f.getnframes() if frames is None else frames * 1920
        return np.frombuffer(f.readframes(n), np.int16).astype(np.float32) / 32768


@pytest.fixture(scope="module")
def fixture():
    return dict(np.load(FIXTURE.with_suffix(".npz"))), json.loads(FIXTURE.with_suffix(".json").read_text())


@pytest.fixture(scope="module")
def official_package(tiny_packages):
    from test_transcriber import official_weights_package
    return official_weights_package(tiny_packages)


def audio_text_transcriber(package, meta, **kwargs) -> Transcriber:
    case = meta["cases"]["audio_text"]
    prompt = Prompt(case["prompt_text"], wav(FIXTURES / case["prompt_audio"]["file"]))
    return Transcriber(package, silence_prefix=case["layout"]["prefix"] * 0.08, prompt=prompt, **kwargs)


class RecordingEngine:
    """Stands in for the GPU engine: records what the Transcriber submits."""

    def __init__(self, plan, read_stream, *args):
        self.plan, self.submitted = plan, []

    def submit(self, inputs):
        self.submitted.append({k: np.array(v, copy=True) for k, v in inputs.items()})
        return []

    def drain(self):
        return []

    def reset(self):
        pass


def test_frames_and_prompt_input_follow_the_official_layout(tiny_packages, fixture, monkeypatch):
    """What reaches the GPU: silence prefix, the prompt audio padded to whole frames, 10 frames of silence, the
    audio, the flush's silence (the script's chain, frame for frame); the text prompt's [n, 0, ids] with the first
    frame only, every stream."""
    monkeypatch.setattr("kyutai_stt.streaming.transcriber.Engine", RecordingEngine)
    arrays, meta = fixture
    layout = meta["cases"]["audio_text"]["layout"]
    t = audio_text_transcriber(tiny_packages("q4"), meta)
    audio = wav(FIXTURES / meta["audio"]["file"], layout["audio"])
    prompt = wav(FIXTURES / "prompt_fr_24k.wav")
    for _ in range(2):                                          # flush starts the next stream the same way
        t.engine.submitted.clear()
        t.feed(audio[:1000], 24000)
        t.feed(audio[1000:], 24000)
        t.flush()
        frames = np.array([s["pcm"] for s in t.engine.submitted])
        chain = np.concatenate([np.zeros(layout["prefix"] * 1920), prompt,
                                np.zeros(layout["prompt"] * 1920 - prompt.size + layout["separator"] * 1920),
                                audio, np.zeros(8 * 1920)]).reshape(-1, 1920)
        np.testing.assert_array_equal(frames, chain)
        ids = arrays["audio_text_prompt_ids"]
        assert [list(s["prompt"][:2 + len(ids)]) for s in t.engine.submitted if "prompt" in s] == \
            [[len(ids), 0, *ids]]
        assert "prompt" in t.engine.submitted[0]


def test_audio_prompt_words_are_hidden_and_times_start_at_the_audio(tiny_packages, fixture, monkeypatch):
    """The official token stream through the Transcriber's decoder: no word of the prompt audio (the enforced
    "bonjour à tous" and what the tiny model glued to it), every time within the caller's audio."""
    monkeypatch.setattr("kyutai_stt.streaming.transcriber.Engine", RecordingEngine)
    arrays, meta = fixture
    t = audio_text_transcriber(tiny_packages("q4"), meta)
    tokens = arrays["audio_text_tokens"].tolist()
    decoder = StreamDecoder(t.package.tokenizer, t.decoder_config)
    events = [e for tok in tokens for e in decoder.step(tok)] + decoder.finish(audio_end=20 * 0.08)
    unhidden = StreamDecoder(t.package.tokenizer, DecoderConfig(silence_prefix=t.decoder_config.silence_prefix))
    shown = [e.text for e in [e for tok in tokens for e in unhidden.step(tok)] + unhidden.finish()
             if e.type == "word"]
    words = [e for e in events if e.type == "word"]
    prompt_words = [w for w in shown if w == "à" or w.startswith("tous")]
    assert prompt_words, "without hiding, the prompt's words show: the check below means something"
    assert words and not set(prompt_words) & {w.text for w in words} and {w.text for w in words} < set(shown)
    assert all(0 <= w.start <= w.end <= 20 * 0.08 for w in words)
    assert not any(e.text.startswith("tous") for e in events if e.type == "partial")


@pytest.mark.slow
def test_audio_and_text_prompt_equal_the_official_script(official_package, fixture):
    """End to end on the GPU (Mimi in f32 as the official encoder, the LM in f16 = bf16): the README's use, an
    audio prompt and its text; every step's token equals the official script's (~2 min on lavapipe)."""
    arrays, meta = fixture
    layout = meta["cases"]["audio_text"]["layout"]
    t = audio_text_transcriber(official_package, meta)
    events = t.feed(wav(FIXTURES / meta["audio"]["file"], layout["audio"]), 24000) + t.flush()
    tokens = [e.token for e in events if e.type == "step"]
    expected = arrays["audio_text_tokens"].tolist()
    assert len(tokens) >= len(expected) and tokens[:len(expected)] == expected


def test_text_prompt_without_audio_prompt_hides_nothing(tiny_packages, fixture, monkeypatch):
    """No audio prompt: nothing is hidden (as the script), so the enforced prompt is the transcript's start."""
    monkeypatch.setattr("kyutai_stt.streaming.transcriber.Engine", RecordingEngine)
    arrays, meta = fixture
    case = meta["cases"]["text"]
    t = Transcriber(tiny_packages("q4"), silence_prefix=case["layout"]["prefix"] * 0.08,
                    prompt=Prompt(case["prompt_text"]))
    assert t.decoder_config.hide_words_before == 0.0 and t.decoder_config.silence_prefix == pytest.approx(0.24)
    decoder = StreamDecoder(t.package.tokenizer, t.decoder_config)
    events = [e for tok in arrays["text_tokens"].tolist() for e in decoder.step(tok)] + decoder.finish()
    # The tiny model wrote "bonjour" at step 1, inside the first delay_steps outputs, which the official rules
    # ignore (stream.py); the rest of the prompt starts the transcript.
    assert arrays["text_tokens"][1] == arrays["text_prompt_ids"][0]
    assert " ".join(e.text for e in events if e.type == "word").startswith("à tous")


def test_prompt_audio_layout_and_hidden_boundary():
    p = Prompt(audio=np.ones(30000, np.float32))
    lead = p.lead_in(5760)
    assert lead.size == 5760 + 16 * 1920 + SEPARATOR_FRAMES * 1920
    assert (lead[:5760] == 0).all() and (lead[5760:35760] == 1).all() and (lead[35760:] == 0).all()
    assert p.hidden_until(5760) == pytest.approx((5760 + 16 * 1920 + 5 * 1920) / 24000)
    assert Prompt("x").lead_in(100).size == 100 and Prompt("x").hidden_until(100) == 0.0


def test_prompt_load_reads_the_file_as_the_reference_does(tmp_path):
    p = Prompt.load("Loonah", FIXTURES / "prompt_fr_24k.wav")
    np.testing.assert_array_equal(p.audio, wav(FIXTURES / "prompt_fr_24k.wav"))
    assert Prompt.load(None, None) is None


@pytest.mark.parametrize("text, audio, message", [
    ("", None, "an empty prompt"),
    ("   ", None, "only whitespace"),
    ("x" * 1001, None, "at most 1000"),
    ("", np.zeros(0, np.float32), "non-empty float array"),
    ("", np.zeros(24000 * 31, np.float32), "at most 30 s"),
    ("", np.full(10, np.nan, np.float32), "NaN"),
])
def test_bad_prompts_are_refused(text, audio, message):
    with pytest.raises(PromptError, match=message):
        Prompt(text, audio)


def test_bad_prompt_files_and_texts_are_refused(tmp_path, tiny_packages):
    with pytest.raises(PromptError, match="--prompt-text is empty"):
        Prompt.load("", None)
    with pytest.raises(AudioError, match="missing.wav"):
        Prompt.load(None, tmp_path / "missing.wav")
    (tmp_path / "junk.wav").write_bytes(b"not audio at all" * 10)
    with pytest.raises(AudioError, match="junk.wav"):
        Prompt.load(None, tmp_path / "junk.wav")
    with pytest.raises(PromptError, match="at most 128"):
        Transcriber(tiny_packages("q4"), prompt=Prompt("à " * 200))


def test_a_prompt_that_would_stall_is_refused():
    """An id the rule never advances past (0 or 3: the unknown piece of a tokenizer without byte fallback) would
    leave the stream stuck on padding (the official script's behaviour): refused instead."""
    class Stub:
        def encode(self, text):
            return [5, 0, 6]
    with pytest.raises(PromptError, match="cannot write"):
        prompt_ids(Prompt("x"), Stub(), 128)
    assert prompt_ids(Prompt("x"), type("T", (), {"encode": lambda self, t: [5, 6]})(), 2) == [5, 6]
    assert prompt_ids(None, Stub(), 128) == [] and prompt_ids(Prompt(audio=np.ones(5, np.float32)), Stub(), 1) == []
