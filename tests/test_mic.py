"""`kyutai-stt mic`: the live loop on the real tiny model (blocks from the fixture instead of a sound card), the
device choice, and the messages when there is no microphone."""
from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from kyutai_stt.cli.mic import LivePrinter, MicError, pick_device, run_live
from kyutai_stt.streaming.transcriber import Transcriber

ROOT = Path(__file__).resolve().parent.parent
AUDIO = ROOT / "tests" / "fixtures" / "speech_en_fr_24k.wav"
RATE = 48000                    # a usual microphone rate: the Transcriber resamples


def mic_blocks(seconds: float) -> list[np.ndarray]:
    """The fixture speech as a 48 kHz microphone would deliver it: [n, 1] float32 blocks of 80 ms."""
    with wave.open(str(AUDIO)) as f:
        pcm = np.frombuffer(f.readframes(int(seconds * 24000)), np.int16).astype(np.float32) / 32768
    up = np.interp(np.arange(len(pcm) * 2) / 2, np.arange(len(pcm)), pcm).astype(np.float32)
    block = int(RATE * 0.08)
    return [up[i:i + block, None] for i in range(0, len(up), block)]


@pytest.fixture(scope="module")
def transcriber(tiny_packages):
    return Transcriber(tiny_packages("q4"), silence_prefix=0.0)


def test_live_loop_prints_the_words_and_ends_of_turn_it_recognises(transcriber):
    blocks = mic_blocks(4.0)
    expected = []
    for b in blocks:
        expected += transcriber.feed(b, RATE)
    expected += transcriber.flush()
    words = [e.text for e in expected if e.type == "word"]
    turns = [e for e in expected if e.type == "endOfTurn"]
    assert len(words) >= 2, "the tiny model should recognise several words in 4 s of speech"
    out = io.StringIO()
    run_live(transcriber, iter(blocks), RATE, LivePrinter(out, timestamps=False, tty=False))
    printed = out.getvalue()
    assert printed.count("end of turn") == len(turns)
    assert re.sub(r"⏎ \(end of turn at [0-9.]+ s\)", " ", printed).split() == " ".join(words).split()


def test_ctrl_c_flushes_the_last_words(transcriber):
    blocks = mic_blocks(2.0)

    def interrupted():
        yield from blocks
        raise KeyboardInterrupt

    out = io.StringIO()
    run_live(transcriber, interrupted(), RATE, LivePrinter(out, timestamps=True, tty=False))
    lines = [line for line in out.getvalue().splitlines() if line.startswith("[")]
    assert lines, "the flush released words"
    assert all(float(line[1:8]) <= float(line[10:18]) <= 2.0 + 1e-6 for line in lines)


class FakePortAudio:
    """sounddevice's device listing, for the choice logic only."""
    class default:
        device = (2, 0)

    def __init__(self, devices):
        self.devices = devices

    def query_devices(self):
        return self.devices


def test_device_choice():
    out = {"name": "HDMI", "max_input_channels": 0}
    usb = {"name": "USB Mic", "max_input_channels": 1}
    built_in = {"name": "Built-in Microphone", "max_input_channels": 2}
    sd = FakePortAudio([out, usb, built_in])
    assert pick_device(sd, None)["name"] == "Built-in Microphone"          # the system default
    assert pick_device(sd, "usb")["name"] == "USB Mic"
    assert pick_device(sd, "1")["name"] == "USB Mic"
    with pytest.raises(MicError, match="no input device matches 'webcam'"):
        pick_device(sd, "webcam")
    with pytest.raises(MicError, match="no microphone found"):
        pick_device(FakePortAudio([out]), None)


def test_mic_command_on_a_machine_without_a_microphone(tmp_path):
    """This machine has no sound card: the command says so (or that PortAudio is missing) and exits 2."""
    env = {**os.environ, "KYUTAI_STT_CACHE": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "kyutai_stt.cli", "mic", "--model", str(tmp_path)],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert "microphone" in r.stderr, r.stderr
