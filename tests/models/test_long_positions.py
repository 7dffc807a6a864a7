"""Long streams: the engine at the absolute positions of 2 h, 10 h and 24 h of audio vs the official implementation.

The fixture (tests/fixtures/long_positions_tiny_seed0, `tools/make_reference.py --synth tiny --long-positions`)
holds moshi's teacher-forced LM steps and streaming Mimi frames started from a zero state at frame F = 90,000,
450,000 and 1,080,000 (LM position F, Mimi transformer position 2F): all that depends on the position there is
RoPE, whose angles f32(position) * freq reach 2.2e6 rad. The engine starts at the same frame (Engine.reset
(first_frame=F): zero state, every ring slot counted as written, as in moshi's ring at that offset). Weights are the
official ones (the f16 package: LM bf16 values in f16, Mimi in f32). Tolerances (docs/validation.md): logits within
1e-5 of max |logit|, tokens equal, VAD within 1e-5; Mimi latents within 1e-5 of max |latent|, codes equal.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kyutai_stt.engine import device as gpu
from kyutai_stt.engine.runtime import Engine
from kyutai_stt.models.lm import lm_plan
from kyutai_stt.models.mimi import build_mimi_plan
from kyutai_stt.models.variants import tuning_for
from kyutai_stt.reference import mimi as mr

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "long_positions_tiny_seed0"
HOURS = (2, 10, 24)
TOLERANCE = 1e-5                 # of max |logit| and of max |latent|; absolute for VAD probabilities


@pytest.fixture(scope="module")
def fixture():
    with np.load(FIXTURE.with_suffix(".npz")) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def lm_engine(tiny_packages):
    package = tiny_packages("f16")
    return Engine(lm_plan(package, tuning_for(*gpu.device_traits())),
                  package.read_stream)


@pytest.fixture(scope="module")
def mimi_engine():
    tensors, streams, _ = mr.package_tensors(mr.official_encoder_tensors(0), None)
    tuning = "cpu" if gpu.adapter_summary()["adapter_type"].lower() == "cpu" else "gpu"
    return Engine(build_mimi_plan(tensors, tuning=tuning), streams.__getitem__)


def frame_of(hours: int) -> int:
    return hours * 3600 * 24_000 // 1920


@pytest.mark.parametrize("hours", HOURS)
def test_lm_at_long_positions_equals_official(fixture, lm_engine, hours, capsys):
    inputs = fixture["lm_input_tokens"]
    lm_engine.reset(first_frame=frame_of(hours))
    worst = 0.0
    for k, row in enumerate(inputs):
        lm_engine.submit({"codes": row[1:].astype(np.uint32), "token": np.array([row[0]], np.uint32)})
        (result,) = lm_engine.drain()
        logits = lm_engine.read("lm.logits").view(np.float32)
        words = result.outputs["results"]
        expected = fixture[f"long_{hours}h_lm_logits"][k]
        error = float(np.abs(logits - expected).max() / np.abs(expected).max())
        worst = max(worst, error)
        assert error <= TOLERANCE, f"{hours} h, step {k}: logits error {error:.2e} of max |logit|"
        assert int(words[0]) == fixture[f"long_{hours}h_lm_tokens"][k], f"{hours} h, step {k}: token"
        np.testing.assert_allclose(words[1:].view(np.float32), fixture[f"long_{hours}h_lm_vad"][k], rtol=0,
                                   atol=TOLERANCE, err_msg=f"{hours} h, step {k}: VAD")
    with capsys.disabled():
        print(f"\n[LM at {hours} h = position {frame_of(hours)}] {len(inputs)} steps, logits error "
              f"{worst:.1e} of max |logit|, tokens equal")


@pytest.mark.parametrize("hours", HOURS)
def test_mimi_at_long_positions_equals_official(fixture, mimi_engine, hours, capsys):
    pcm = fixture["pcm"]
    frames = len(pcm) // 1920
    mimi_engine.reset(first_frame=frame_of(hours))
    results = []
    for f in range(frames):
        results += mimi_engine.submit({"pcm": pcm[f * 1920:(f + 1) * 1920]})
    results += mimi_engine.drain()
    latents = np.array([r.outputs["latent"].view(np.float32) for r in results])
    codes = np.array([r.outputs["codes"] for r in results]).astype(np.int64)
    expected = fixture[f"long_{hours}h_mimi_latents"]
    error = float(np.abs(latents - expected).max() / np.abs(expected).max())
    margins = fixture[f"long_{hours}h_mimi_margins"]
    with capsys.disabled():
        print(f"\n[Mimi at {hours} h = position {2 * frame_of(hours)}] {frames} frames, latent error {error:.1e} "
              f"of max |latent|, {int((codes == fixture[f'long_{hours}h_mimi_codes']).sum())}/{codes.size} codes "
              f"equal (smallest official margin {margins.min():.1e})")
    assert error <= TOLERANCE
    np.testing.assert_array_equal(codes, fixture[f"long_{hours}h_mimi_codes"])
