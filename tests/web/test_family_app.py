"""The app with a 2.6B-family package (the tiny seed-0 sibling: no semantic VAD, 4000 pieces, 2.5 s delay) given
by `?model=`: it says which model runs, shows no end-of-turn indicator and says why, transcribes a file exactly as
the native engine does with the model's delay and silence prefix and a text prompt (slow), and refuses clearly on
a device whose memory cannot hold the model."""
from __future__ import annotations

import json
import wave

import numpy as np
import pytest
from chromium import AUDIO
from test_app import RUN_TIMEOUT_MS, open_app, wait_state

from kyutai_stt.config import stream_settings
from kyutai_stt.site.build import PLANS_FILE, plans_document
from kyutai_stt.streaming.prompt import Prompt
from kyutai_stt.streaming.transcriber import Transcriber

FILE_SECONDS = 1.0
# Long enough to be still enforced after the first 31 steps, whose words the official rules drop: the transcript is
# then the prompt's continuation, where the unprompted random model writes other words.
PROMPT_TEXT = "the quick brown fox jumps over the lazy dog then takes a short nap in the warm sun"
FAMILY = "/family/"           # where the test server serves the 2.6B-family package and its plans.json


@pytest.fixture(scope="module")
def family(server, tiny26_packages, tmp_path_factory):
    """The tiny 2.6B-family q4 package at /family/model/ and its plans at /family/plans.json, on the app's server."""
    package = tiny26_packages("q4")
    directory = tmp_path_factory.mktemp("family")
    (directory / "model").symlink_to(package.root)
    (directory / PLANS_FILE).write_text(json.dumps(plans_document(package)))
    server.mounts[FAMILY] = directory
    yield package
    server.mounts.pop(FAMILY, None)


def query(extra: str = "") -> str:
    return f"model={FAMILY.lstrip('/')}model/&plans={FAMILY.lstrip('/')}{PLANS_FILE}{extra}"


@pytest.mark.slow
def test_2_6b_family_package_says_which_model_and_transcribes_as_the_native_engine(browser, server, family,
                                                                                    tmp_path):
    """The page says which model runs and why it shows no end of turn; then a file, with a text prompt set in the
    page's field. Slow (~2 min on SwiftShader under load): the 31-frame delay means 33 flush frames of the
    full-size Mimi. (One page for both: each load compiles the plans again, ~30 s here.)"""
    settings = stream_settings(family.config)
    assert settings["delay_steps"] == 31 and not settings["end_of_turn"]
    page, console, requests = open_app(browser, server, query())
    assert wait_state(page, ["ready", "error"], console=console) == "ready", page.inner_text("#error")
    assert any("/family/model/" in u for u in requests), "the package came from ?model="
    model = page.inner_text("#model")
    assert model.startswith(f"Running {settings['model']['name']} (English)") and "3 layers" in model, model
    assert "2.5 s behind" in model
    assert page.is_hidden("#turn"), "no end-of-turn indicator without the semantic VAD"
    assert page.is_visible("#no-eot") and "no semantic voice-activity heads" in page.inner_text("#no-eot")
    info = page.evaluate("window.sttApp.client.info")
    assert info["delaySteps"] == 31 and info["silencePrefix"] == settings["silence_prefix"] == 1.0
    assert info["endOfTurn"] is False

    page.click("#prompt summary")
    page.fill("#prompt-text", PROMPT_TEXT)
    page.click("#prompt-apply")
    page.wait_for_function("document.getElementById('prompt-status').textContent.startsWith('Prompt in use')")
    clip = tmp_path / "clip.wav"
    with wave.open(str(AUDIO)) as f:
        params, frames = f.getparams(), f.readframes(int(FILE_SECONDS * f.getframerate()))
    with wave.open(str(clip), "wb") as out:
        out.setparams(params)
        out.writeframes(frames)
    page.set_input_files("#file", str(clip))
    wait_state(page, ["busy"], timeout=30_000, console=console)
    assert wait_state(page, ["ready", "error"], timeout=RUN_TIMEOUT_MS, console=console) == "ready"
    words = page.evaluate("window.sttApp.transcript.words")
    assert page.evaluate("window.sttApp.transcript.endOfTurns") == []

    # The native engine with the model's own settings (silence prefix 1 s, delay 31 frames) gives the same words.
    pcm = np.frombuffer(frames, np.int16).astype(np.float32) / 32768
    native = Transcriber(family, prompt=Prompt(PROMPT_TEXT))
    assert native.decoder_config.delay_steps == 31 and native.decoder_config.silence_prefix == 1.0
    events = native.feed(pcm, 24000) + native.flush()
    expected = [e for e in events if e.type == "word"]
    assert not [e for e in events if e.type == "endOfTurn"]
    assert [w["text"] for w in words] == [w.text for w in expected]
    assert expected and "".join(w.text for w in expected).replace(" ", "") in PROMPT_TEXT.replace(" ", ""), \
        "the prompt steered both"
    np.testing.assert_allclose([[w["start"], w["end"]] for w in words], [[w.start, w.end] for w in expected],
                               atol=1e-6)
    page.close()


def test_a_device_too_small_for_the_model_is_refused_clearly(browser, server, family):
    """A device far too small (navigator.deviceMemory 0.05 GiB, through the page's test hook): the plan's buffers
    (~0.022 GiB for the tiny model) exceed a quarter of it; the page says so and loads nothing."""
    page, console, requests = open_app(browser, server, query("&test-device-memory=0.05"))
    assert wait_state(page, ["ready", "error"], console=console) == "error"
    assert page.get_attribute("#error", "data-code") == "adapter-limits"
    message = page.inner_text("#error-message")
    assert "cannot run the model" in message and "GB of GPU memory" in message and "0.05 GiB" in message, message
    assert "smaller model" in page.inner_text("#error-fix")
    assert not any(u.endswith(".gguf") for u in requests), "nothing was downloaded for a model that cannot run"
    page.close()
