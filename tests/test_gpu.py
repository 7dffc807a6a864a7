"""The WebGPU device, the run_kernel helper and the doctor report."""

import numpy as np
import pytest

from kyutai_stt.cli import doctor
from kyutai_stt.engine import device as gpu

SPEC_VALUE_FOR_NO_LIMIT = {"max-bindings-per-bind-group": 1000}


def test_adapter_exists():
    # Never a skip: without an adapter nothing in this project runs, so the suite must say so and how to fix it.
    try:
        adapter, device = gpu.get_device()
    except gpu.NoAdapterError as error:
        pytest.fail(str(error))
    assert device.limits["max-storage-buffer-binding-size"] >= 128 * 1024 * 1024
    # The device got the adapter's limits, not the spec defaults; where the adapter reports no limit (2^32 - 1:
    # NVIDIA's Vulkan driver for bindings per bind group, seen on an H100) wgpu gives the device the spec's value.
    for name in gpu.WANTED_LIMITS:
        reported = adapter.limits[name]
        expected = SPEC_VALUE_FOR_NO_LIMIT.get(name, reported) if reported == 2**32 - 1 else reported
        assert device.limits[name] == expected, name


def test_uniform_binding_and_browser_directives():
    # A kernel written for Chrome (`enable subgroups;`) runs natively; uniforms reach the shader.
    source = """
        enable subgroups;
        struct Params { count: u32, scale: f32 }
        @group(0) @binding(0) var<uniform> params: Params;
        @group(0) @binding(1) var<storage, read> source_values: array<f32>;
        @group(0) @binding(2) var<storage, read_write> scaled: array<f32>;
        @compute @workgroup_size(64)
        fn main(@builtin(global_invocation_id) id: vec3<u32>) {
            if (id.x < params.count) { scaled[id.x] = source_values[id.x] * params.scale; }
        }
    """
    params = np.zeros(2, np.uint32)
    params[0] = 5  # count
    params.view(np.float32)[1] = 0.5  # scale
    values = np.arange(7, dtype=np.float32)  # [7]: the last two are past `count` and stay NaN
    outputs = gpu.run_shader(
        source, {0: gpu.Uniform(params), 1: values, 2: gpu.Output((7,), np.float32, fill=np.nan)}, (1, 1, 1)
    )
    np.testing.assert_array_equal(outputs[2][:5], values[:5] * 0.5)
    assert np.isnan(outputs[2][5:]).all()


def test_native_wgsl_strips_only_subgroups():
    assert gpu.to_native_wgsl("enable subgroups;\nfn f() {}").strip() == "fn f() {}"
    assert gpu.to_native_wgsl("enable f16, subgroups;\n").strip() == "enable f16;"
    assert gpu.to_native_wgsl("enable f16;\n").strip() == "enable f16;"


def test_native_wgsl_unpacks_the_f16_pair_bitcast():
    """Naga cannot bitcast u32 to vec2<f16>: matvec_f16.wgsl's one helper doing it is compiled natively as an
    unpack, and the browser gets the file as written. Natively the two give the same halves."""
    source = (gpu.KERNEL_DIR / "matvec_f16.wgsl").read_text()
    assert source.count("bitcast<vec2<f16>>") == 1
    native = gpu.to_native_wgsl(source)
    assert "bitcast<vec2<f16>>" not in native and "vec2<f16>(unpack2x16float(word))" in native
    probe = """enable f16;
@group(0) @binding(0) var<storage, read> words: array<u32>;
@group(0) @binding(1) var<storage, read_write> out: array<vec2<f32>>;
fn f16_pair(word: u32) -> vec2<f16> {
    return bitcast<vec2<f16>>(word);
}
@compute @workgroup_size(4) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    out[id.x] = vec2<f32>(f16_pair(words[id.x]));
}
"""
    halves = np.array([1.0, -2.5, 65504.0, 2.0**-24, -0.0, 0.333, 1024.0, -7.0], np.float16)
    words = halves.view(np.uint32)
    out = gpu.run_shader(gpu.to_native_wgsl(probe), {0: words, 1: gpu.Output((4, 2), np.float32)}, (1, 1, 1))[1]
    np.testing.assert_array_equal(out.reshape(-1), halves.astype(np.float32))


def test_doctor_report_names_adapter_and_limits():
    text = doctor.report()
    assert gpu.adapter_summary()["name"] in text
    assert "max storage buffer binding size" in text
    assert "MiB" in text or "GiB" in text
    assert doctor.run() == 0


WRITE_INDEX = """@group(0) @binding(0) var<storage, read_write> out: array<u32>;
override VALUE: u32;
@compute @workgroup_size(1) fn main(@builtin(workgroup_id) id: vec3<u32>) { out[id.x] = VALUE; }"""


def test_dispatch_recorder_records_what_the_public_methods_do_and_errors_still_raise():
    """engine/device.py dispatch_recorder calls wgpu-native's C functions directly: the same commands in the same
    order (a later dispatch overwrites an earlier one's words), a [first, end) slice, and a pass's validation error
    still raised by finish()."""
    import wgpu

    _, device = gpu.get_device()
    module = device.create_shader_module(code=WRITE_INDEX)
    out = device.create_buffer(size=16, usage=wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC)
    commands = []
    for value, workgroups in ((7, [4, 1, 1]), (9, [2, 1, 1]), (5, [1, 1, 1])):
        pipeline = device.create_compute_pipeline(layout="auto", compute={
            "module": module, "entry_point": "main", "constants": {"VALUE": value}})
        group = device.create_bind_group(layout=pipeline.get_bind_group_layout(0),
                                         entries=[{"binding": 0, "resource": {"buffer": out}}])
        commands.append((pipeline, group, workgroups))
    record = gpu.dispatch_recorder(commands)

    def run(first=0, end=None):
        encoder = device.create_command_encoder()
        compute = encoder.begin_compute_pass()
        record(compute, first, end)
        compute.end()
        device.queue.submit([encoder.finish()])
        return np.frombuffer(device.queue.read_buffer(out), np.uint32).tolist()

    assert run() == [5, 9, 7, 7]
    assert run(0, 1) == [7, 7, 7, 7] and run(1, 2) == [9, 9, 7, 7]
    too_many = gpu.dispatch_recorder([(commands[0][0], commands[0][1], [1 << 20, 1, 1])])
    encoder = device.create_command_encoder()
    compute = encoder.begin_compute_pass()
    too_many(compute)
    compute.end()
    with pytest.raises(wgpu.GPUValidationError, match="dispatch group size"):
        encoder.finish()


def test_submitter_indexes_submissions_and_a_wait_makes_that_one_readable():
    """engine/device.py submitter: each submission's index (increasing), and wait_for(index) returns once that one
    is done, so that its staging buffer maps with the copied words (the engine's pipelined readback)."""
    import wgpu

    _, device = gpu.get_device()
    submit, wait_for = gpu.submitter(device)
    source = device.create_buffer_with_data(data=np.arange(4, dtype=np.uint32).tobytes(),
                                            usage=wgpu.BufferUsage.COPY_SRC)
    staging = device.create_buffer(size=16, usage=wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.COPY_DST)
    encoder = device.create_command_encoder()
    encoder.copy_buffer_to_buffer(source, 0, staging, 0, 16)
    indices = [submit(encoder.finish())] + [submit(device.create_command_encoder().finish()) for _ in range(2)]
    assert indices == sorted(set(indices)), indices
    wait_for(indices[0])
    staging.map_sync(wgpu.MapMode.READ)
    assert np.frombuffer(staging.read_mapped(), np.uint32).tolist() == [0, 1, 2, 3]
    staging.unmap()
    wait_for(None)      # nothing to wait for
