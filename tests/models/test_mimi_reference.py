"""The numpy Mimi reference (float64) vs the official implementation (moshi 0.2.13, fp32, CPU) on the fixture audio:
the reference every quantised Mimi plan is held to (tests/models/test_mimi.py). Its own file so the two long
encodes run beside the engine tests."""
from __future__ import annotations

import numpy as np
from test_mimi import FRAMES

from kyutai_stt.config import MIMI
from kyutai_stt.reference import mimi as mr


def test_reference_equals_official_streaming_and_offline(fixture, pcm, official):
    """The numpy reference (float64) on the official weights: the official streaming encode over 150 frames with
    the 250-slot ring, the official offline encode with a 251-slot ring (the exact 250-step sliding window)."""
    tensors, _, dequantised = mr.package_tensors(official, None)
    latents, codes, _ = mr.encode(dequantised, pcm, frames=FRAMES)
    scale = np.abs(fixture["mimi_latents"]).max()
    assert np.abs(latents - fixture["mimi_latents"]).max() <= 1e-5 * scale
    np.testing.assert_array_equal(codes, fixture["mimi_codes"])
    latents, codes, _ = mr.encode(dequantised, pcm, frames=FRAMES, ring=MIMI.context + 1)
    assert np.abs(latents - fixture["mimi_offline_latents"]).max() <= 1e-5 * scale
    np.testing.assert_array_equal(codes, fixture["mimi_offline_codes"])
