"""Plans no site variant holds, in the browser host.

The int8 path of q4 matrices: an LM plan with it (quantize_input.wgsl + matvec_int8.wgsl, the subgroup variant on
attn_qkv) run by runtime.js in Chromium (SwiftShader) and by engine.py on lavapipe, the same plan JSON, the
official fixture's teacher-forced inputs: tokens equal, VAD within INT8_VAD_TOLERANCE. The site's own variants
would choose "cpu" on SwiftShader (no int8 path), and its "gpu-int8" whole-frame plan takes minutes there, hence
this plan: CPU-sized launch shapes, the LM alone. Plans of several streams: three streams started at different
frames (resetStream) and sitting some frames out, as tests/models/test_streams.py runs them natively.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from kyutai_stt.engine.runtime import Engine
from kyutai_stt.models.lm import MatmulTuning, MatvecTuning, Tuning, build_lm_plan, tensors_of
from kyutai_stt.models.variants import tunings

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "reference_tiny_seed0"
STEPS = 12     # > the tiny context of 8: the KV ring wraps
# The two compilers sum in different orders (test_engine_browser: <= 1e-5 apart); an input that lands that close to
# an int8 rounding tie rounds to different integers on the two hosts, which moves later values by a rounding step:
# measured 7.0e-4 on the VAD probabilities over these 12 steps. Tokens stay equal.
INT8_VAD_TOLERANCE = 5e-3
# Subgroup teams of 4: SwiftShader's subgroups have 4 invocations, lavapipe's 8.
CPU = tunings()["cpu"]
INT8_CPU = Tuning(CPU.matvec, CPU.attention_slots_per_split, mimi="cpu", int8_matvec={
    "default": MatvecTuning(32, 8, 1), "attn_qkv": MatvecTuning(32, 4, 2, subgroup=True)})


def test_int8_lm_plan_equals_the_native_engine(page, site, tiny_packages):
    package = tiny_packages("q4")
    plan = build_lm_plan(package.config, tensors_of(package), INT8_CPU)
    kernels = {p.kernel for p in plan.pipelines}
    assert {"quantize_input", "matvec_int8", "matvec_int8_subgroup"} <= kernels
    inputs = np.load(FIXTURE.with_suffix(".npz"))["lm_input_tokens"][:STEPS]
    frames = [{"codes": step[1:].astype(np.uint32), "token": np.array([step[0]], np.uint32)} for step in inputs]

    engine = Engine(plan, package.read_stream)
    native = []
    for frame in frames:
        native += engine.submit(frame)
    native += engine.drain()
    browser = page.call("runPlan", {"plan": json.loads(plan.to_json()),
                                    "inputs": [{k: v.tolist() for k, v in f.items()} for f in frames]})

    native_words = np.array([r.outputs["results"] for r in native])
    browser_words = np.array([f["results"] for f in browser], np.uint32)
    assert len(set(native_words[:, 0])) > 2, "tokens barely vary: the comparison would say little"
    np.testing.assert_array_equal(browser_words[:, 0], native_words[:, 0], "tokens")
    np.testing.assert_allclose(browser_words[:, 1:].view(np.float32), native_words[:, 1:].view(np.float32),
                               rtol=0, atol=INT8_VAD_TOLERANCE)


VAD_TOLERANCE = 1e-4
STARTS = (0, 3, 7)      # the submission at which each of three streams starts (random inputs before)


def test_three_streams_equal_the_native_engine(page, site, tiny_packages):
    """The same 3-stream LM plan (matmul.wgsl with split columns in 16-stream tiles), the same inputs and stream
    resets: runtime.js writes field-major step words from each stream's own frame index and refills one stream's
    part of the state; its tokens equal the native engine's, its VAD within VAD_TOLERANCE (1e-4, the parity tests'
    tolerance: the two compilers' sums differ by up to 1.0e-5 here)."""
    package = tiny_packages("q4")
    tuning = replace(CPU, matmul=MatmulTuning(8, 4, from_streams=1))
    plan = build_lm_plan(package.config, tensors_of(package), tuning, streams=3)
    assert "matmul" in {p.kernel for p in plan.pipelines}
    inputs = np.load(FIXTURE.with_suffix(".npz"))["lm_input_tokens"][:STEPS]
    rng = np.random.default_rng(4)
    frames = []
    for n in range(max(STARTS) + STEPS):
        codes = rng.integers(0, package.config.card, (3, package.config.n_q)).astype(np.uint32)
        token = rng.integers(0, package.config.text_card, 3).astype(np.uint32)
        for s_, start in enumerate(STARTS):
            if 0 <= n - start < STEPS:
                codes[s_], token[s_] = inputs[n - start, 1:], inputs[n - start, 0]
        frames.append({"codes": codes.reshape(-1), "token": token})
    resets = {start: [s_] for s_, start in enumerate(STARTS) if start}
    # Every 4th submission one stream sits out (Engine.submit(active=...)): its frame index holds, its state stays.
    actives = [[n % 4 != 1 or s_ != n % 3 for s_ in range(3)] for n in range(len(frames))]

    engine = Engine(plan, package.read_stream)
    native = []
    for n, frame in enumerate(frames):
        for s_ in resets.get(n, []):
            engine.reset_stream(s_)
        native += engine.submit(frame, active=actives[n])
    native += engine.drain()
    browser = page.call("runPlan", {"plan": json.loads(plan.to_json()), "resets": resets, "actives": actives,
                                    "inputs": [{k: v.tolist() for k, v in f.items()} for f in frames]})

    assert [f["streamFrames"] for f in browser] == [list(r.stream_frames) for r in native]
    assert [f["active"] for f in browser] == actives and not all(map(all, actives))
    sat_out = ~np.array(actives)
    native_words = np.array([r.outputs["results"] for r in native]).reshape(len(frames), 3, -1)
    browser_words = np.array([f["results"] for f in browser], np.uint32).reshape(len(frames), 3, -1)
    native_words[sat_out], browser_words[sat_out] = 0, 0       # a stream's outputs while it sits out mean nothing
    assert len(set(native_words[:, :, 0].ravel())) > 2, "tokens barely vary: the comparison would say little"
    np.testing.assert_array_equal(browser_words[:, :, 0], native_words[:, :, 0], "tokens")
    np.testing.assert_allclose(browser_words[:, :, 1:].view(np.float32), native_words[:, :, 1:].view(np.float32),
                               rtol=0, atol=VAD_TOLERANCE)
