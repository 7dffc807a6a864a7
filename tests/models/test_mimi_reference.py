"""The numpy Mimi reference (float64) vs the official implementation (moshi 0.2.13, fp32, CPU) on the fixture audio:
the reference every quantised Mimi plan is held to (tests/models/test_mimi.py). Its own file so the two long
encodes run beside the engine tests."""
from __future__ import annotations

import numpy as np
import pytest
from mimi_cases import BOTH_MIMIS, fixture_of, official_of
from test_mimi import FRAMES

from kyutai_stt.reference import mimi as mr
from kyutai_stt.weights.synthetic import MIMIS


@pytest.mark.parametrize("mimi", BOTH_MIMIS)
def test_reference_equals_official_streaming_and_offline(mimi, pcm):
    """The numpy reference (float64) on the official weights: the official streaming encode over 150 frames with
    the ring of `context` slots, the official offline encode with one slot more (the exact sliding window)."""
    fixture, cfg = fixture_of(mimi), MIMIS[mimi]
    tensors, _, dequantised = mr.package_tensors(official_of(mimi), None, cfg)
    latents, codes, _ = mr.encode(dequantised, pcm, cfg, frames=FRAMES)
    scale = np.abs(fixture["mimi_latents"]).max()
    assert np.abs(latents - fixture["mimi_latents"]).max() <= 1e-5 * scale
    np.testing.assert_array_equal(codes, fixture["mimi_codes"])
    latents, codes, _ = mr.encode(dequantised, pcm, cfg, frames=FRAMES, ring=cfg.context + 1)
    assert np.abs(latents - fixture["mimi_offline_latents"]).max() <= 1e-5 * scale
    np.testing.assert_array_equal(codes, fixture["mimi_offline_codes"])
