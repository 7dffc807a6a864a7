"""The app end to end in headless Chromium: the page loads the tiny package with a progress bar, a fake microphone
plays speech and words and an end of turn appear, file transcription equals the native engine's, downloads, the
network stays on localhost (the failures a user can meet: test_app_failures.py)."""
from __future__ import annotations

import json
import os
import re
import wave
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from chromium import (
    AUDIO,
    RUN_TIMEOUT_MS,
    open_app,
    wait_state,
)

from kyutai_stt.streaming import formats
from kyutai_stt.streaming.transcriber import Transcriber

EOT_THRESHOLD = 0.2                # random weights: a lower end-of-turn threshold makes one likely in 2 s
FILE_SECONDS = 1.5


def test_microphone_words_end_of_turn_screenshot_and_no_foreign_requests(browser, server, tmp_path):
    # backlog=30: far behind real time here, every captured frame is kept (test_slow_device_... tests the bound)
    page, console, requests = open_app(browser, server, f"silence=0&eot={EOT_THRESHOLD}&backlog=30")
    assert wait_state(page, ["ready", "error"], console=console) == "ready", page.inner_text("#error")
    manifest = json.loads((server.root / "model" / "manifest.json").read_text())
    assert page.evaluate("document.getElementById('progress').max") == manifest["total_bytes"]
    assert page.evaluate("document.getElementById('progress').value") == manifest["total_bytes"]
    assert "Model ready" in page.inner_text("#progress-text")
    assert page.is_visible("#synthetic"), "a synthetic package is labelled as producing meaningless text"

    page.click("#mic")
    wait_state(page, ["listening"], timeout=30_000, console=console)
    # The fake microphone plays its 2 s clip once, then silence. The engine runs far behind real time here, so
    # stop once the clip has been captured: the frames queued so far, then the flush, are processed at once.
    page.wait_for_timeout(3000)
    assert page.evaluate("document.body.dataset.state") == "listening", page.inner_text("#error")
    page.click("#mic")
    assert wait_state(page, ["ready", "error"], timeout=RUN_TIMEOUT_MS, console=console) == "ready"
    words = page.evaluate("window.sttApp.transcript.words")
    turns = page.evaluate("window.sttApp.transcript.endOfTurns")
    assert words and all(w["text"] and 0 <= w["start"] <= w["end"] for w in words)
    assert page.locator("#final .word").count() == len(words)
    assert len(turns) >= 1 and page.locator("#final .eot").count() == len(turns)
    assert re.search(r"ms per 80 ms frame \(GPU: LM [0-9.]+ ms, Mimi [0-9.]+ ms\)", page.inner_text("#stats")), \
        page.inner_text("#stats")         # SwiftShader has timestamp queries: the stages are timed

    shot = Path(os.environ.get("KYUTAI_STT_SCREENSHOT_DIR", tmp_path)) / "app.png"
    page.screenshot(path=str(shot), full_page=True)
    check_screenshot(shot)
    foreign = [u for u in requests if urlparse(u).hostname not in ("127.0.0.1", "localhost")
               and not u.startswith(("blob:", "data:"))]
    assert not foreign, f"the page reached outside localhost: {foreign}"
    assert any(urlparse(u).path.endswith("/icon.svg") for u in requests), "the page names its icon"
    errors = [line for line in console if line.startswith("error:")]
    assert not errors, f"a clean session logged errors in the console: {errors}"     # e.g. a 404 for an icon
    page.close()


def check_screenshot(path: Path):
    """The screenshot shows a page with text on it: mostly light background, and dark pixels of the transcript."""
    from PIL import Image
    image = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    assert image.shape[0] > 300 and image.shape[1] > 600
    dark = (image < 100).mean()
    assert 0.002 < dark < 0.3, f"{dark:.4f} of the pixels are dark: blank or garbled page"


@pytest.fixture(scope="module")
def ready_page(browser, server):
    """One page of the default app for the tests below that need no query of their own: each load compiles the
    plans again (~30 s on SwiftShader). Each test leaves it ready, with no prompt."""
    page, console, _ = open_app(browser, server)
    assert wait_state(page, ["ready", "error"], console=console) == "ready", page.inner_text("#error")
    yield page, console
    page.close()


def test_file_transcription_equals_the_native_engine_and_downloads(ready_page, tmp_path, tiny_packages):
    clip = tmp_path / "clip.wav"
    with wave.open(str(AUDIO)) as f:
        params, frames = f.getparams(), f.readframes(int(FILE_SECONDS * f.getframerate()))
    with wave.open(str(clip), "wb") as out:
        out.setparams(params)
        out.writeframes(frames)
    page, console = ready_page
    page.set_input_files("#file", str(clip))
    wait_state(page, ["busy"], timeout=30_000, console=console)
    assert wait_state(page, ["ready", "error"], timeout=RUN_TIMEOUT_MS, console=console) == "ready"
    assert "Transcribed clip.wav" in page.inner_text("#progress-text")
    words = page.evaluate("window.sttApp.transcript.words")

    # The same samples through the native engine (24 kHz mono in: the browser's decoder resamples nothing).
    pcm = np.frombuffer(frames, np.int16).astype(np.float32) / 32768
    native = Transcriber(tiny_packages("q4"), silence_prefix=0.0)
    expected = [e for e in native.feed(pcm, 24000) + native.flush() if e.type == "word"]
    assert [w["text"] for w in words] == [w.text for w in expected]
    np.testing.assert_allclose([[w["start"], w["end"]] for w in words], [[w.start, w.end] for w in expected],
                               atol=1e-6)

    with page.expect_download() as download:
        page.click("#downloads [data-format=srt]")
    assert download.value.suggested_filename == "transcript.srt"
    srt = Path(download.value.path()).read_text()
    assert srt == formats.to_srt(expected, page.evaluate("window.sttApp.transcript.endOfTurns"))
    with page.expect_download() as download:
        page.click("#downloads [data-format=txt]")
    assert Path(download.value.path()).read_text() == \
        formats.to_text(expected, page.evaluate("window.sttApp.transcript.endOfTurns"))


def test_prompt_field_sets_refuses_and_clears_a_prompt(ready_page):
    """The page's prompt field (stt-client.js setPrompt): a usable prompt is reported in use, an unusable one gets
    its message next to the field (the page stays ready), "No prompt" clears it."""
    page, _ = ready_page
    try:
        check_prompt_field(page)
    finally:                  # the shared page is left as found: no prompt, its field closed
        if page.evaluate("document.getElementById('prompt').open"):
            page.click("#prompt-clear")
            page.wait_for_function("document.getElementById('prompt-status').textContent === 'No prompt.'")
            page.click("#prompt summary")


def check_prompt_field(page):
    page.click("#prompt summary")
    status = "document.getElementById('prompt-status')"
    page.fill("#prompt-text", "   ")
    page.click("#prompt-apply")
    page.wait_for_function(f"{status}.dataset.code === 'prompt'")
    assert "only whitespace" in page.inner_text("#prompt-status")
    assert page.evaluate("document.body.dataset.state") == "ready"
    page.fill("#prompt-text", "bonjour à tous")
    page.set_input_files("#prompt-audio", str(AUDIO.parent / "prompt_fr_24k.wav"))
    page.click("#prompt-apply")
    page.wait_for_function(f"{status}.textContent.startsWith('Prompt in use')")
    # 30000 samples: 16 frames, then 10 silent ones (silence=0: no prefix).
    assert page.inner_text("#prompt-status") == "Prompt in use: 4 text tokens, 2.1 s fed before each stream."
    page.click("#prompt-clear")
    page.wait_for_function(f"{status}.textContent === 'No prompt.'")
    assert page.evaluate("document.body.dataset.state") == "ready"
