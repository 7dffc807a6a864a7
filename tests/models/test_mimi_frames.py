"""Mimi encoding several frames a submission (issue 16, item 2: files), against frame by frame streaming.

A plan of F frames a submission runs every conv and linear layer over F frames' steps at once (each weight read
once for them all) and attention frame by frame (attention_chunk.wgsl FIRST_ROW), carrying the conv histories and
the ring across submissions as the one-frame plan carries them across frames. Its codes and latents must be the
one-frame plan's bit for bit (same work split: each output's sum runs in the same order), for every stream, past
the ring's wrap, with a stream restarted between submissions."""
from __future__ import annotations

import math

import numpy as np
import pytest
from mimi_cases import official_of

from kyutai_stt.engine.runtime import Engine
from kyutai_stt.models import mimi
from kyutai_stt.models.mimi import INPUT_ELU, INPUT_LAYER_NORM, build_mimi_plan
from kyutai_stt.reference import mimi as mr
from kyutai_stt.weights.synthetic import MIMIS

FRAME = 1920
FRAMES = 3              # a submission's frames
SUBMISSIONS = 5         # 15 frames: past the tiny Mimi's context (9 frames), both parities
RESTART = 2             # stream 1 restarts at this submission (its frames until then are noise)


def one_frame_run(engine: Engine, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """audio [frames, FRAME] on the one-frame, one-stream plan from a reset: codes [frames, 32], latents."""
    engine.reset()
    results = []
    for frame in audio:
        results += engine.submit({"pcm": frame})
    results += engine.drain()
    return (np.array([r.outputs["codes"] for r in results]),
            np.array([r.outputs["latent"].view(np.float32) for r in results]))


# "gpu-many" takes minutes of lavapipe (tests/models/test_streams.py): run on a lent GPU (-m huge).
@pytest.mark.parametrize("work_split", ["cpu", pytest.param("gpu-many", marks=pytest.mark.huge)])
def test_frames_a_submission_equal_frame_by_frame(pcm, work_split, policy="q4-small"):
    cfg = MIMIS["tiny"]
    tensors, streams, _ = mr.package_tensors(official_of("tiny"), policy, cfg)
    total = FRAMES * SUBMISSIONS
    late = FRAMES * (SUBMISSIONS - RESTART)
    audio = [pcm[:total * FRAME].reshape(total, FRAME), pcm[5 * FRAME:(5 + late) * FRAME].reshape(late, FRAME)]
    one = Engine(build_mimi_plan(tensors, cfg, tuning=work_split), streams.__getitem__)
    expected = [one_frame_run(one, a) for a in audio]

    plan = build_mimi_plan(tensors, cfg, tuning=work_split, streams=2, frames=FRAMES)
    assert plan.buffer(plan.inputs["pcm"]).shape == [2, FRAMES, FRAME]
    assert plan.buffer(plan.outputs["codes"]).shape == [2, FRAMES, cfg.n_q]
    engine = Engine(plan, streams.__getitem__)
    noise = (0.1 * np.random.default_rng(3).standard_normal((FRAMES, FRAME))).astype(np.float32)
    results = []
    for submission in range(SUBMISSIONS):
        if submission == RESTART:
            engine.reset_stream(1)
        k = submission - RESTART
        second = audio[1][k * FRAMES:(k + 1) * FRAMES] if k >= 0 else noise
        results += engine.submit({"pcm": np.stack([audio[0][submission * FRAMES:(submission + 1) * FRAMES], second])})
    results += engine.drain()
    codes = np.array([r.outputs["codes"].reshape(2, FRAMES, cfg.n_q) for r in results])    # [submission, stream, ..]
    latents = np.array([r.outputs["latent"].view(np.float32).reshape(2, FRAMES, -1) for r in results])
    got = [(codes[:, 0].reshape(total, -1), latents[:, 0].reshape(total, -1)),
           (codes[RESTART:, 1].reshape(late, -1), latents[RESTART:, 1].reshape(late, -1))]
    for s in range(2):
        np.testing.assert_array_equal(got[s][0], expected[s][0], f"stream {s} codes")
        np.testing.assert_array_equal(got[s][1], expected[s][1], f"stream {s} latents")


def test_one_frame_a_submission_is_the_streaming_plan():
    """frames=1 builds exactly the plan the whole-frame and stream plans have always had (no ROWS/FIRST_ROW)."""
    cfg = MIMIS["tiny"]
    tensors, _, _ = mr.package_tensors(official_of("tiny"), "q4-small", cfg)
    assert build_mimi_plan(tensors, cfg, tuning="cpu", frames=1).to_json() == \
        build_mimi_plan(tensors, cfg, tuning="cpu").to_json()
    several = build_mimi_plan(tensors, cfg, tuning="cpu", frames=FRAMES)
    attention = [d for d in several.dispatches if d.label.endswith(".attention")]
    assert len(attention) == cfg.num_layers * FRAMES
    pipelines = {p.name: p for p in several.pipelines}
    assert sorted({pipelines[d.pipeline].constants["FIRST_ROW"] for d in attention}) == [0, 2, 4]
    with pytest.raises(ValueError, match="frames must be a positive integer"):
        build_mimi_plan(tensors, cfg, tuning="cpu", frames=0)


def test_large_grids_take_short_slices():
    """"gpu-many" gives slices of 16 columns (conv1d.wgsl TILE_K) to grids of SHORT_SLICE_WORKGROUPS workgroups or
    more, 32 to smaller ones: the real Mimi's first strided conv at 256 streams (3840 workgroups) and at 16 (240),
    and its transformer's FFN-in (2 steps a frame) at 256 streams (256)."""
    assert mimi.SHORT_SLICE_WORKGROUPS == 1024
    down = mimi._tiling(480, 128, 8 * 64, "gpu-many", 256, INPUT_ELU)
    assert math.prod(down["workgroups"]) == 3840 and down["constants"]["TILE_K"] == 16
    assert mimi._tiling(480, 128, 8 * 64, "gpu-many", 16, INPUT_ELU)["constants"]["TILE_K"] == 32
    ffn_in = mimi._tiling(2, 2048, 512, "gpu-many", 256, INPUT_LAYER_NORM)
    assert math.prod(ffn_in["workgroups"]) == 256 and ffn_in["constants"]["TILE_K"] == 32


def test_column_ranges_follow_the_layer_not_the_frames_or_streams():
    """"gpu-many" cuts K into ranges for the layers of 1-2 steps a frame (models/mimi.py k_splits): by the steps of
    one frame, so that a plan of several frames a submission, or of more streams, sums each output in the same
    order as one frame of one stream's plan of that split (the bit-for-bit comparison above, on a GPU)."""
    cfg = MIMIS["tiny"]
    tensors, _, _ = mr.package_tensors(official_of("tiny"), "q4-small", cfg)

    def ranges(**shape):
        plan = build_mimi_plan(tensors, cfg, tuning="gpu-many", **shape)
        pipelines = {p.name: p for p in plan.pipelines}
        return [(d.label, pipelines[d.pipeline].constants.get("K_SPLITS"), pipelines[d.pipeline].entry)
                for d in plan.dispatches if pipelines[d.pipeline].kernel == "conv1d"]

    one = ranges(streams=16)
    assert ranges(streams=16, frames=FRAMES) == one == ranges(streams=40)
    split = {label for label, splits, entry in one if entry == "tiled" and splits > 1}
    combined = {label for label, _, entry in one if entry == "tiled_combine"}
    assert split == combined, "each layer with ranges is followed by the ranges' combine"
    assert split == {"mimi.blocks.3.down", "mimi.conv_out", "mimi.downsample"}, "the tiny Mimi's layers of 1-2 steps"
