"""The int8 path of q4 matrices: quantize_input.wgsl (in(x) rounded to int8 per 32-block) and matvec_int8.wgsl /
matvec_int8_subgroup.wgsl (q4 weights x int8 inputs, dot4I8Packed), against the float64 numpy reference
(kyutai_stt/reference/lm.py quantize_int8 / matvec_int8).

Tolerances: quantize_input's integers equal the reference's except where in(x) * 127 / amax lies within 1e-4 of a
rounding tie (f32 vs float64 arithmetic, RMSNorm's inverseSqrt); its scales within 4 ULP-scale relative error.
matvec_int8 given exact int8 inputs: the integer dot products are exact, so only the f32 bound of test_matvec.py
applies. The whole path vs the float matvec: the inputs' rounding, at most half a step (amax / 254) per input.
"""

import numpy as np
import pytest
from kernel_helpers import U32, assert_within, in_out, poisoned, random_weights, weight_bindings

from kyutai_stt.engine import device as gpu
from kyutai_stt.reference import lm as ref

PLAIN, RMS_NORM, SWIGLU = ref.INPUT_PLAIN, ref.INPUT_RMS_NORM, ref.INPUT_SWIGLU
BLOCK = ref.INT8_BLOCK
INT8_DOT_NAME = gpu.INT8_DOT   # the WGSL language feature the matvec_int8 kernels require
DEFAULTS = {"WORKGROUP_SIZE": 256, "THREADS_PER_ROW": 16, "ROWS_PER_THREAD": 4}


def require_int8_dot():
    # Naga (wgpu-py) accepts the language feature on every adapter, lavapipe included: a device without it is a
    # broken setup here, not a reason to skip.
    assert gpu.INT8_DOT in gpu.wgsl_language_features(), "this WebGPU implementation lacks dot4I8Packed"


def pack_inputs(q: np.ndarray) -> np.ndarray:
    """[B, K] int8 values -> u32 [B, K / 4] in quantize_input.wgsl's order (per 8 inputs: even ones, odd ones)."""
    groups = q.reshape(q.shape[0], -1, 8)
    ordered = np.stack([groups[..., 0::2], groups[..., 1::2]], axis=-2)        # [B, K/8, 2, 4]
    return np.ascontiguousarray(ordered.astype(np.int8)).view(np.uint32).reshape(q.shape[0], -1)


def unpack_inputs(words: np.ndarray) -> np.ndarray:
    """The inverse of pack_inputs: u32 [B, K / 4] -> int values [B, K]."""
    ordered = words.view(np.int8).reshape(words.shape[0], -1, 2, 4).astype(np.int32)
    q = np.empty((words.shape[0], ordered.shape[1], 8), np.int32)
    q[..., 0::2], q[..., 1::2] = ordered[:, :, 0], ordered[:, :, 1]
    return q.reshape(words.shape[0], -1)


def run_quantize(x, columns, input_mode=PLAIN, alpha=None, workgroup_size=256):
    batch = x.shape[0]
    blocks = columns // BLOCK
    constants = {"COLUMNS": columns, "BATCH": batch, "INPUT_MODE": input_mode, "WORKGROUP_SIZE": workgroup_size}
    out = gpu.run_kernel("quantize_input", {
        0: np.ascontiguousarray(x, np.float32),                                  # [BATCH, X_STRIDE]
        1: alpha if alpha is not None else np.zeros(4, np.float32),             # [COLUMNS], RMS_NORM only
        2: poisoned((batch, columns // 4), np.uint32),                            # xq
        3: poisoned((batch, blocks, 2)),                                          # xs: (scale, sum)
    }, (-(-columns // 8 // workgroup_size), batch, 1), constants)
    return unpack_inputs(out[2]), out[3]


def transformed_input(x, input_mode, alpha):
    return {PLAIN: lambda: np.asarray(x, np.float64), RMS_NORM: lambda: ref.rms_norm(x, alpha),
            SWIGLU: lambda: ref.swiglu(x)}[input_mode]()


def awkward_input(rng, batch, width):
    """Blocks of very different magnitudes, one all-zero block and one with a single non-zero input."""
    x = rng.standard_normal((batch, width)).astype(np.float32)
    x *= np.exp2(rng.integers(-8, 8, (batch, width // BLOCK))).repeat(BLOCK, axis=1).astype(np.float32)
    x[0, :BLOCK] = 0.0
    if width >= 2 * BLOCK:
        x[-1, BLOCK:2 * BLOCK] = 0.0
        x[-1, BLOCK + 5] = -3.0
    return x


def check_integers(q, blocks, value):
    """quantize_input's output (q [B, K], blocks [B, K/32, 2]) against the reference's rounding of value: integers
    equal except within 1e-4 of a rounding tie (then off by one at most), scales within 4e-6, exact integer sums."""
    batch, columns = value.shape
    expected_q, expected_scale = ref.quantize_int8(value)
    assert not np.isnan(blocks).any(), "scales left unwritten"
    assert np.abs(q).max() <= 127
    np.testing.assert_array_equal(blocks[..., 1], q.reshape(batch, -1, BLOCK).sum(axis=2), "sums of the integers")
    np.testing.assert_allclose(blocks[..., 0], expected_scale, rtol=4e-6, atol=0, err_msg="scales")
    amax = 127.0 * expected_scale[..., None]
    scaled = np.divide(127.0 * value.reshape(batch, -1, BLOCK), amax, out=np.zeros((batch, columns // BLOCK, BLOCK)),
                       where=amax > 0)
    near_tie = np.abs(np.abs(scaled - np.floor(scaled)) - 0.5).reshape(batch, -1) < 1e-4
    differs = q != expected_q
    assert (np.abs(q - expected_q) <= 1).all() and not (differs & ~near_tie).any(), (
        f"{(differs & ~near_tie).sum()} integers differ from the reference away from a rounding tie")


@pytest.mark.parametrize("case", ["plain_multi_workgroup", "rms_batch", "swiglu_ffn_width", "rms_model_width"])
def test_quantize_input(case, rng):
    columns, batch, mode, workgroup = {"plain_multi_workgroup": (320, 1, PLAIN, 4), "rms_batch": (64, 3, RMS_NORM, 64),
                                       "swiglu_ffn_width": (5632, 1, SWIGLU, 256),
                                       "rms_model_width": (2048, 2, RMS_NORM, 32)}[case]
    x = awkward_input(rng, batch, 2 * columns if mode == SWIGLU else columns)
    if mode == RMS_NORM:
        x[0, :BLOCK] = 1.0  # the zero block comes from alpha instead
    alpha = rng.standard_normal(columns).astype(np.float32) if mode == RMS_NORM else None
    if alpha is not None:
        alpha[:BLOCK] = 0.0
    q, blocks = run_quantize(x, columns, mode, alpha, workgroup)
    check_integers(q, blocks, transformed_input(x, mode, alpha))
    assert (q[0, :BLOCK] == 0).all() and blocks[0, 0, 0] == 0.0, "an all-zero block quantises to zero, scale 0"


def run_rounded_matvec(streams, xq, xs, rows, columns, *, y, kernel="matvec_int8", **constants):
    """matvec_int8, its subgroup variant or matvec_f16 (the same bindings and launch) on rounded inputs; returns y."""
    tuning = {**DEFAULTS, **{k: v for k, v in constants.items() if k in DEFAULTS}}
    rows_per_workgroup = tuning["WORKGROUP_SIZE"] // tuning["THREADS_PER_ROW"] * tuning["ROWS_PER_THREAD"]
    bindings = {**weight_bindings(streams), 2: xq, 3: in_out(y), 4: np.ascontiguousarray(xs, np.float32)}
    return gpu.run_kernel(kernel, bindings, (-(-rows // rows_per_workgroup), 1, 1),
                          {"ROWS": rows, "COLUMNS": columns, **constants})[3]


def check_matvec(rng, rows, columns, *, batch=1, accumulate=False, y_offset=0, y_padding=0,
                 kernel="matvec_int8", **tuning):
    """matvec_int8 alone, on inputs quantised by the numpy reference: exact integer products, f32 sums."""
    require_int8_dot()
    streams, w = random_weights(rng, (rows, columns), "q4")
    value = awkward_input(rng, batch, columns)
    q, scale = ref.quantize_int8(value)
    xs = np.stack([scale, q.reshape(batch, -1, BLOCK).sum(axis=2)], axis=-1)    # [B, K/32, 2]
    y_stride = rows + y_offset + y_padding
    y_initial = np.full((batch, y_stride), np.nan, np.float32)
    if accumulate:
        y_initial[:, y_offset:y_offset + rows] = rng.standard_normal((batch, rows))
    constants = {"BATCH": batch, "ACCUMULATE": accumulate, **tuning}
    if y_offset or y_padding:
        constants |= {"Y_OFFSET": y_offset, "Y_STRIDE": y_stride}
    y = run_rounded_matvec(streams, pack_inputs(q), xs.astype(np.float32), rows, columns, y=y_initial,
                        kernel=kernel, **constants)
    rounded = (q.reshape(batch, -1, BLOCK) * scale[..., None].astype(np.float32)).reshape(batch, columns)
    residual = y_initial[:, y_offset:y_offset + rows] if accumulate else None
    expected = ref.matvec(w, rounded, accumulate_into=residual)
    # Per block: d * scale * integer (3 roundings), then the member's and the team's sums (as test_matvec.py).
    threads = tuning.get("THREADS_PER_ROW", DEFAULTS["THREADS_PER_ROW"])
    bound = (columns / BLOCK / threads + 64) * U32 * (np.abs(rounded) @ np.abs(w).T)
    if accumulate:
        bound = bound + U32 * np.abs(expected)
    assert_within(y[:, y_offset:y_offset + rows], expected, bound, kernel)
    assert np.isnan(y[:, :y_offset]).all() and np.isnan(y[:, y_offset + rows:]).all()


def test_int8_one_row_of_minimal_width(rng):
    check_matvec(rng, rows=1, columns=64)


def test_int8_odd_rows_and_columns_accumulate(rng):
    # 37 rows: not a multiple of the workgroup's rows; 10 units over 16 members: most idle, a ragged pass.
    check_matvec(rng, rows=37, columns=320, accumulate=True)


def test_int8_batch_offset_and_odd_tuning(rng):
    # Three streams, rows placed inside a wider output, a 3-member team in a 96-invocation workgroup.
    check_matvec(rng, rows=6, columns=128, batch=3, accumulate=True, y_offset=2, y_padding=3,
                 WORKGROUP_SIZE=96, THREADS_PER_ROW=3, ROWS_PER_THREAD=2)


@pytest.mark.parametrize("rows, columns", [(48, 2048), (20, 5632)])
def test_int8_model_widths(rng, rows, columns):
    check_matvec(rng, rows=rows, columns=columns, accumulate=columns > 2048, ROWS_PER_THREAD=8)


@pytest.mark.parametrize("case", ["batch_offset", "model_width"])
def test_int8_subgroup_variant(rng, case):
    from test_matvec import minimum_subgroup_size

    teams = {"THREADS_PER_ROW": min(minimum_subgroup_size(), 16)}
    if case == "batch_offset":
        check_matvec(rng, rows=13, columns=192, batch=2, accumulate=True, y_offset=1, y_padding=2,
                     kernel="matvec_int8_subgroup", WORKGROUP_SIZE=32, ROWS_PER_THREAD=3, **teams)
    else:
        check_matvec(rng, rows=40, columns=2048, kernel="matvec_int8_subgroup", **teams)


def int8_rounding_bound(w, value):
    """|W (q scale) - W in(x)| <= sum_b (amax_b / 254) sum_{k in b} |W[n, k]| (1 % for the f32 scale arithmetic)."""
    batch, columns = value.shape
    amax = np.abs(value).reshape(batch, -1, BLOCK).max(axis=2)
    weight_sums = np.abs(w.astype(np.float64)).reshape(w.shape[0], -1, BLOCK).sum(axis=2)
    return 1.01 * (amax / 254) @ weight_sums.T


@pytest.mark.parametrize("mode", [PLAIN, RMS_NORM, SWIGLU])
def test_whole_path_against_the_float_matvec(mode, rng):
    """quantize_input then matvec_int8 vs the float64 matvec of matvec.wgsl's definition: within the inputs'
    rounding (worst case), and the error's RMS near what uniform rounding errors give (a wrong step, order or sum
    would be several times it)."""
    require_int8_dot()
    rows, columns, batch = 64, 2048 if mode != SWIGLU else 512, 2
    streams, w = random_weights(rng, (rows, columns), "q4")
    x = rng.standard_normal((batch, 2 * columns if mode == SWIGLU else columns)).astype(np.float32)
    alpha = rng.standard_normal(columns).astype(np.float32) if mode == RMS_NORM else None
    q, blocks = run_quantize(x, columns, mode, alpha)
    y = run_rounded_matvec(streams, pack_inputs(q), blocks, rows, columns, y=np.full((batch, rows), np.nan, np.float32),
                        BATCH=batch)
    value = transformed_input(x, mode, alpha)
    expected = ref.matvec(w, value)
    bound = int8_rounding_bound(w, value) + (columns / BLOCK / 16 + 64) * U32 * (np.abs(value) @ np.abs(w).T)
    assert_within(y, expected, bound, "quantize_input + matvec_int8")
    # The same integers as the reference away from rounding ties; the products of those the kernel made, exact but
    # for f32 sums (a tie rounded the other way moves y by a whole step times a weight: not an error).
    check_integers(q, blocks, value)
    rounded = (q.reshape(batch, -1, BLOCK) * blocks[..., :1].astype(np.float64)).reshape(batch, columns)
    np.testing.assert_allclose(y, ref.matvec(w, rounded), rtol=1e-4, atol=1e-4 * np.abs(y).max())
    step = np.abs(value).reshape(batch, -1, BLOCK).max(axis=2) / 127
    variance = (step**2 / 12) @ (w.astype(np.float64) ** 2).reshape(rows, -1, BLOCK).sum(axis=2).T
    assert np.sqrt(np.mean((y - expected) ** 2)) <= 1.5 * np.sqrt(np.mean(variance))
