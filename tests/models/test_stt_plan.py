"""A whole frame (LM step, then Mimi) in one plan equals the two parts run separately, with the official
alignment: the LM step of frame k reads frame k-1's codes (start tokens at step 0)."""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from kyutai_stt.config import MIMI
from kyutai_stt.engine import device as gpu
from kyutai_stt.engine.plan import Plan
from kyutai_stt.engine.runtime import Engine
from kyutai_stt.models.lm import lm_plan
from kyutai_stt.models.mimi import build_mimi_plan
from kyutai_stt.models.stt import stt_plan
from kyutai_stt.models.variants import tuning_for

AUDIO = Path(__file__).resolve().parents[1] / "fixtures" / "speech_en_fr_24k.wav"
FRAMES = 12      # > the tiny LM's context of 8: the LM ring wraps inside the whole-frame run too


def fixture_frames(count: int) -> np.ndarray:
    with wave.open(str(AUDIO)) as f:
        pcm = np.frombuffer(f.readframes(count * MIMI.frame_size), np.int16).astype(np.float32) / 32768
    return pcm.reshape(count, MIMI.frame_size)


@pytest.fixture(scope="module")
def package(tiny_packages):
    return tiny_packages("q4")


def run(plan, package, inputs):
    engine = Engine(plan, package.read_stream)
    out = []
    for frame_inputs in inputs:
        out += engine.submit(frame_inputs)
    return out + engine.drain()


def test_whole_frame_equals_mimi_then_lm(package):
    tuning = tuning_for(*gpu.device_traits())
    tensors = package.manifest["tensors"]
    pcm = fixture_frames(FRAMES)
    whole = run(stt_plan(package, tuning), package,
                [{"pcm": frame} for frame in pcm])
    mimi = build_mimi_plan(tensors, package.mimi_config, tuning=tuning.mimi)
    codes = [r.outputs["codes"] for r in run(mimi, package, [{"pcm": frame} for frame in pcm])]
    start = np.full(package.config.n_q, package.config.card, np.uint32)
    lm_only = run(lm_plan(package, tuning), package,
                  [{"codes": c} for c in [start] + codes[:-1]])
    assert len({tuple(c) for c in codes}) > FRAMES // 2, "Mimi codes barely vary: the comparison says little"
    for k, (a, b) in enumerate(zip(whole, lm_only)):
        np.testing.assert_array_equal(a.outputs["results"], b.outputs["results"], err_msg=f"frame {k}")


def test_stages_mark_the_lm_then_mimi_and_survive_json(package):
    """The plan names its stages so a host can time them (the app's "LM x ms, Mimi y ms"): the LM's dispatches
    come first, Mimi's from the first conv."""
    tuning = tuning_for(*gpu.device_traits())
    plan = stt_plan(package, tuning)
    assert [(s.name, s.first) for s in plan.stages][0] == ("lm", 0)
    mimi = plan.stages[1]
    assert mimi.name == "mimi" and plan.dispatches[mimi.first].label.startswith("mimi")
    assert all(not d.label.startswith("mimi") for d in plan.dispatches[:mimi.first])
    assert Plan.from_json(plan.to_json()).stages == plan.stages
