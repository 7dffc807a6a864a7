"""Plans for several independent streams (issue 16, item 1; docs/plan.md "Streams"): each weight read once for all
of them, every state (KV rings, conv histories, the fed-back token, the prompt) and position per stream. The LM, the
Mimi encoder and the whole frame: every stream's outputs equal a one-stream run bit for bit, whatever frame it
started at, whatever the other streams were fed before and meanwhile."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from lm_paths import kernels_by_label
from mimi_cases import official_of
from test_lm_f16 import F16
from test_lm_int8 import INT8_SUBGROUP
from test_lm_parity import FIXTURE

from kyutai_stt.engine import device as gpu
from kyutai_stt.engine.plan import INT8_DOT, Plan
from kyutai_stt.engine.runtime import Engine
from kyutai_stt.models.lm import MAX_STREAMS, MatmulTuning, build_lm_plan, tensors_of
from kyutai_stt.models.mimi import MANY_STREAMS, build_mimi_plan
from kyutai_stt.models.stt import stt_plan
from kyutai_stt.models.variants import tuning_for, tunings
from kyutai_stt.reference import mimi as mr
from kyutai_stt.reference.lm import INPUT_RMS_NORM
from kyutai_stt.weights.synthetic import MIMIS

STEPS = 24                    # 3 x the tiny LM's context: every stream's ring wraps twice
STARTS = (0, 5, 11)           # the submission at which each stream of the batch starts
MIMI_FRAMES = 10              # past the tiny Mimi's context (9 frames), both parities at every start
FRAME = 1920


@pytest.fixture(scope="module")
def inputs():
    return np.load(FIXTURE.with_suffix(".npz"))["lm_input_tokens"][:STEPS]      # [steps, text token + 32 codes]


def device_tuning():
    return tuning_for(*gpu.device_traits())


def matmul_tuning():
    """Every matrix on kernels/matmul.wgsl, even for one stream, in 16-stream tiles."""
    return replace(device_tuning(), matmul=MatmulTuning(row_threads=8, stream_threads=4, from_streams=1))


def int8_matmul_tuning():
    """Every q4 matrix on kernels/matmul_int8.wgsl (the int8 path of many streams), even for one stream."""
    return replace(INT8_SUBGROUP, matmul=MatmulTuning(row_threads=8, stream_threads=4, from_streams=1))


def run(engine: Engine, feed) -> list[dict]:
    """feed: per submission {"codes": [S, n_q], "token": [S]}; returns per submission each stream's logits and
    results, and the frame each stream was at."""
    out = []
    for inputs in feed:
        engine.submit(inputs)
        (result,) = engine.drain()
        logits = engine.read("lm.logits").view(np.float32).reshape(engine.plan.streams, -1)
        results = result.outputs["results"].reshape(engine.plan.streams, -1)
        out.append({"logits": logits, "results": results, "frames": result.stream_frames})
    return out


def one_stream_run(package, tuning, inputs):
    engine = Engine(build_lm_plan(package.config, tensors_of(package), tuning), package.read_stream)
    feed = [{"codes": step[None, 1:].astype(np.uint32), "token": step[:1].astype(np.uint32)} for step in inputs]
    return run(engine, feed)


@pytest.mark.parametrize("quant, variant", [("q4", "device"), ("f16", "device"), ("q4", "int8-subgroup"),
                                            ("q4", "f16-path"), ("q4", "matmul"), ("q4", "int8-matmul"),
                                            ("q4", "int8-rings")])
def test_streams_started_at_different_frames_equal_one_stream_runs(tiny_packages, inputs, quant, variant):
    """The device's own variant, the int8 path with subgroups (quantize_input and matvec_int8 for 3 streams), the f16
    path (quantize_input and matvec_f16), the kernels of many streams, matmul.wgsl and matmul_int8.wgsl (a stream's
    results alone equal those among others), and those with int8 KV rings (attention_int8.wgsl)."""
    if variant.startswith("int8") and INT8_DOT not in gpu.wgsl_language_features():
        pytest.fail(f"this adapter lacks {INT8_DOT}: the int8 variant cannot be checked here")
    package = tiny_packages(quant)
    tuning = {"device": device_tuning, "int8-subgroup": lambda: INT8_SUBGROUP, "f16-path": lambda: F16,
              "matmul": matmul_tuning, "int8-matmul": int8_matmul_tuning,
              "int8-rings": lambda: replace(int8_matmul_tuning(), kv_int8=True, kv_f16=False)}[variant]()
    expected = one_stream_run(package, tuning, inputs)
    plan = build_lm_plan(package.config, tensors_of(package), tuning, streams=len(STARTS))
    assert plan.streams == 3 and Plan.from_json(plan.to_json()) == plan
    engine = Engine(plan, package.read_stream)
    rng = np.random.default_rng(0)
    feed = []
    for submission in range(max(STARTS) + STEPS):
        codes = rng.integers(0, package.config.card, (3, package.config.n_q)).astype(np.uint32)   # before a start
        token = rng.integers(0, package.config.text_card, 3).astype(np.uint32)
        for s, start in enumerate(STARTS):
            if 0 <= submission - start < STEPS:
                codes[s], token[s] = inputs[submission - start, 1:], inputs[submission - start, 0]
        feed.append({"codes": codes, "token": token})
    got = []
    for submission, inputs_now in enumerate(feed):
        for s, start in enumerate(STARTS):
            if submission == start and start:
                engine.reset_stream(s)       # the stream had run on random inputs until now
        got += run(engine, [inputs_now])
    for s, start in enumerate(STARTS):
        for k in range(STEPS):
            step = got[start + k]
            assert step["frames"][s] == k
            np.testing.assert_array_equal(step["logits"][s], expected[k]["logits"][0], f"stream {s} step {k}")
            np.testing.assert_array_equal(step["results"][s], expected[k]["results"][0], f"stream {s} step {k}")


def sitting_out(streams: int, frames: int, seed: int) -> list[list[bool]]:
    """Per submission, which streams take it: each stream takes `frames` in all, sitting out at random between
    (runs of up to 3 frames: a caller whose audio is late), and at least one stream takes every submission."""
    rng = np.random.default_rng(seed)
    taken, plan = [0] * streams, []
    while min(taken) < frames:
        row = [bool(taken[s] < frames and rng.random() < 0.6) for s in range(streams)]
        if any(row):
            plan.append(row)
            taken = [t + r for t, r in zip(taken, row)]
    return plan


def test_streams_sitting_out_frames_equal_one_stream_runs(tiny_packages, inputs):
    """Streams that sit frames out (Engine.submit(active=...)), fed garbage meanwhile: each stream's logits and
    results on the frames it takes equal a one-stream run bit for bit, its frame index holds while it sits out, and
    a frame no stream takes is not submitted."""
    package = tiny_packages("q4")
    tuning = device_tuning()
    expected = one_stream_run(package, tuning, inputs)
    engine = Engine(build_lm_plan(package.config, tensors_of(package), tuning, streams=3), package.read_stream)
    assert engine.submit({}, active=[False] * 3) == [] and engine.frame == 0
    rng = np.random.default_rng(5)
    taken = [0, 0, 0]
    for active in sitting_out(3, STEPS, seed=6):
        codes = rng.integers(0, package.config.card, (3, package.config.n_q)).astype(np.uint32)
        token = rng.integers(0, package.config.text_card, 3).astype(np.uint32)
        for s in range(3):
            if active[s]:
                codes[s], token[s] = inputs[taken[s], 1:], inputs[taken[s], 0]
        engine.submit({"codes": codes, "token": token}, active=active)
        (result,) = engine.drain()
        logits = engine.read("lm.logits").view(np.float32).reshape(3, -1)
        assert result.active == tuple(active) and list(result.stream_frames) == taken
        for s in np.flatnonzero(active):
            k = taken[s]
            np.testing.assert_array_equal(logits[s], expected[k]["logits"][0], f"stream {s} step {k}")
            np.testing.assert_array_equal(result.outputs["results"].reshape(3, -1)[s], expected[k]["results"][0])
            taken[s] += 1
    with pytest.raises(ValueError, match="2 active flags for a plan of 3"):
        engine.submit({}, active=[True, False])


def test_plan_layout_for_streams(tiny_packages):
    """Field-major step words, stream-major state, the matvec launch shapes fitted to the kernels' sums, matmul.wgsl
    past 8 streams."""
    package = tiny_packages("q4")
    plan = build_lm_plan(package.config, tensors_of(package), tunings()["gpu"], streams=8)
    assert [f.name for f in plan.step_fields] == ["position", "active"]
    assert plan.step_words([3, 0, 9, 1, 1, 1, 1, 2]) == [3, 0, 9, 1, 1, 1, 1, 2] + [1] * 8
    assert plan.step_words([3, 0, 9, 1, 1, 1, 1, 2], [1, 0, 1, 1, 1, 1, 1, 0]) == \
        [3, 0, 9, 1, 1, 1, 1, 2] + [1, 0, 1, 1, 1, 1, 1, 0]
    one = build_lm_plan(package.config, tensors_of(package), tunings()["gpu"])
    sizes = {b.name: b.size for b in one.buffers if b.kind in ("state", "output")}
    assert all(plan.buffer(name).size == 8 * size for name, size in sizes.items())
    for p in plan.pipelines:
        if p.kernel == "matvec":
            sums = p.constants["ROWS_PER_THREAD"] * 8 + 8 * (p.constants["INPUT_MODE"] == INPUT_RMS_NORM)
            assert p.constants["BATCH"] == 8 and sums <= 16, p
    many = build_lm_plan(package.config, tensors_of(package), tunings()["gpu"], streams=9)
    kernels = {p.kernel for p in many.pipelines}
    assert "matmul" in kernels and "matvec" not in kernels, kernels
    # With the int8 path: q4 matrices on matmul_int8.wgsl, the q8 ones of the q4-small policy on matmul.wgsl.
    small = tiny_packages("q4-small")
    int8_many = build_lm_plan(small.config, tensors_of(small), tunings()["gpu-int8"], streams=9)
    by_label = kernels_by_label(int8_many)
    for name, t in tensors_of(small).items():
        if name in by_label and len(t.shape) == 2 and name != "vad_heads":
            assert by_label[name] == ("matmul_int8" if t.quant == "q4" else "matmul"), name
    late_matmul = replace(tunings()["gpu"], matmul=MatmulTuning(from_streams=10))
    with pytest.raises(ValueError, match="at most 8 streams"):
        build_lm_plan(package.config, tensors_of(package), late_matmul, streams=9)
    with pytest.raises(ValueError, match=f"a plan holds 1 to {MAX_STREAMS}"):
        build_lm_plan(package.config, tensors_of(package), tunings()["gpu"], streams=MAX_STREAMS + 1)
    with pytest.raises(ValueError, match="2 stream frames for a plan of 8"):
        plan.step_words([0, 0])
    single = build_lm_plan(package.config, tensors_of(package), tunings()["gpu"])
    assert [f.name for f in single.step_fields] == ["position"], "one stream: a frame it sits out is not submitted"
    with pytest.raises(ValueError, match="no 'active' step field"):
        single.step_words([4], [False])


def test_more_than_256_streams_equal_one_stream_runs(tiny_packages, inputs):
    """A plan of 300 streams (plans held at most 256 before): the
    streams fed the fixture (first, middle, last) equal a one-stream run bit for bit, the others fed random codes.
    No matrix is cut into column ranges (full_grid 1), so the sums run in the same order at both counts; every
    matrix of the 300 streams takes 8 streams an invocation (wide_grid 60), of the one stream the text head only."""
    if INT8_DOT not in gpu.wgsl_language_features():
        pytest.fail(f"this adapter lacks {INT8_DOT}: the int8 kernels of many streams cannot be checked here")
    package = tiny_packages("q4")
    tile = MatmulTuning(row_threads=8, stream_threads=4, from_streams=1, full_grid=1, wide_grid=60)
    tuning = replace(INT8_SUBGROUP, matmul=tile, kv_int8=True, kv_f16=False)
    steps, streams, fed = 6, 300, (0, 150, 299)
    expected = one_stream_run(package, tuning, inputs[:steps])
    plan = build_lm_plan(package.config, tensors_of(package), tuning, streams=streams)
    assert plan.buffer("lm.matmul_partials").size == 4, "no column ranges: one word"
    quads = {p.constants.get("STREAM_QUADS", 1) for p in plan.pipelines if p.kernel == "matmul_int8"}
    assert quads == {2}, quads
    rng = np.random.default_rng(1)
    feed = []
    for k in range(steps):
        codes = rng.integers(0, package.config.card, (streams, package.config.n_q)).astype(np.uint32)
        token = rng.integers(0, package.config.text_card, streams).astype(np.uint32)
        codes[list(fed)], token[list(fed)] = inputs[k, 1:], inputs[k, 0]
        feed.append({"codes": codes, "token": token})
    for k, step in enumerate(run(Engine(plan, package.read_stream), feed)):
        for s in fed:
            np.testing.assert_array_equal(step["logits"][s], expected[k]["logits"][0], f"stream {s} step {k}")
            np.testing.assert_array_equal(step["results"][s], expected[k]["results"][0], f"stream {s} step {k}")


def test_matmul_partials_hold_the_most_split_matrix(tiny_packages):
    """The column ranges' scratch holds the sums [K_SPLITS, BATCH, ROWS] and squares [K_SPLITS, BATCH] of the
    matrix that needs the most, from the plan's own dispatches, not the largest matrix at the most ranges (512 MiB
    at 256 streams of the full LM, 2 GiB at 1024: past an H100's binding limit); one word where no matrix is cut."""
    package = tiny_packages("q4")
    for variant in ("gpu", "gpu-int8"):
        for streams, full_grid in [(9, 256), (40, 256), (40, 1)]:
            tuning = replace(tunings()[variant], matmul=MatmulTuning(row_threads=8, stream_threads=4,
                                                                      full_grid=full_grid))
            plan = build_lm_plan(package.config, tensors_of(package), tuning, streams=streams)
            needs = [p.constants["K_SPLITS"] * streams * (p.constants["ROWS"] + 1) for p in plan.pipelines
                     if p.kernel in ("matmul", "matmul_int8") and p.constants["K_SPLITS"] > 1]
            assert plan.buffer("lm.matmul_partials").size == 4 * max(needs or [1]), (variant, streams, full_grid)
            assert bool(needs) == (full_grid > 1), (variant, streams, full_grid)
            slots = tuning.attention_slots_per_split_many or tuning.attention_slots_per_split
            ring_ranges = {p.constants["SPLITS"] for p in plan.pipelines if p.kernel == "attention"}
            assert ring_ranges == {-(-package.config.context // slots)}, "the ring's ranges follow the variant"


def test_matmul_splits_columns_only_until_the_grid_is_full():
    """The full LM's shapes with the default 64 x 64 tiles (8 ranges at most, a full grid of 256 workgroups),
    int8 steps of 128 columns: 2048 columns are 16 steps, 5632 are 44 (1, 2 or 4 ranges)."""
    tile = MatmulTuning()
    assert tile.splits_for(11264, 2048, 256, 128) == 1        # ffn_in: 176 x 4 workgroups already
    assert tile.splits_for(2048, 2048, 256, 128) == 2         # attn_out: 32 x 4, twice
    assert tile.splits_for(6144, 2048, 64, 128) == 4          # attn_qkv: 96 x 1 (3 ranges are no whole steps)
    assert tile.splits_for(2048, 5632, 9, 128) == 4           # ffn_out: 32 x 1, the most 44 steps allow
    assert tile.splits_for(2048, 2048, 9) == 8                # f32 steps of 32 columns: 64 steps
    # matmul_int8's 8 streams an invocation: unsplit grids of 384 workgroups or more.
    assert tile.stream_quads(11264, 256, 1) == 2              # ffn_in: 704
    assert tile.stream_quads(6144, 256, 1) == 2               # attn_qkv: 384
    assert tile.stream_quads(2048, 256, 2) == 1               # attn_out: 128 in 2 ranges
    assert tile.stream_quads(2048, 1024, 1) == 2              # 512
    assert tile.stream_quads(6144, 64, 4) == 1                # 96 x 1 in 4 ranges
    assert MatmulTuning(stream_threads=5).stream_quads(11264, 256, 1) == 1, "an odd row of invocations stays"


def test_reset_stream_refills_its_part_only(tiny_packages):
    """reset_stream(s): stream s's part of every state buffer back to its reset pattern (start tokens, an empty
    prompt, a zero ring), the other streams' parts untouched, only its frame index restarted."""
    package = tiny_packages("q4")
    engine = Engine(build_lm_plan(package.config, tensors_of(package), device_tuning(), streams=3),
                    package.read_stream)
    rng = np.random.default_rng(1)
    for _ in range(3):
        engine.submit({"codes": rng.integers(0, package.config.card, (3, package.config.n_q)).astype(np.uint32)})
    engine.drain()
    state = [b for b in engine.plan.buffers if b.kind == "state"]
    before = {b.name: engine.read(b.name).reshape(3, -1) for b in state}
    engine.reset_stream(1, first_frame=2)
    assert engine.stream_frames == [3, 2, 3]
    for b in state:
        after = engine.read(b.name).reshape(3, -1)
        np.testing.assert_array_equal(after[[0, 2]], before[b.name][[0, 2]], b.name)
        assert (after[1] == b.reset_fill).all(), b.name
    assert any((before[b.name][1] != b.reset_fill).any() for b in state), "the run had changed stream 1's state"
    with pytest.raises(ValueError, match="stream 3 of a plan of 3"):
        engine.reset_stream(3)


def staggered(streams_inputs, total, filler):
    """Per submission, each stream's input: its own (the k-th of streams_inputs[s]) from its start on, else
    filler(s, submission) (a stream not started yet, or done)."""
    feed = []
    for submission in range(total):
        row = []
        for s, start in enumerate(STARTS):
            k = submission - start
            row.append(streams_inputs[s][k] if 0 <= k < len(streams_inputs[s]) else filler(s, submission))
        feed.append(np.stack(row))
    return feed


def run_staggered(engine: Engine, role: str, feed, starts=STARTS) -> list:
    """Submit feed (role's [S, ...] input per submission), resetting each stream at its start; every result."""
    results = []
    for submission, value in enumerate(feed):
        for s, start in enumerate(starts):
            if submission == start and start:
                engine.reset_stream(s)
        results += engine.submit({role: value})
    return results + engine.drain()


# "gpu-many" (plans of many streams on a GPU: conv1d.wgsl's `tiled` entry point) takes minutes of lavapipe: run on a
# lent GPU (-m huge).
@pytest.mark.parametrize("work_split", ["cpu", pytest.param("gpu-many", marks=pytest.mark.huge)])
def test_mimi_streams_equal_one_stream_runs(pcm, work_split, policy="q4-small"):
    """The tiny Mimi for 3 streams (each its own stretch of the fixture audio, started at submissions 0, 5 and 11,
    noise before), vs the one-stream plan on each stretch: latents and codes bit for bit, past the ring's wrap.
    The q4/q8 kernels; lavapipe's work split, and the one plans of many streams take (the "gpu" split: 2.5x slower
    here, run by the whole-frame test below where the device is a GPU)."""
    cfg = MIMIS["tiny"]
    tensors, streams, _ = mr.package_tensors(official_of("tiny"), policy, cfg)
    audio = [pcm[(7 * s) * FRAME:(7 * s + MIMI_FRAMES) * FRAME].reshape(MIMI_FRAMES, FRAME) for s in range(3)]
    expected = []
    one = Engine(build_mimi_plan(tensors, cfg, tuning=work_split), streams.__getitem__)
    for s in range(3):
        one.reset()
        expected.append(run_staggered(one, "pcm", [frame[None] for frame in audio[s]], starts=(0,)))
    plan = build_mimi_plan(tensors, cfg, tuning=work_split, streams=3)
    engine = Engine(plan, streams.__getitem__)
    rng = np.random.default_rng(2)
    noise = lambda s, k: (0.1 * rng.standard_normal(FRAME)).astype(np.float32)    # noqa: E731
    got = run_staggered(engine, "pcm", staggered(audio, max(STARTS) + MIMI_FRAMES, noise))
    for s, start in enumerate(STARTS):
        for k in range(MIMI_FRAMES):
            result = got[start + k]
            assert result.stream_frames[s] == k
            for role in ("codes", "latent"):
                np.testing.assert_array_equal(result.outputs[role].reshape(3, -1)[s],
                                              expected[s][k].outputs[role], f"stream {s} frame {k} {role}")


def stretches_alone(package, tuning, pcm, frames):
    """3 stretches of `frames` frames of the fixture audio, and each one's results on the one-stream plan."""
    audio = [pcm[(9 * s) * FRAME:(9 * s + frames) * FRAME].reshape(frames, FRAME) for s in range(3)]
    one = Engine(stt_plan(package, tuning), package.read_stream)
    expected = []
    for s in range(3):
        one.reset()
        expected.append(run_staggered(one, "pcm", [frame[None] for frame in audio[s]], starts=(0,)))
    return audio, expected


def test_whole_frame_streams_equal_one_stream_runs(tiny_packages, pcm):
    """The whole-frame plan (LM step + Mimi) of the tiny q4 package for 3 streams on 3 stretches of the fixture
    audio started at different submissions: every stream's tokens and VAD probabilities equal the one-stream plan's
    on its stretch."""
    package = tiny_packages("q4")
    tuning = device_tuning()
    frames = 16
    audio, expected = stretches_alone(package, tuning, pcm, frames)
    engine = Engine(stt_plan(package, tuning, streams=3), package.read_stream)
    got = run_staggered(engine, "pcm", staggered(audio, max(STARTS) + frames,
                                                 lambda s, k: np.zeros(FRAME, np.float32)))
    tokens = set()
    for s, start in enumerate(STARTS):
        for k in range(frames):
            words = got[start + k].outputs["results"].reshape(3, -1)[s]
            np.testing.assert_array_equal(words, expected[s][k].outputs["results"], f"stream {s} frame {k}")
            tokens.add(int(words[0]))
    assert len(tokens) > 2, "the streams' tokens vary (a comparison of constant outputs would prove little)"


def test_plans_of_many_streams_share_one_mimi_work_split(tiny_packages):
    """Past MANY_STREAMS streams a GPU's whole-frame plan takes the "gpu-many" split, the same for every count (so
    a stream's results do not depend on how many streams run beside it, given that split: the test above)."""
    package = tiny_packages("q4")
    gpu_tuning = tunings()["gpu"]

    # The entry point and constants of every conv, but for the streams' layout and the slices' width (TILE_K: 16
    # on large grids, so by the streams; it never changes the order of the sums:
    # test_conv1d_tiled_slices_do_not_change_the_sums).
    def conv_constants(plan):
        layout = ("X_STREAM", "Y_STREAM", "R_STREAM", "PARITY_INDEX", "POSITION_INDEX", "STREAMS", "TILE_K")
        return [(p.entry, {k: v for k, v in p.constants.items() if k not in layout})
                for p in plan.pipelines if p.kernel == "conv1d"]

    many = conv_constants(build_mimi_plan(package.manifest["tensors"], package.mimi_config, tuning="gpu-many"))
    few = conv_constants(build_mimi_plan(package.manifest["tensors"], package.mimi_config, tuning="gpu"))
    assert many != few and {entry for entry, _ in many} == {"tiled", "tiled_combine"}
    for streams, expected in [(1, few), (MANY_STREAMS - 1, few), (MANY_STREAMS, many), (3 * MANY_STREAMS, many)]:
        assert conv_constants(stt_plan(package, gpu_tuning, streams)) == expected, streams


def test_whole_frame_streams_sitting_out_frames_equal_one_stream_runs(tiny_packages, pcm):
    """The whole-frame plan with streams sitting frames out, fed noise meanwhile: the conv histories, the Mimi and
    LM rings (indexed by the frame index, which holds), the codes and the fed-back token (not written: rvq.wgsl and
    argmax.wgsl read the "active" flag) carry over, so every stream's results on the frames it takes equal the
    one-stream plan's on its stretch."""
    package = tiny_packages("q4")
    tuning = device_tuning()
    frames = 11
    audio, expected = stretches_alone(package, tuning, pcm, frames)
    engine = Engine(stt_plan(package, tuning, streams=3), package.read_stream)
    rng = np.random.default_rng(7)
    taken, got = [0, 0, 0], []
    for active in sitting_out(3, frames, seed=8):
        value = (0.3 * rng.standard_normal((3, FRAME))).astype(np.float32)
        for s in np.flatnonzero(active):
            value[s] = audio[s][taken[s]]
            taken[s] += 1
        got += engine.submit({"pcm": value}, active=active)
    got += engine.drain()
    checked = [0, 0, 0]
    for result in got:
        for s in np.flatnonzero(result.active):
            k = result.stream_frames[s]
            assert k == checked[s]
            words = result.outputs["results"].reshape(3, -1)[s]
            np.testing.assert_array_equal(words, expected[s][k].outputs["results"], f"stream {s} frame {k}")
            checked[s] += 1
    assert checked == [frames] * 3
