"""The Mimi encoder plan on the native engine vs the official implementation (moshi 0.2.13, fp32, CPU).

The fixtures (mimi_cases.FIXTURES: the tiny Mimi's and the real one's) hold the official streaming and offline
encodes of the 12 s fixture audio (150 frames) by the seed-0 synthetic Mimi. The engine runs on those very weights
in f32 (the "virtual package" of mimi_reference.package_tensors: the converter's name map and transforms,
no quantisation), so it differs from moshi only by fp32 summation order. The quantised plans (q4-small and q4
policies) are held to the numpy reference on their own dequantised weights; the quantisation error itself is
measured separately (docs/mimi.md).

Tolerances (docs/mimi.md):
- latents within LATENT_TOLERANCE x max |latent| (seen: 5e-6 of 2.1 over 150 frames, i.e. 2.4e-6 relative);
- codes: a code can only differ from the official one if the official distance margin (2nd-best minus best,
  `mimi_code_margins`) is below 2 |delta r| + RVQ_NOISE, where delta r = W_in (latent - official latent) is the
  residual's own error (|d(r, c) - d(r', c)| <= |r - r'|). Codes must be equal wherever the margin is larger; where
  it is not (a near-tie) the engine's choice must be that close to the best; after a code differs, the group's
  later residuals differ and are not compared. Every differing code is reported with its margin.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
from mimi_cases import fixture_of, official_of

from kyutai_stt.engine import device as gpu
from kyutai_stt.engine.plan import Plan, PlanBuilder
from kyutai_stt.engine.runtime import Engine
from kyutai_stt.models.mimi import build_mimi, build_mimi_plan
from kyutai_stt.reference import mimi as mr
from kyutai_stt.weights.synthetic import MIMIS

# (Mimi, frames) compared with the official streaming encode: the tiny Mimi past its transformer's context (19
# steps = 9 frames) by 31 frames; the real one at its real shapes over 24 frames (slow) and past its context (250
# steps = 125 frames) by 25 (huge: ~4 min of lavapipe; the ring logic it would add is the tiny case's, with the same
# kernels, and tests/kernels/test_mimi_kernels.py takes rings longer than a workgroup past their wrap).
F32_CASES = [pytest.param("tiny", 40, id="tiny"),
             pytest.param("real", 24, id="real", marks=[pytest.mark.slow, pytest.mark.full_size]),
             pytest.param("real", 150, id="real-past-context", marks=[pytest.mark.huge, pytest.mark.full_size])]
QUANTISED_FRAMES = 6             # quantised plans vs the reference: no context effect to wait for
LATENT_TOLERANCE = 5e-5          # of max |latent|
RVQ_NOISE = 1e-4                 # distance units: f32 rounding of |c|^2 - 2 r.c over 256 dims, with margin


@pytest.fixture(scope="module")
def tuning():
    return "cpu" if gpu.adapter_summary()["adapter_type"].lower() == "cpu" else "gpu"


def context_frames(mimi: str) -> int:
    """Frames up to which moshi's streaming encode equals its offline one (docs/reference.md, quirk 1)."""
    return MIMIS[mimi].context // 2


def encode_on_engine(engine: Engine, pcm: np.ndarray, frames: int):
    """Latents [F, L] and codes [F, 32] as the engine reads them back (pipelined)."""
    engine.reset()
    results = []
    for f in range(frames):
        results += engine.submit({"pcm": pcm[f * 1920:(f + 1) * 1920]})
    results += engine.drain()
    assert [r.frame for r in results] == list(range(frames))
    latents = np.array([r.outputs["latent"].view(np.float32) for r in results])
    codes = np.array([r.outputs["codes"] for r in results]).astype(np.int64)
    return latents, codes


def compare_codes(codes, ref_codes, ref_margins, latents, ref_latents, rvq_in, books, sqnorms):
    """Apply the near-tie rule of the module docstring. Returns (decided and equal, [(frame, level, margin)])."""
    n_q, bins = sqnorms.reshape(codes.shape[1], -1).shape
    dim = books.shape[1]
    books = books.astype(np.float64).reshape(n_q, bins, dim)
    sq = sqnorms.astype(np.float64).reshape(n_q, bins)
    delta = (latents.astype(np.float64) - ref_latents) @ rvq_in.astype(np.float64).T          # [F, 2 * dim]
    differing, decided = [], 0
    for f in range(len(codes)):
        for group, levels in ((0, range(0, 1)), (1, range(1, n_q))):
            allowed = 2 * np.linalg.norm(delta[f, group * dim:(group + 1) * dim]) + RVQ_NOISE
            r = ref_latents[f].astype(np.float64) @ rvq_in[group * dim:(group + 1) * dim].astype(np.float64).T
            for level in levels:
                if codes[f, level] != ref_codes[f, level]:
                    distances = np.sqrt(np.maximum(sq[level] - 2 * books[level] @ r + r @ r, 0))
                    margin = float(ref_margins[f, level])
                    differing.append((f, level, margin))
                    assert margin <= allowed, f"frame {f} level {level}: margin {margin:.3g} > {allowed:.3g}"
                    gap = distances[codes[f, level]] - distances[ref_codes[f, level]]
                    assert gap <= allowed, f"frame {f} level {level}: chosen entry {gap:.3g} farther than best"
                    break                    # the group's later residuals differ: not comparable
                decided += 1
                r = r - books[level, ref_codes[f, level]]
    return decided, differing


def report(capsys, what, latents, ref_latents, decided, differing):
    error = np.abs(latents - ref_latents).max()
    scale = np.abs(ref_latents).max()
    smallest = min((m for _, _, m in differing), default=None)
    with capsys.disabled():
        print(f"\n[{what}] latent max abs error {error:.3g} (max |latent| {scale:.3g}); codes: {decided} compared "
              f"equal, {len(differing)} differ at near-ties" +
              (f" (margins {sorted(round(m, 6) for _, _, m in differing)}, smallest {smallest:.3g})"
               if differing else ""))
    assert error <= LATENT_TOLERANCE * scale


# ------------------------------------------------------------------------------------------------------ plan
def test_plan_fragment_composes_into_a_shared_builder():
    """build_mimi appends to any builder: its buffers are all `mimi.*` (plus what the caller passed), it adds two
    step fields, writes the codes at the given offset of the caller's buffer, and the plan survives JSON."""
    tensors, _, _ = mr.package_tensors(official_of("real"), "q4-small")
    b = PlanBuilder("frame")
    b.step_field("position")                                          # e.g. the LM's
    ids = b.buffer("lm.ids", "state", 4 * 33, (33,), "u32")
    pcm = b.buffer("pcm", "input", 4 * 1920, (1920,))
    fragment = build_mimi(b, tensors, pcm, ids, "step", codes_offset=0)
    b.buffer("step", "step", 4 * len(b.step_fields), (len(b.step_fields),), "u32")
    plan = b.build("step")
    assert [f.name for f in plan.step_fields] == ["position", "mimi.position", "mimi.parity"]
    assert (fragment.position_field, fragment.parity_field) == (1, 2)
    assert [plan.step_fields[1].value(f) for f in range(3)] == [0, 2, 4]
    assert [plan.step_fields[2].value(f) for f in range(3)] == [0, 1, 0]
    mine = {n for d in plan.dispatches for n in d.bindings.values()} - {"lm.ids", "pcm", "step"}
    assert all(n.startswith("mimi.") for n in mine), sorted(n for n in mine if not n.startswith("mimi."))
    assert fragment.dispatches == len(plan.dispatches) == 80
    assert Plan.from_json(plan.to_json()) == plan
    pipelines = {p.name: p for p in plan.pipelines}
    formats = {pipelines[d.pipeline].constants["FORMAT"] for d in plan.dispatches
               if d.label.startswith("mimi.layers") and pipelines[d.pipeline].kernel == "conv1d"}
    assert formats == {3}                                             # q4-small: the transformer reads q4


@pytest.mark.parametrize("mimi, frames", F32_CASES)
def test_engine_f32_equals_official_streaming(mimi, frames, pcm, tuning, capsys):
    """On the official weights: latents and codes equal the official streaming encode; up to the transformer's
    context also the offline one, and past it (where the ring wraps) no longer (F32_CASES)."""
    fixture, cfg, context = fixture_of(mimi), MIMIS[mimi], context_frames(mimi)
    tensors, streams, dequantised = mr.package_tensors(official_of(mimi), None, cfg)
    started = time.perf_counter()
    engine = Engine(build_mimi_plan(tensors, cfg, tuning=tuning), streams.__getitem__)
    latents, codes = encode_on_engine(engine, pcm, frames)
    elapsed = time.perf_counter() - started
    official = {k: fixture[k][:frames] for k in ("mimi_codes", "mimi_code_margins", "mimi_latents")}
    decided, differing = compare_codes(codes, official["mimi_codes"], official["mimi_code_margins"], latents,
                                       official["mimi_latents"], dequantised["mimi.rvq_in"],
                                       dequantised["mimi.codebooks"], dequantised["mimi.codebook_sqnorms"])
    report(capsys, f"{mimi} Mimi: f32 engine vs official streaming, {frames} frames, {elapsed:.0f} s", latents,
           official["mimi_latents"], decided, differing)
    assert decided >= frames * 32 - 5 * 31
    offline = fixture["mimi_offline_latents"][:min(context, frames)]
    assert np.abs(latents[:len(offline)] - offline).max() <= LATENT_TOLERANCE * np.abs(offline).max()
    if frames <= context:
        return
    # Past the context the official streaming encode itself leaves the offline one (a ring of `context` slots, 2
    # steps per chunk: docs/reference.md, quirk 1); the engine follows the streaming encode, as the live model does.
    late = np.abs(latents[context:] - fixture["mimi_offline_latents"][context:frames]).max()
    assert late > 10 * LATENT_TOLERANCE * np.abs(offline).max()


# The "gpu-many" split (conv1d.wgsl's `tiled` entry point) takes minutes of lavapipe at the real size: -m huge, run
# on a lent GPU. The q4-small policy's q4/q8 layouts under the "gpu" split (its teams' K reductions): the kernel
# tests (tests/kernels/test_mimi_kernels.py), every format with every split.
@pytest.mark.parametrize("policy, work_split, mimi", [("q4-small", "cpu", "tiny"), ("q4", "cpu", "tiny"),
                                                      ("q4", "gpu", "real"),
                                                      pytest.param("q4", "gpu-many", "real", marks=pytest.mark.huge)])
def test_engine_quantised_equals_reference_on_its_weights_and_resets(pcm, policy, work_split, mimi, capsys):
    """A package precision policy (q4-small: q4/q8/f32 per tensor; q4, the default: f16/f32; docs/weights.md) on
    the engine vs the numpy reference on the same dequantised weights, 6 frames, with either work split; then
    reset() restarts the stream exactly. The default policy also at the real size."""
    frames, cfg = QUANTISED_FRAMES, MIMIS[mimi]
    tensors, streams, dequantised = mr.package_tensors(official_of(mimi), policy, cfg)
    engine = Engine(build_mimi_plan(tensors, cfg, tuning=work_split), streams.__getitem__)
    latents, codes = encode_on_engine(engine, pcm, frames)
    ref_latents, ref_codes, ref_margins = mr.encode(dequantised, pcm, cfg, frames=frames)
    decided, differing = compare_codes(codes, ref_codes, ref_margins, latents, ref_latents,
                                       dequantised["mimi.rvq_in"], dequantised["mimi.codebooks"],
                                       dequantised["mimi.codebook_sqnorms"])
    report(capsys, f"{mimi} Mimi, {policy}-policy engine ({work_split} split) vs numpy reference on its weights, "
                   f"{frames} frames",
           latents, ref_latents, decided, differing)
    assert decided >= frames * 32 - 31
    again_latents, again_codes = encode_on_engine(engine, pcm, 3)
    np.testing.assert_array_equal(again_codes, codes[:3])
    np.testing.assert_array_equal(again_latents, latents[:3])


def test_near_tie_rule_accepts_a_flipped_near_tie_and_nothing_else():
    """The comparison itself: with the official latents, flipping the fixture's closest call (margin 8e-5) to its
    runner-up is accepted as a near-tie (and ends that group's comparison); flipping a clear choice fails."""
    fixture, cfg = fixture_of("tiny"), MIMIS["tiny"]
    _, _, dequantised = mr.package_tensors(official_of("tiny"), None, cfg)
    args = (dequantised["mimi.rvq_in"], dequantised["mimi.codebooks"], dequantised["mimi.codebook_sqnorms"])
    latents, codes, margins = fixture["mimi_latents"], fixture["mimi_codes"], fixture["mimi_code_margins"]
    frame, level = np.unravel_index(np.argmin(margins), margins.shape)
    assert margins[frame, level] < RVQ_NOISE

    def runner_up(f, lv):
        dim = cfg.codebook_dim
        group = 0 if lv == 0 else 1
        books = dequantised["mimi.codebooks"].astype(np.float64).reshape(cfg.n_q, cfg.bins, dim)
        r = latents[f].astype(np.float64) @ dequantised["mimi.rvq_in"][group * dim:(group + 1) * dim].T.astype(
            np.float64)
        for previous in range(1 if group else 0, lv):
            r = r - books[previous, codes[f, previous]]
        return int(np.argsort(np.linalg.norm(books[lv] - r, axis=1))[1])

    flipped = codes.astype(np.int64).copy()
    flipped[frame, level] = runner_up(frame, level)
    decided, differing = compare_codes(flipped, codes, margins, latents, latents, *args)
    assert [(f, lv) for f, lv, _ in differing] == [(frame, level)]
    assert decided == codes.size - (cfg.n_q - level if level else 1)
    clear = np.unravel_index(np.argmax(margins), margins.shape)
    flipped = codes.astype(np.int64).copy()
    flipped[clear] = runner_up(*clear)
    with pytest.raises(AssertionError, match="margin"):
        compare_codes(flipped, codes, margins, latents, latents, *args)
