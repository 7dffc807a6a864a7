"""Fixtures of the Mimi tests (test_mimi.py: the engine; test_mimi_reference.py: the numpy reference): the
official fixture's arrays, the fixture audio, the seed-0 encoder tensors (a module may define its own `fixture`)."""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from kyutai_stt.reference import mimi as mr

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "reference_tiny_seed0"
AUDIO = ROOT / "tests" / "fixtures" / "speech_en_fr_24k.wav"


@pytest.fixture(scope="module")
def fixture():
    with np.load(FIXTURE.with_suffix(".npz")) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def pcm():
    with wave.open(str(AUDIO)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768


@pytest.fixture(scope="module")
def official():
    """The seed-0 Mimi encoder tensors in package form, f32 (before any quantisation)."""
    return mr.official_encoder_tensors(0)
