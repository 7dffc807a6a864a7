"""The numpy Mimi reference (float64) vs the official implementation (moshi 0.2.13, fp32, CPU) on the fixture audio:
the reference every quantised Mimi plan is held to (tests/models/test_mimi.py). Its own file so the two long
encodes run beside the engine tests."""
from __future__ import annotations

import numpy as np
import pytest
from mimi_cases import BOTH_MIMIS, fixture_of, official_of

from kyutai_stt.reference import mimi as mr
from kyutai_stt.weights.synthetic import MIMIS

REFERENCE_FRAMES = {"tiny": 150, "real": 20}


@pytest.mark.parametrize("mimi", BOTH_MIMIS)
def test_reference_equals_official_streaming_and_offline(mimi, pcm):
    """The numpy reference (float64) on the official weights: the official streaming encode with the ring of
    `context` slots, the official offline encode with one slot more (the exact sliding window), over all 150 frames
    for the tiny Mimi (its ring wraps at frame 9); the first 20 for the real one (its shapes: the wrap at frame 125
    is the same code, and tests/models/test_mimi.py holds the engine to the official encode across it), where the
    one encode, before any wrap, is both the streaming and the offline one."""
    fixture, cfg = fixture_of(mimi), MIMIS[mimi]
    frames = REFERENCE_FRAMES[mimi]
    fixture = {k: v[:frames] for k, v in fixture.items() if k.startswith("mimi_")}
    tensors, _, dequantised = mr.package_tensors(official_of(mimi), None, cfg)
    latents, codes, _ = mr.encode(dequantised, pcm, cfg, frames=frames)
    scale = np.abs(fixture["mimi_latents"]).max()
    assert np.abs(latents - fixture["mimi_latents"]).max() <= 1e-5 * scale
    np.testing.assert_array_equal(codes, fixture["mimi_codes"])
    if 2 * frames > cfg.context:    # past the ring's wrap the offline window differs (before it: the same sums)
        latents, codes, _ = mr.encode(dequantised, pcm, cfg, frames=frames, ring=cfg.context + 1)
    assert np.abs(latents - fixture["mimi_offline_latents"]).max() <= 1e-5 * scale
    np.testing.assert_array_equal(codes, fixture["mimi_offline_codes"])
