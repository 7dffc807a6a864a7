"""The WebGPU device, the run_kernel helper, the rms_norm kernel and the doctor report."""

import numpy as np
import pytest

from kyutai_stt import doctor, gpu

# rms_norm in fp32 vs a float64 reference, relative error per element, with u = 2^-24. Nothing cancels (a sum of
# squares, then products), so the bound is a count of roundings. The sum of squares: the squares (1 u), the
# per-invocation serial sum (ceil(2050 / 256) = 9 terms: 8 u), the tree (log2 256 = 8 levels: 8 u), the mean
# and + eps (2 u): <= 19 u, halved by the square root; then inverseSqrt (WGSL allows 2 ULP) and two multiplies
# (2 u): about 10 + 2 + 2 = 14 u ~= 8e-7. 1e-5 leaves > 10x margin and still catches a mean that drops or
# repeats one element of 2048 (~2.4e-4 off).
RMS_NORM_RELATIVE_TOLERANCE = 1e-5
LM_EPS = 1e-8


def rms_norm_reference(x: np.ndarray, alpha: np.ndarray, eps: float) -> np.ndarray:
    """y[r, d] = x[r, d] * alpha[d] / sqrt(mean(x[r, :]^2) + eps), in float64."""
    x64 = x.astype(np.float64)
    return x64 * alpha.astype(np.float64) / np.sqrt(np.mean(x64**2, axis=-1, keepdims=True) + eps)


def run_rms_norm(x: np.ndarray, alpha: np.ndarray, **constants) -> np.ndarray:
    rows, row_length = x.shape
    outputs = gpu.run_kernel(
        "rms_norm",
        bindings={
            0: x,  # [rows, D] f32
            1: alpha,  # [D] f32
            2: gpu.Output((rows, row_length), np.float32, fill=np.nan),  # [rows, D] f32, NaN: unwritten shows
        },
        workgroups=(rows, 1, 1),
        constants={"ROW_LENGTH": row_length, **constants},
    )
    return outputs[2]


def test_adapter_exists():
    # Never a skip: without an adapter nothing in this project runs, so the suite must say so and how to fix it.
    try:
        adapter, device = gpu.get_device()
    except gpu.NoAdapterError as error:
        pytest.fail(str(error))
    assert device.limits["max-storage-buffer-binding-size"] >= 128 * 1024 * 1024
    # The device got the adapter's limits, not the spec defaults.
    for name in gpu.WANTED_LIMITS:
        assert device.limits[name] == adapter.limits[name], name


@pytest.mark.parametrize(
    "rows, row_length",
    [(1, 1), (1, 7), (1, 2048), (1, 2050), (3, 1), (5, 7), (4, 2048), (3, 2050), (2, 255), (2, 257)],
)
def test_rms_norm_matches_numpy(rows, row_length):
    rng = np.random.default_rng(rows * 10_000 + row_length)
    x = rng.standard_normal((rows, row_length)).astype(np.float32)
    alpha = rng.standard_normal(row_length).astype(np.float32)
    y = run_rms_norm(x, alpha)
    np.testing.assert_allclose(y, rms_norm_reference(x, alpha, LM_EPS), rtol=RMS_NORM_RELATIVE_TOLERANCE, atol=0)


@pytest.mark.parametrize("workgroup_size", [1, 3, 64, 96])
def test_rms_norm_other_workgroup_sizes_and_eps(workgroup_size):
    # The reduction must not assume a power of two; eps must reach the shader (large enough to matter here).
    eps = 1e-2
    rng = np.random.default_rng(workgroup_size)
    x = (0.1 * rng.standard_normal((3, 300))).astype(np.float32)
    alpha = rng.standard_normal(300).astype(np.float32)
    y = run_rms_norm(x, alpha, EPS=eps, WORKGROUP_SIZE=workgroup_size)
    np.testing.assert_allclose(y, rms_norm_reference(x, alpha, eps), rtol=RMS_NORM_RELATIVE_TOLERANCE, atol=0)


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


def test_doctor_report_names_adapter_and_limits():
    text = doctor.report()
    assert gpu.adapter_summary()["name"] in text
    assert "max storage buffer binding size" in text
    assert "MiB" in text or "GiB" in text
    assert doctor.run() == 0
