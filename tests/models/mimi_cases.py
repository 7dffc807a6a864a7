"""The two seed-0 Mimis the Mimi tests run on (test_mimi.py: the engine; test_mimi_reference.py: the numpy
reference): the tiny one (every stage, a quarter of the time, its ring wrapped after 9 frames) and the real one,
whose cases are `full_size` tests (their own lane). Per Mimi: the official fixture's arrays and the encoder
tensors."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

from kyutai_stt.reference import mimi as mr
from kyutai_stt.weights.synthetic import MIMIS

ROOT = Path(__file__).resolve().parents[2]
# The official encodes of the fixture audio by each seed-0 Mimi (the tiny LM's fixtures: their Mimi arrays).
FIXTURES = {"tiny": ROOT / "tests" / "fixtures" / "reference_tiny_seed0",
            "real": ROOT / "tests" / "fixtures" / "reference_tiny_realmimi_seed0"}
BOTH_MIMIS = ["tiny", pytest.param("real", marks=[pytest.mark.slow, pytest.mark.full_size])]


@functools.lru_cache(maxsize=2)
def fixture_of(mimi: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES[mimi].with_suffix(".npz")) as z:
        return {k: z[k] for k in z.files}


@functools.lru_cache(maxsize=2)
def official_of(mimi: str) -> dict[str, np.ndarray]:
    """The seed-0 encoder tensors of that Mimi in package form, f32 (before any quantisation)."""
    return mr.official_encoder_tensors(0, MIMIS[mimi])
