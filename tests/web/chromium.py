"""How the browser tests launch Debian's Chromium (platform.md §1), shared by conftest.py and tests that need a
second browser with other flags; and how they open the app and wait for its state."""
from __future__ import annotations

import json
import wave
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
AUDIO = Path(__file__).resolve().parents[1] / "fixtures" / "speech_en_fr_24k.wav"
# Headless WebGPU on SwiftShader needs the unsafe flag (CPU adapters are blocklisted); the rest keep a machine
# without network quiet.
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--enable-unsafe-webgpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
# The fake microphone plays MIC_SECONDS of the fixture from MIC_START (its first 0.2 s are digital silence), once.
MIC_START, MIC_SECONDS = 0.25, 2.0


def microphone_args(wav: Path) -> list[str]:
    return ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}%noloop", "--autoplay-policy=no-user-gesture-required"]


def write_microphone_wav(path: Path) -> Path:
    with wave.open(str(AUDIO)) as f:
        rate = f.getframerate()
        f.setpos(int(MIC_START * rate))
        frames = f.readframes(int(MIC_SECONDS * rate))
        params = f.getparams()
    with wave.open(str(path), "wb") as out:
        out.setparams(params)
        out.writeframes(frames)
    return path


LOAD_TIMEOUT_MS = 300_000          # SwiftShader compiles ~50 pipelines and the tiny model's full-size Mimi
RUN_TIMEOUT_MS = 600_000           # every frame of the full-size Mimi encoder on a CPU rasteriser: ~1 s each


def open_app(context, server, query: str = "silence=0"):
    page = context.new_page()
    console, requests = [], []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"error: uncaught {e}"))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(f"{server.url}/index.html?{query}")
    return page, console, requests


def wait_state(page, states, timeout=LOAD_TIMEOUT_MS, console=()):
    try:
        page.wait_for_function(f"{json.dumps(states)}.includes(document.body.dataset.state)", timeout=timeout)
    except Exception as e:
        raise AssertionError(f"page state {page.evaluate('document.body.dataset.state')!r}, expected {states}: "
                             f"{e}\nconsole:\n" + "\n".join(list(console)[-20:])) from None
    return page.evaluate("document.body.dataset.state")
