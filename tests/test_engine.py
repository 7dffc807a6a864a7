"""The plan schema and the native host's mechanics, on a toy plan: the RMSNorm of an input with two weight streams
(matvec.wgsl's fused RMSNorm input mode, times an identity matrix)."""
from __future__ import annotations

import numpy as np
import pytest

from kyutai_stt.engine.plan import Plan, PlanBuilder, Stage
from kyutai_stt.engine.runtime import Engine
from kyutai_stt.weights.quant import FORMATS

ROWS, LENGTH = 3, 40


def toy_plan() -> Plan:
    b = PlanBuilder("toy")
    b.inputs["x"] = b.buffer("x", "input", ROWS * LENGTH * 4, (ROWS, LENGTH))
    alpha = b.weight("alpha", [("norm.w", LENGTH * 4)], (LENGTH,), "f32")
    identity = b.weight("identity", [("eye.w", LENGTH * LENGTH * 4)], (LENGTH, LENGTH), "f32")
    b.outputs["y"] = b.buffer("y", "output", ROWS * LENGTH * 4, (ROWS, LENGTH))
    b.buffer("counter", "state", 8, (2,), "u32", reset_fill=7)
    b.buffer("step", "step", 8, (2,), "u32")
    b.step_field("position")
    b.step_field("slot", modulo=4)
    # matvec's default launch shape: 256 invocations, teams of 64, 4 rows each = 16 rows per workgroup.
    b.dispatch("matvec", {0: identity, 1: identity, 2: "x", 3: "y", 4: alpha}, (-(-LENGTH // 16),),
               {"FORMAT": FORMATS["f32"], "ROWS": LENGTH, "COLUMNS": LENGTH, "BATCH": ROWS, "INPUT_MODE": 1},
               label="norm")
    return b.build(step_buffer="step")


def rms_norm(x, alpha):
    return x * alpha / np.sqrt((x.astype(np.float64) ** 2).mean(-1, keepdims=True) + 1e-8)


def test_plan_round_trips_through_json():
    plan = toy_plan()
    again = Plan.from_json(plan.to_json())
    assert again == plan
    assert [again.step_values(f) for f in (0, 5)] == [[0, 0], [5, 1]]


def test_plan_validation_names_the_problem():
    plan = toy_plan()
    plan.dispatches[0].bindings[4] = "nowhere"
    with pytest.raises(ValueError, match="unknown buffer nowhere"):
        plan.validate()
    with pytest.raises(ValueError, match="v99"):
        Plan.from_json(toy_plan().to_json().replace('"version":1', '"version":99'))


def test_plans_of_one_stream_stay_portable_and_an_engine_checks_its_device_limit():
    """A one-stream plan must bind on any WebGPU device (128 MiB); a plan of many streams may need more, and the
    engine refuses, with the fix named, a buffer past its own device's limit before allocating anything."""
    from kyutai_stt.engine import device as gpu
    from kyutai_stt.engine.runtime import DeviceLimitError
    from kyutai_stt.errors import UserError

    big = PlanBuilder("big")
    big.buffer("ring", "scratch", (128 << 20) + 4, ((128 << 20) // 4 + 1,))
    big.buffer("step", "step", 4, (1,), "u32")
    with pytest.raises(ValueError, match="binding limit"):
        big.build(step_buffer="step")
    _, device = gpu.get_device()
    limit = min(device.limits["max-storage-buffer-binding-size"], device.limits["max-buffer-size"])
    many = PlanBuilder("many", streams=2)
    many.buffer("ring", "scratch", limit + 4, ((limit + 4) // 4,))
    many.buffer("step", "step", 8, (2,), "u32")
    plan = many.build(step_buffer="step")
    with pytest.raises(DeviceLimitError, match="buffer ring needs .* fewer streams") as error:
        Engine(plan, {}.__getitem__)
    assert isinstance(error.value, UserError)


def test_a_gpu_short_of_memory_gets_the_plans_total_and_keeps_nothing(monkeypatch):
    """A buffer the device cannot allocate (many streams' rings on a small GPU): a user error with the plan's total
    and the fix, and every buffer allocated before it given back at once."""
    import wgpu

    from kyutai_stt.engine.runtime import DeviceLimitError
    from kyutai_stt.errors import UserError

    class Allocated:
        def __init__(self, name):
            self.name, self.destroyed = name, False

        def destroy(self):
            self.destroyed = True

    allocated = []

    def create(engine, buffer):
        if len(allocated) == 2:
            raise wgpu.GPUOutOfMemoryError("Out of Memory")
        allocated.append(Allocated(buffer.name))
        return allocated[-1]

    monkeypatch.setattr(Engine, "_create_buffer", create)
    plan = toy_plan()
    with pytest.raises(DeviceLimitError, match=r"take 0\.0 GiB, more than this GPU could allocate .* fewer streams"):
        Engine(plan, {}.__getitem__)
    assert isinstance(DeviceLimitError("x"), UserError)
    assert len(allocated) == 2 and all(b.destroyed for b in allocated), allocated


def test_engine_runs_frames_pipelined_and_resets():
    rng = np.random.default_rng(0)
    alpha = rng.uniform(0.5, 1.5, LENGTH).astype(np.float32)
    engine = Engine(toy_plan(), {"norm.w": alpha, "eye.w": np.eye(LENGTH, dtype=np.float32)}.__getitem__)
    frames = [rng.standard_normal((ROWS, LENGTH)).astype(np.float32) for _ in range(4)]
    assert engine.submit({"x": frames[0]}) == []          # frame 0 is still in flight
    ready = engine.submit({"x": frames[1]})
    assert [r.frame for r in ready] == [0]
    ready += engine.submit({"x": frames[2]}) + engine.submit({"x": frames[3]}) + engine.drain()
    assert [r.frame for r in ready] == [0, 1, 2, 3]
    for result, x in zip(ready, frames):
        y = result.outputs["y"].view(np.float32).reshape(ROWS, LENGTH)
        np.testing.assert_allclose(y, rms_norm(x, alpha), rtol=1e-5)
    assert (engine.read("counter") == 7).all()
    assert list(engine.read("step")[:2]) == [3, 3]         # the last frame's position and slot
    engine.reset()
    assert engine.frame == 0 and engine.drain() == []


def test_output_fields_decode_words_and_are_validated():
    b = PlanBuilder("fields")
    b.buffer("step", "step", 4, (1,), "u32")
    b.outputs["results"] = b.buffer("r", "output", 12, (3,), "u32", fields=[("token", "u32", 1), ("vad", "f32", 2)])
    b.dispatch("matvec", {0: "r"}, (1,), label="unused")
    plan = b.build(step_buffer="step")
    words = np.array([42, *np.array([0.25, -1.5], np.float32).view(np.uint32)], np.uint32)
    assert Plan.from_json(plan.to_json()).decode("results", words) == {"token": [42], "vad": [0.25, -1.5]}
    plan.buffers[-1].fields[1].count = 3                  # 4 words described in a 3-word buffer
    with pytest.raises(ValueError, match="output results: its fields"):
        plan.validate()


def test_engine_records_and_times_stages():
    """The public way to record a frame and time it: gpu_times per span, stage_times per plan stage (lavapipe offers
    timestamp-query; a device without it gets a clear error, never made-up times)."""
    plan = toy_plan()
    plan.stages = [Stage("first", 0)]
    weights = {"norm.w": np.ones(LENGTH, np.float32), "eye.w": np.eye(LENGTH, dtype=np.float32)}
    engine = Engine(plan, weights.__getitem__)
    if "timestamp-query" not in engine.device.features:
        with pytest.raises(RuntimeError, match="timestamp-query"):
            engine.gpu_times(1)
        pytest.fail("this adapter lacks timestamp-query: GPU timing is untested here")
    times = engine.gpu_times(3, [(0, 1), (0, None)])
    assert len(times) == 3 and all(len(t) == 2 and min(t) >= 0 for t in times)
    stages = engine.stage_times(2)
    assert list(stages) == ["first"] and stages["first"] >= 0
    encoder = engine.device.create_command_encoder()
    engine.record(encoder)                                # what submit() records, for a caller's own encoder
    engine.device.queue.submit([encoder.finish()])


def test_a_kernel_the_device_rejects_is_named_with_the_way_around(monkeypatch):
    """A kernel this device's driver or wgpu does not compile (here: a broken source): the engine's error names the
    kernel and KYUTAI_STT_VARIANT, and is a UserError (the CLI prints it alone, exit code 2)."""
    from kyutai_stt.engine import device as gpu
    from kyutai_stt.engine import runtime
    from kyutai_stt.errors import UserError

    monkeypatch.setattr(runtime, "_PIPELINES", {})          # no pipeline compiled before may stand in
    monkeypatch.setattr(gpu, "load_kernel_source", lambda name: "fn main( {")
    with pytest.raises(runtime.KernelCompileError) as caught:
        Engine(toy_plan(), {"norm.w": np.ones(LENGTH, np.float32),
                            "eye.w": np.eye(LENGTH, dtype=np.float32)}.__getitem__)
    message = str(caught.value)
    assert isinstance(caught.value, UserError)
    assert message.startswith("kernel matvec (") and "KYUTAI_STT_VARIANT=gpu" in message and "error" in message
