"""Fixtures of the Mimi tests: the fixture audio (the Mimis themselves: mimi_cases.py)."""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

AUDIO = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "speech_en_fr_24k.wav"


@pytest.fixture(scope="module")
def pcm():
    with wave.open(str(AUDIO)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
