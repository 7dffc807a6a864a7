"""Write the shared delayed-streams test vectors: tests/vectors/stream/*.json (token stream -> expected events).

Both decoders (kyutai_stt/streaming/decoder.py and kyutai_stt/web/stream.js) are tested against these files. The
expected events do not come from either decoder: they come from `official_events` below, a line-by-line transcription of
the official server's per-step word logic (moshi rust `asr.rs`, State::step_tokens) and of how the official
clients pair its Word/EndWord messages into timed words (`[start-stop] word`). The hand-made cases also carry
events written out by hand, and this script refuses to write a file where the two disagree.

    .venv/bin/python tools/make_stream_vectors.py            # rewrite the files
    tests/test_stream.py checks that the committed files are what this script writes.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from kyutai_stt.weights.tokenizer import Tokenizer  # noqa: E402

OUT = ROOT / "tests" / "vectors" / "stream"
FIXTURE = ROOT / "tests" / "fixtures" / "reference_tiny_seed0.npz"
FIXTURE26 = ROOT / "tests" / "fixtures" / "reference_tiny26_seed0.npz"
DEFAULTS = {"delay_steps": 6, "frame_rate": 12.5, "silence_prefix": 0.0, "eot_head": 2, "eot_threshold": 0.5,
            "eot_smoothing": 0.0}

# A small piece table: specials 0..3 as in the official tokenizer, two byte pieces making "é", words and pieces.
SMALL_PIECES = ["<unk>", "<s>", "</s>", "<pad>", "▁hello", "▁wor", "ld", "<0xC3>", "<0xA9>", "▁caf", "▁ça",
                "▁va", "▁bien", "s", "<0xFF>"]
SMALL_TOKENIZER = {"pieces": SMALL_PIECES, "unk_id": 0, "bos_id": 1, "eos_id": 2, "pad_id": 3,
                   "control_ids": [1, 2, 3], "byte_ids": [7, 8, 14], "strip_leading_space": True,
                   "unk_surface": " \u2047 "}


def official_events(tokens, vads, tokenizer: Tokenizer, cfg: dict, audio_end=None) -> list[dict]:
    """Events by the official rules, written as the official code is: step_idx, word_tokens, unended_word,
    last_stop_time; Word/EndWord messages paired into words as the official CLIs print them."""
    delay, rate, prefix = cfg["delay_steps"], cfg["frame_rate"], cfg["silence_prefix"]
    secs = lambda t: max(0.0, t - prefix)                      # noqa: E731  (caller's time)
    step_idx, word_tokens, unended_word, last_stop_time = 0, [], False, 0.0
    last_word = None                                           # (tokens, start) printed when its end is known
    printed_eot, smoothed = True, None                         # EOT armed by the first word (see streaming/decoder.py)
    events, partial = [], ""

    def pending_text():
        parts = (([tokenizer.decode(last_word[0]).strip()] if last_word else [])
                 + [tokenizer.decode(word_tokens).strip()])
        return " ".join(p for p in parts if p)

    def word(tokens, start, stop):
        s, e = secs(start), secs(stop)
        if audio_end is not None:
            s, e = min(s, audio_end), min(e, audio_end)
        text = tokenizer.decode(tokens).strip()
        return [{"type": "word", "text": text, "start": s, "end": max(s, e)}] if text else []

    for text_token, vad in zip(tokens, vads):
        msgs = []
        step_idx += 1
        if step_idx >= delay:
            if text_token == 3 or text_token == 0:
                if word_tokens:
                    msgs.append(("Word", word_tokens, last_stop_time))
                    word_tokens = []
                    unended_word = True
            else:
                word_tokens.append(text_token)
            if text_token == 0:
                stop_time = (step_idx - delay) / rate
                if unended_word:
                    unended_word = False
                    msgs.append(("EndWord", stop_time))
                last_stop_time = stop_time
        for msg in msgs:                                       # the client side
            printed_eot = False
            if msg[0] == "Word":
                if last_word:
                    events += word(last_word[0], last_word[1], msg[2])
                last_word = (msg[1], msg[2])
            elif last_word:
                events += word(last_word[0], last_word[1], msg[1])
                last_word = None
        if len(vad) > cfg["eot_head"]:
            p = float(vad[cfg["eot_head"]])
            smoothed = p if smoothed is None else cfg["eot_smoothing"] * smoothed + (1 - cfg["eot_smoothing"]) * p
            if smoothed > cfg["eot_threshold"] and not printed_eot:
                printed_eot = True
                events.append({"type": "endOfTurn", "time": secs((step_idx - delay) / rate), "probability": smoothed})
        if pending_text() != partial:
            partial = pending_text()
            events.append({"type": "partial", "text": partial})
    # End of stream: every word still open or waiting ends now.
    stop = max(last_stop_time, (step_idx - delay) / rate)
    if last_word:
        events += word(last_word[0], last_word[1], stop)
    if word_tokens:
        events += word(word_tokens, last_stop_time, stop)
    if partial:
        events.append({"type": "partial", "text": ""})
    return events


def vad_rows(values) -> list[list[float]]:
    """[head-2 probability per step] -> 4-head rows (other heads fixed, so only head 2 matters)."""
    return [[0.1, 0.1, float(v), 0.1] for v in values]


def hand_cases() -> list[dict]:
    """Small streams whose events are also written out by hand (times: (step - 6) / 12.5)."""
    return [
        {"name": "words_and_boundaries",
         "description": "delay ignores steps 1-5; a 0 ends the open word; a 3 closes a word whose end comes with "
                        "the next 0; byte pieces make 'é'; a word closed by 3 then followed by another word ends "
                        "at that word's start; finish() releases the rest",
         "config": {},
         "tokens": [3, 3, 3, 3, 4, 0, 4, 0, 5, 6, 3, 3, 0, 9, 7, 8, 3, 10, 3, 11],
         "head2": [0.0] * 20,
         "events": [
             {"type": "partial", "text": "hello"},
             {"type": "word", "text": "hello", "start": 0.0, "end": 0.16},
             {"type": "partial", "text": ""},
             {"type": "partial", "text": "wor"},
             {"type": "partial", "text": "world"},
             {"type": "word", "text": "world", "start": 0.16, "end": 0.56},
             {"type": "partial", "text": ""},
             {"type": "partial", "text": "caf"},
             {"type": "partial", "text": "caf\ufffd"},
             {"type": "partial", "text": "café"},
             {"type": "partial", "text": "café ça"},
             {"type": "word", "text": "café", "start": 0.56, "end": 0.56},
             {"type": "partial", "text": "ça"},
             {"type": "partial", "text": "ça va"},
             {"type": "word", "text": "ça", "start": 0.56, "end": 1.12},
             {"type": "word", "text": "va", "start": 0.56, "end": 1.12},
             {"type": "partial", "text": ""}]},
        {"name": "end_of_turn",
         "description": "no end of turn before the first word; one per word; re-armed by the next word",
         "config": {},
         "tokens": [3, 3, 3, 3, 3, 0, 12, 3, 3, 3, 0, 11, 0, 3],
         "head2": [0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.2, 0.7, 0.8, 0.2, 0.3, 0.1, 0.1, 0.6],
         "events": [
             {"type": "partial", "text": "bien"},
             {"type": "endOfTurn", "time": 0.16, "probability": 0.7},
             {"type": "word", "text": "bien", "start": 0.0, "end": 0.4},
             {"type": "partial", "text": ""},
             {"type": "partial", "text": "va"},
             {"type": "word", "text": "va", "start": 0.4, "end": 0.56},
             {"type": "partial", "text": ""},
             {"type": "endOfTurn", "time": 0.64, "probability": 0.6}]},
        {"name": "prefix_smoothing_clamp",
         "description": "a 0.4 s silence prefix shifts times and clamps them at 0; smoothing 0.5 delays the end of "
                        "turn; finish(audio_end) clamps the last word's end",
         "config": {"silence_prefix": 0.4, "eot_smoothing": 0.5},
         "tokens": [3, 3, 3, 3, 3, 0, 4, 13, 0, 0, 0, 0, 0, 0, 12],
         "head2": [0.0] * 9 + [0.8, 0.8, 0.8, 0.8, 0.8, 0.8],
         "audio_end": 0.3,
         "events": [
             {"type": "partial", "text": "hello"},
             {"type": "partial", "text": "hellos"},
             {"type": "word", "text": "hellos", "start": 0.0, "end": 0.0},
             {"type": "partial", "text": ""},
             {"type": "endOfTurn", "time": 0.0, "probability": 0.6},
             {"type": "partial", "text": "bien"},
             {"type": "word", "text": "bien", "start": 0.24, "end": 0.3},
             {"type": "partial", "text": ""}]},
        {"name": "flush_clamps_released_words",
         "description": "the audio ends at 0.2 s and the flush's silent frames begin (end_of_audio before step 9): "
                        "a word they release (at 0.32 s) ends at the audio's end, as does the last one at finish",
         "config": {},
         "tokens": [3, 3, 3, 3, 3, 0, 12, 3, 3, 0, 11, 3],
         "head2": [0.0] * 12,
         "audio_end": 0.2,
         "end_of_audio_step": 9,
         "events": [
             {"type": "partial", "text": "bien"},
             {"type": "word", "text": "bien", "start": 0.0, "end": 0.2},
             {"type": "partial", "text": ""},
             {"type": "partial", "text": "va"},
             {"type": "word", "text": "va", "start": 0.2, "end": 0.2},
             {"type": "partial", "text": ""}]},
    ]


def random_case(seed: int, steps: int = 120) -> dict:
    """Random pieces with frequent 0s and 3s, random head-2 probabilities: every branch many times over."""
    rng = np.random.default_rng(seed)
    kinds = rng.choice(["boundary", "pad", "piece"], steps, p=[0.15, 0.35, 0.5])
    tokens = [0 if k == "boundary" else 3 if k == "pad" else int(rng.integers(4, len(SMALL_PIECES)))
              for k in kinds]
    return {"name": f"random_seed{seed}", "description": "random stream; expected events by the official rules",
            "config": {"eot_smoothing": 0.3} if seed % 2 else {},
            "tokens": tokens, "head2": [round(float(v), 3) for v in rng.uniform(0, 1, steps)]}


def no_vad_case(seed: int = 4, steps: int = 120) -> dict:
    """The 2.6B family's shape: a 31-frame delay (2.5 s) and no VAD heads (empty probability rows), so no end
    of turn ever comes, whatever the tokens."""
    case = random_case(seed, steps)
    return {**case, "name": "no_vad_delay31", "config": {"delay_steps": 31},
            "description": "random stream with the 2.6B family's delay and no VAD heads", "vad": [[]] * steps}


def fixture_case() -> dict:
    """The official implementation's own token stream and VAD probabilities (tiny synthetic model, 40 steps of
    the fixture audio): random weights emit no 0/3, so this pins the 'one open word until finish' path."""
    arrays = np.load(FIXTURE)
    return {"name": "official_tiny_fixture", "tokenizer": fixture_tokenizer(8000),
            "description": "moshi's greedy tokens and VAD probabilities (tests/fixtures/reference_tiny_seed0.npz)",
            "config": {}, "tokens": arrays["lm_tokens"].tolist(),
            "vad": arrays["lm_vad_probs"].astype(np.float64).tolist()}


def fixture26_case() -> dict:
    """The same for the tiny 2.6B-family model (reference_tiny26_seed0.npz): its 31-frame delay, no VAD heads."""
    arrays = np.load(FIXTURE26)
    return {"name": "official_tiny26_fixture", "tokenizer": fixture_tokenizer(4000),
            "description": "moshi's greedy tokens, tiny 2.6B family (tests/fixtures/reference_tiny26_seed0.npz)",
            "config": {"delay_steps": 31}, "tokens": arrays["lm_tokens"].tolist(),
            "vad": [[] for _ in arrays["lm_tokens"]]}


def fixture_tokenizer(vocab_size: int) -> dict:
    """The synthetic checkpoints' tokenizer (synthetic.write_tokenizer) as a manifest's tokenizer object."""
    from kyutai_stt.weights.synthetic import SPECIAL_PIECES, tokenizer_pieces
    pieces = list(SPECIAL_PIECES) + [f"<0x{b:02X}>" for b in range(256)] + tokenizer_pieces(vocab_size)
    return {"pieces": pieces, "unk_id": 0, "bos_id": 1, "eos_id": 2, "pad_id": 3, "control_ids": [1, 2, 3],
            "byte_ids": list(range(4, 260)), "strip_leading_space": True, "unk_surface": " \u2047 "}


def build(case: dict) -> dict:
    tokenizer_raw = case.get("tokenizer", SMALL_TOKENIZER)
    tokenizer = Tokenizer.from_manifest(tokenizer_raw)
    cfg = {**DEFAULTS, **case["config"]}
    vads = case.get("vad") or vad_rows(case["head2"])
    audio_end = case.get("audio_end")
    expected = official_events(case["tokens"], vads, tokenizer, cfg, audio_end)
    if "events" in case and not events_equal(case["events"], expected):
        raise SystemExit(f"{case['name']}: hand-written events disagree with the official rules:\n"
                         f"  hand:     {case['events']}\n  official: {expected}")
    return {"name": case["name"], "description": case["description"], "tokenizer": tokenizer_raw,
            "config": {"delay_steps": cfg["delay_steps"], **case["config"]},
            "steps": [[int(t), list(v)] for t, v in zip(case["tokens"], vads)],
            "audio_end": audio_end, "end_of_audio_step": case.get("end_of_audio_step"), "events": expected}


def events_equal(a: list[dict], b: list[dict], tol: float = 1e-9) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x.keys() != y.keys():
            return False
        for k in x:
            if isinstance(x[k], float) or isinstance(y[k], float):
                if abs(x[k] - y[k]) > tol:
                    return False
            elif x[k] != y[k]:
                return False
    return True


def all_vectors() -> dict[str, str]:
    cases = hand_cases() + [random_case(s) for s in range(4)] + [no_vad_case(), fixture_case(), fixture26_case()]
    return {f"{c['name']}.json": json.dumps(build(c), indent=1, ensure_ascii=False) + "\n" for c in cases}


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in all_vectors().items():
        (OUT / name).write_text(text, encoding="utf-8")
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
