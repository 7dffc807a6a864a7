"""The Python delayed-streams decoder against the shared vectors (the browser test runs stream.js on the same
files), and the vectors against the script that derives them from the official rules."""
from __future__ import annotations

import json
from pathlib import Path

import make_stream_vectors
import pytest

from kyutai_stt.streaming.decoder import DecoderConfig, StreamDecoder
from kyutai_stt.weights.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
VECTORS = sorted((ROOT / "tests" / "vectors" / "stream").glob("*.json"))


def decode_vector(vector: dict) -> list[dict]:
    decoder = StreamDecoder(Tokenizer.from_manifest(vector["tokenizer"]), DecoderConfig(**vector["config"]))
    events = []
    for k, (token, vad) in enumerate(vector["steps"]):
        if k == vector["end_of_audio_step"]:             # the flush begins: its frames' words end in the audio
            decoder.end_of_audio(vector["audio_end"])
        events += decoder.step(token, vad)
    events += decoder.finish(vector["audio_end"])
    return [e.to_dict() for e in events if e.type != "step"]


def test_vectors_exist_and_cover_every_event_type():
    assert len(VECTORS) >= 8
    types = {e["type"] for v in VECTORS for e in json.loads(v.read_text())["events"]}
    assert types == {"word", "partial", "endOfTurn"}


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_python_decoder_matches_vector(path):
    vector = json.loads(path.read_text(encoding="utf-8"))
    got = decode_vector(vector)
    assert make_stream_vectors.events_equal(got, vector["events"]), \
        f"\n got:      {got}\n expected: {vector['events']}"


def test_committed_vectors_are_what_the_script_writes():
    for name, text in make_stream_vectors.all_vectors().items():
        committed = ROOT / "tests" / "vectors" / "stream" / name
        assert committed.read_text(encoding="utf-8") == text, f"{name} is stale: run tools/make_stream_vectors.py"


def test_step_events_carry_every_frame():
    vector = json.loads((ROOT / "tests/vectors/stream/end_of_turn.json").read_text())
    decoder = StreamDecoder(Tokenizer.from_manifest(vector["tokenizer"]), DecoderConfig(**vector["config"]))
    steps = [e for token, vad in vector["steps"] for e in decoder.step(token, vad) if e.type == "step"]
    assert [s.frame for s in steps] == list(range(len(vector["steps"])))
    assert [s.token for s in steps] == [t for t, _ in vector["steps"]]
    assert steps[-1].vad == tuple(vector["steps"][-1][1])


def test_reset_starts_a_new_stream():
    vector = json.loads((ROOT / "tests/vectors/stream/words_and_boundaries.json").read_text())
    decoder = StreamDecoder(Tokenizer.from_manifest(vector["tokenizer"]), DecoderConfig(**vector["config"]))
    for token, vad in vector["steps"][:10]:
        decoder.step(token, vad)
    decoder.reset()
    events = [e.to_dict() for t, v in vector["steps"] for e in decoder.step(t, v)] + \
             [e.to_dict() for e in decoder.finish()]
    assert make_stream_vectors.events_equal([e for e in events if e["type"] != "step"], vector["events"])


def test_the_delay_is_the_models_and_required():
    """No decoder runs on an assumed delay: a config without delay_steps is refused (hosts take it from the model,
    config.stream_settings)."""
    vector = json.loads((ROOT / "tests/vectors/stream/no_vad_delay31.json").read_text())
    with pytest.raises(ValueError, match="delay_steps"):
        StreamDecoder(Tokenizer.from_manifest(vector["tokenizer"]), DecoderConfig())
    assert vector["config"]["delay_steps"] == 31 and all(vad == [] for _, vad in vector["steps"])
    assert not [e for e in vector["events"] if e["type"] == "endOfTurn"]
