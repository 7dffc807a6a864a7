"""The browser engine end to end (stt-client.js -> worker.js -> runtime.js on SwiftShader) against the native engine.

One SttClient is loaded for the module (the tiny q4 package: compiling its 60-odd pipelines takes SwiftShader
~15 s, a frame ~2 s). The same plan variant ("cpu", which the runtime must choose for a CPU adapter) runs natively
on lavapipe (engine/runtime.py): per-frame tokens must be equal and VAD probabilities within VAD_TOLERANCE.
"""
from __future__ import annotations

import base64
import io
import json
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from kyutai_stt.config import MIMI, TINY_LM, stream_settings
from kyutai_stt.engine.runtime import Engine
from kyutai_stt.site.build import build_plans

AUDIO = Path(__file__).resolve().parents[1] / "fixtures" / "speech_en_fr_24k.wav"

FRAMES = 10              # > the tiny LM's context of 8: the KV ring wraps inside the compared stretch
# The tiny model's delay_steps (plans.json's stream settings, 6); a flush feeds it + FLUSH_EXTRA_FRAMES silent frames
DELAY_STEPS = stream_settings(TINY_LM)["delay_steps"]
FLUSH_EXTRA_FRAMES = 2   # worker.js / transcriber.py
# VAD probabilities: the two hosts compile the same WGSL with different compilers (summation order, FMA contraction,
# SwiftShader's cos/sin within WGSL's 2^-11 in Mimi's RoPE). Observed differences <= 1e-5 over 16 frames; a wrong
# frame, head or input is off by >= 1e-2.
VAD_TOLERANCE = 1e-4


def fixture_pcm(frames: int) -> tuple[np.ndarray, bytes]:
    """The first frames of the fixture: (float32 samples as the native engine gets them, a WAV of the same)."""
    with wave.open(str(AUDIO)) as f:
        assert (f.getframerate(), f.getnchannels(), f.getsampwidth()) == (MIMI.sample_rate, 1, 2)
        raw = f.readframes(frames * MIMI.frame_size)
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(MIMI.sample_rate)
        w.writeframes(raw)
    return np.frombuffer(raw, np.int16).astype(np.float32) / 32768, out.getvalue()


@pytest.fixture(scope="module")
def loaded(page):
    """The client loaded with no silence prefix (the native comparison feeds the audio from frame 0)."""
    info = page.call("clientLoad", {"silencePrefix": 0})
    return info


@pytest.fixture(scope="module")
def native_steps(tiny_packages):
    package = tiny_packages("q4")
    engine = Engine(build_plans(package)["cpu"], package.read_stream)
    pcm, _ = fixture_pcm(FRAMES)
    results = []
    for frame in pcm.reshape(FRAMES, MIMI.frame_size):
        results += engine.submit({"pcm": frame})
    results += engine.drain()
    return [(int(r.outputs["results"][0]), r.outputs["results"][1:].view(np.float32)) for r in results]


def test_load_chooses_the_cpu_variant_and_reports(page, loaded):
    assert loaded["variant"] == "cpu", "SwiftShader is a CPU adapter: the runtime must choose the cpu plan"
    assert loaded["adapter"]["architecture"] == "swiftshader"
    assert loaded["plan"]["dispatches"] > 50 and loaded["package"]["quant"] == "q4"
    timings = loaded["timings"]
    assert timings["totalMs"] >= timings["compileMs"] > 0 and timings["warmUpMs"] > 0
    progress = page.call("clientEvents", {"event": "progress"})["events"]
    download = [p for p in progress if p["phase"] == "download"]
    assert download and download[-1]["loaded"] == download[-1]["total"] == loaded["package"]["bytes"]
    compile_ = [p for p in progress if p["phase"] == "compile"]
    assert compile_[-1]["done"] == compile_[-1]["total"] == loaded["plan"]["pipelines"]
    assert [e for e in page.call("clientEvents", {"event": "ready"})["events"]]


def test_transcribe_file_equals_the_native_engine(page, loaded, native_steps):
    _, wav = fixture_pcm(FRAMES)
    since = page.call("clientEvents", {})["next"]
    words = page.call("clientTranscribe", {"wav": base64.b64encode(wav).decode()})
    events = page.call("clientEvents", {"since": since})["events"]
    steps = [e for e in events if e["event"] == "step"]
    # The file's frames, then the flush's silent ones, each exactly once and in order.
    assert [s["frame"] for s in steps] == list(range(FRAMES + DELAY_STEPS + FLUSH_EXTRA_FRAMES))
    tokens = [s["token"] for s in steps[:FRAMES]]
    assert len(set(tokens)) > FRAMES // 2, "tokens barely vary: the comparison would say little"
    assert tokens == [t for t, _ in native_steps]
    vad = np.array([s["vad"] for s in steps[:FRAMES]])
    np.testing.assert_allclose(vad, np.array([v for _, v in native_steps]), rtol=0, atol=VAD_TOLERANCE)
    # The resolved word list is exactly the word events of this stream; progress reached the whole file.
    assert words == [{k: e[k] for k in ("text", "start", "end")} for e in events if e["event"] == "word"]
    progress = [e for e in events if e["event"] == "transcribeProgress"]
    assert progress[-1]["done"] == progress[-1]["total"] == FRAMES * MIMI.frame_size
    stats = [e for e in events if e["event"] == "stats"]
    assert stats and stats[-1]["msPerFrame"] > 0 and stats[-1]["realTimeFactor"] > 0


def test_microphone_streams_and_stop_releases_the_last_words(page, loaded):
    """Chromium's fake microphone plays a stretch of the fixture's speech (conftest.write_microphone_wav); stop()
    right after the first frame reached the worker must resolve only after the flush: every frame received, then
    the silent ones, decoded."""
    since = page.call("clientEvents", {})["next"]
    page.call("clientStart")
    deadline = time.monotonic() + 30
    while not page.call("clientEvents", {"since": since, "event": "listening"})["events"]:
        assert time.monotonic() < deadline, "no audio frame from the microphone within 30 s"
        time.sleep(0.05)
    result = page.call("clientStop")
    events = page.call("clientEvents", {"since": since})["events"]
    steps = [e for e in events if e["event"] == "step"]
    assert [s["frame"] for s in steps] == list(range(len(steps)))
    assert len(steps) >= 1 + DELAY_STEPS + FLUSH_EXTRA_FRAMES
    assert np.isfinite(np.array([s["vad"] for s in steps], np.float64)).all()
    stats = result["stats"]
    assert stats["audioSeconds"] > 0 and stats["framesBehind"] == 0
    # Speech came through the worklet (resampled from the device's rate): not silence (-120 dB), not garbage.
    levels = [e["level"] for e in events if e["event"] == "stats" and e["level"] is not None]
    assert levels and -50 < max(levels) < 0, levels
    assert not [e for e in events if e["event"] == "error"]


def test_a_site_exported_for_another_package_is_refused(page, server, loaded):
    plans = json.loads((server.root / "plans.json").read_text())
    plans["package_sha"] = "0" * 64
    server.overrides["/plans.json"] = json.dumps(plans).encode()
    try:
        error = page.call("loadError", {})
    finally:
        server.clear_overrides()
    assert error["code"] == "package-mismatch"
    assert "exported for another model package" in error["message"] and "export-web" in error["message"]


def test_no_webgpu_is_a_clear_error(page):
    error = page.call("loadError", {"hideWebGpu": True})
    assert error["code"] == "no-webgpu" and "WebGPU" in error["message"] and "Chrome" in error["fix"]


@pytest.mark.slow
def test_prompt_equals_the_native_engine_and_hides_the_prompt_audio(page, loaded, tiny_packages):
    """setPrompt (stt-client.js -> worker.js, prompt.js): a text prompt (enforced by argmax.wgsl on the GPU) and a
    one-frame audio prompt, then 4 frames of audio. The frames the native engine gets: the audio prompt, 10 silent
    frames, the audio, the flush's silence; the prompt's ids with the first. Tokens must be equal; no word before
    the audio; setPrompt(null) returns to the plain stream. Slow: 23 frames on SwiftShader (~80-140 s here)."""
    package = tiny_packages("q4")
    prompt_audio = fixture_pcm(12)[0][-MIMI.frame_size:]                 # frame 11: speech
    pcm, _ = fixture_pcm(4)
    text = "bonjour à tous"
    reply = page.call("clientSetPrompt", {"text": text, "audio": base64.b64encode(prompt_audio.tobytes()).decode()})
    ids = package.tokenizer.encode(text)
    assert reply == {"ids": len(ids), "leadInSeconds": pytest.approx(11 * 0.08)}
    since = page.call("clientEvents", {})["next"]
    result = page.call("clientTranscribePcm", {"pcm": base64.b64encode(pcm.tobytes()).decode()})
    steps = [e for e in page.call("clientEvents", {"since": since})["events"] if e["event"] == "step"]

    plan = build_plans(package)["cpu"]
    engine = Engine(plan, package.read_stream)
    words = np.zeros(plan.buffer(plan.inputs["prompt"]).shape[0], np.uint32)
    words[0], words[2:2 + len(ids)] = len(ids), ids
    frames = np.concatenate([prompt_audio, np.zeros(10 * MIMI.frame_size, np.float32), pcm,
                             np.zeros((DELAY_STEPS + FLUSH_EXTRA_FRAMES) * MIMI.frame_size, np.float32)])
    native = []
    for k, frame in enumerate(frames.reshape(-1, MIMI.frame_size)):
        native += engine.submit({"pcm": frame, **({"prompt": words} if k == 0 else {})})
    native = [int(r.outputs["results"][0]) for r in native + engine.drain()]
    assert [s["token"] for s in steps] == native
    written = [t for t in native if t not in (0, 3)]
    assert written and written[:len(ids)] == ids[:len(written)], "the prompt's ids come first: the GPU enforced it"
    assert all(0 <= w["start"] <= w["end"] <= 4 * 0.08 for w in result["words"])
    assert page.call("clientSetPrompt", {}) == {"ids": 0, "leadInSeconds": 0}


def test_unusable_prompts_are_refused_by_the_worker(page, loaded):
    for prompt, message in (({"text": "   "}, "only whitespace"), ({"text": "à " * 200}, "at most 128"),
                            ({"text": "x" * 1001}, "at most 1000")):
        reply = page.call("clientSetPrompt", prompt)
        assert reply["error"]["code"] == "prompt" and message in reply["error"]["message"], reply
