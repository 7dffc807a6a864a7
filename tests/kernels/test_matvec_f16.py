"""The f16 path of q4 matrices: quantize_input.wgsl with OUTPUT_F16 (in(x) scaled per 32-block by a power of two
and rounded to f16) and matvec_f16.wgsl (q4 weights x f16 inputs, packed f16 multiply-adds), against the float64
numpy reference (kyutai_stt/reference/lm.py quantize_f16).

Tolerances. quantize_input: the scales are exactly the reference's powers of two; each h within one f16 rounding of
in(x) / scale (half an ULP, doubled for RMSNorm's f32 arithmetic and WGSL's implementation-chosen rounding).
matvec_f16 on given f16 inputs: the products' weights and inputs are exact, and a unit's two f16 lanes take 16
multiply-adds each, every one rounded by at most 2^-11 of its lane's running sum of |products|: 16 x 2^-11 of the
unit's sum of |products| (a compiler that keeps more bits does better), then the f32 bound of test_matvec.py.
"""

import numpy as np
import pytest
from kernel_helpers import U32, assert_within, poisoned, random_weights
from test_matvec_int8 import DEFAULTS, awkward_input, run_rounded_matvec, transformed_input

from kyutai_stt.engine import device as gpu
from kyutai_stt.reference import lm as ref

PLAIN, RMS_NORM, SWIGLU = ref.INPUT_PLAIN, ref.INPUT_RMS_NORM, ref.INPUT_SWIGLU
BLOCK = ref.INT8_BLOCK
U16 = 2.0**-11                     # unit roundoff of f16
UNIT_SUM_ROUNDINGS = 16            # f16 multiply-adds per lane and unit


def require_f16():
    # lavapipe has shader-f16 (docs: platform.md); a device without it here is a broken setup, not a reason to skip.
    assert "shader-f16" in gpu.get_device()[1].features, "this adapter lacks shader-f16"


def pack_f16(h: np.ndarray) -> np.ndarray:
    """[B, K] float16 -> u32 [B, K / 2] in quantize_input.wgsl's order: per 8 inputs, pairs (i, i + 4), i < 4."""
    groups = np.asarray(h, np.float16).reshape(h.shape[0], -1, 2, 4)           # [B, K/8, half, i]
    return np.ascontiguousarray(groups.transpose(0, 1, 3, 2)).view(np.uint32).reshape(h.shape[0], -1)


def unpack_f16(words: np.ndarray) -> np.ndarray:
    """The inverse of pack_f16: u32 [B, K / 2] -> float16 [B, K]."""
    pairs = np.ascontiguousarray(words).view(np.float16).reshape(words.shape[0], -1, 4, 2)
    return np.ascontiguousarray(pairs.transpose(0, 1, 3, 2)).reshape(words.shape[0], -1)


def run_quantize_f16(x, columns, input_mode=PLAIN, alpha=None, workgroup_size=256):
    batch = x.shape[0]
    constants = {"COLUMNS": columns, "BATCH": batch, "INPUT_MODE": input_mode, "WORKGROUP_SIZE": workgroup_size,
                 "OUTPUT_F16": True}
    out = gpu.run_kernel("quantize_input", {
        0: np.ascontiguousarray(x, np.float32),                                  # [BATCH, X_STRIDE]
        1: alpha if alpha is not None else np.zeros(4, np.float32),             # [COLUMNS], RMS_NORM only
        2: poisoned((batch, columns // 2), np.uint32),                            # xq: f16 pairs
        3: poisoned((batch, columns // BLOCK, 2)),                                # xs: (scale, 0)
    }, (-(-columns // 8 // workgroup_size), batch, 1), constants)
    return unpack_f16(out[2]), out[3]


def check_f16_inputs(h, blocks, value):
    """quantize_input's f16 output against the reference: the same power-of-two scales (zero blocks: 0), every h
    within one f16 ULP of value / scale, at most 1 in magnitude (value / scale is below 1, and may round up to it)."""
    batch, columns = value.shape
    _, expected_scale = ref.quantize_f16(value)
    assert not np.isnan(blocks).any(), "scales left unwritten"
    np.testing.assert_array_equal(blocks[..., 0], expected_scale, "power-of-two scales")
    assert (blocks[..., 1] == 0).all()
    scale = np.repeat(expected_scale, BLOCK, axis=1)
    exact = np.divide(value, scale, out=np.zeros_like(value, dtype=np.float64), where=scale > 0)
    h = h.astype(np.float64)
    assert (np.abs(h) <= 1).all() and (np.abs(exact) < 1).all()
    ulp = np.spacing(np.abs(exact).astype(np.float16)).astype(np.float64)
    assert_within(h, exact, ulp + 1e-6 * np.abs(exact), "f16 inputs")


@pytest.mark.parametrize("case", ["plain_multi_workgroup", "rms_batch", "swiglu_ffn_width", "rms_model_width"])
def test_quantize_input_f16(case, rng):
    columns, batch, mode, workgroup = {"plain_multi_workgroup": (320, 1, PLAIN, 4), "rms_batch": (64, 3, RMS_NORM, 64),
                                       "swiglu_ffn_width": (5632, 1, SWIGLU, 256),
                                       "rms_model_width": (2048, 2, RMS_NORM, 32)}[case]
    x = awkward_input(rng, batch, 2 * columns if mode == SWIGLU else columns)
    if mode == RMS_NORM:
        x[0, :BLOCK] = 1.0  # the zero block comes from alpha instead
    alpha = rng.standard_normal(columns).astype(np.float32) if mode == RMS_NORM else None
    if alpha is not None:
        alpha[:BLOCK] = 0.0
    h, blocks = run_quantize_f16(x, columns, mode, alpha, workgroup)
    check_f16_inputs(h, blocks, transformed_input(x, mode, alpha))
    assert (h[0, :BLOCK] == 0).all() and blocks[0, 0, 0] == 0.0, "an all-zero block rounds to zero, scale 0"


def test_a_block_just_below_a_power_of_two_rounds_up_to_one():
    """max |in(x)| = 1 - 2^-13: the scale is 1 (the least power of two above it) and that input rounds to f16 1.0,
    as numpy's float16 does; the rest of the block keeps its own rounding."""
    x = np.linspace(-0.5, 0.5, 64, dtype=np.float32)[None]
    x[0, 3] = 1 - 2.0**-13
    h, blocks = run_quantize_f16(x, 64)
    assert blocks[0, 0, 0] == 1.0 and h[0, 3] == 1.0
    check_f16_inputs(h, blocks, x.astype(np.float64))


def test_pack_f16_round_trip(rng):
    h = rng.standard_normal((2, 64)).astype(np.float16)
    words = pack_f16(h)
    # Word 1 of the first 8 inputs holds inputs 1 (low half) and 5 (high half).
    assert words[0, 1] == int(h[0, 1].view(np.uint16)) | int(h[0, 5].view(np.uint16)) << 16
    np.testing.assert_array_equal(unpack_f16(words), h)


def f16_sum_bound(rounded, w):
    """matvec_f16's error given exact f16 inputs (rounded = scale * h, float64 [B, K]): 16 f16 roundings of each
    unit's sum of |products|, then f32 roundings as test_matvec_int8.py's bound."""
    return UNIT_SUM_ROUNDINGS * U16 * (np.abs(rounded) @ np.abs(w).T)


def check_matvec(rng, rows, columns, *, batch=1, accumulate=False, y_offset=0, y_padding=0, **tuning):
    """matvec_f16 alone, on inputs rounded by the numpy reference."""
    require_f16()
    streams, w = random_weights(rng, (rows, columns), "q4")
    value = awkward_input(rng, batch, columns)
    h, scale = ref.quantize_f16(value)
    xs = np.stack([scale, np.zeros_like(scale)], axis=-1)                      # [B, K/32, 2]
    y_stride = rows + y_offset + y_padding
    y_initial = np.full((batch, y_stride), np.nan, np.float32)
    if accumulate:
        y_initial[:, y_offset:y_offset + rows] = rng.standard_normal((batch, rows))
    constants = {"BATCH": batch, "ACCUMULATE": accumulate, **tuning}
    if y_offset or y_padding:
        constants |= {"Y_OFFSET": y_offset, "Y_STRIDE": y_stride}
    y = run_rounded_matvec(streams, pack_f16(h), xs.astype(np.float32), rows, columns, y=y_initial,
                           kernel="matvec_f16", **constants)
    rounded = (h.astype(np.float64).reshape(batch, -1, BLOCK) * scale[..., None]).reshape(batch, columns)
    residual = y_initial[:, y_offset:y_offset + rows] if accumulate else None
    expected = ref.matvec(w, rounded, accumulate_into=residual)
    threads = tuning.get("THREADS_PER_ROW", DEFAULTS["THREADS_PER_ROW"])
    bound = f16_sum_bound(rounded, w) + (columns / BLOCK / threads + 64) * U32 * (np.abs(rounded) @ np.abs(w).T)
    if accumulate:
        bound = bound + U32 * np.abs(expected)
    assert_within(y[:, y_offset:y_offset + rows], expected, bound, "matvec_f16")
    assert np.isnan(y[:, :y_offset]).all() and np.isnan(y[:, y_offset + rows:]).all()


def test_f16_one_row_of_minimal_width(rng):
    check_matvec(rng, rows=1, columns=64)


def test_f16_odd_rows_and_columns_accumulate(rng):
    # 37 rows: not a multiple of the workgroup's rows; 10 units over 16 members: most idle, a ragged pass.
    check_matvec(rng, rows=37, columns=320, accumulate=True)


def test_f16_batch_offset_and_odd_tuning(rng):
    # Three streams, rows placed inside a wider output, a 3-member team in a 96-invocation workgroup.
    check_matvec(rng, rows=6, columns=128, batch=3, accumulate=True, y_offset=2, y_padding=3,
                 WORKGROUP_SIZE=96, THREADS_PER_ROW=3, ROWS_PER_THREAD=2)


@pytest.mark.parametrize("rows, columns", [(48, 2048), (20, 5632)])
def test_f16_model_widths(rng, rows, columns):
    check_matvec(rng, rows=rows, columns=columns, accumulate=columns > 2048, ROWS_PER_THREAD=8)


@pytest.mark.parametrize("mode", [PLAIN, RMS_NORM, SWIGLU])
def test_whole_f16_path_against_the_float_matvec(mode, rng, capsys):
    """quantize_input (f16) then matvec_f16 vs the float64 matvec of matvec.wgsl's definition: within the inputs'
    f16 rounding (one ULP each) plus the sums' bound; its RMS is printed beside the int8 path's worst case."""
    require_f16()
    rows, columns, batch = 64, 2048 if mode != SWIGLU else 512, 2
    streams, w = random_weights(rng, (rows, columns), "q4")
    x = rng.standard_normal((batch, 2 * columns if mode == SWIGLU else columns)).astype(np.float32)
    alpha = rng.standard_normal(columns).astype(np.float32) if mode == RMS_NORM else None
    h, blocks = run_quantize_f16(x, columns, mode, alpha)
    y = run_rounded_matvec(streams, pack_f16(h), blocks, rows, columns, y=np.full((batch, rows), np.nan, np.float32),
                           kernel="matvec_f16", BATCH=batch)
    value = transformed_input(x, mode, alpha)
    check_f16_inputs(h, blocks, value)
    expected = ref.matvec(w, value)
    magnitude = np.abs(value) @ np.abs(w).T
    bound = (2 * U16 + UNIT_SUM_ROUNDINGS * U16 + (columns / BLOCK / 16 + 64) * U32) * magnitude
    assert_within(y, expected, bound, "quantize_input (f16) + matvec_f16")
    int8_step = np.abs(value).reshape(batch, -1, BLOCK).max(axis=2) / 127
    int8_rms = np.sqrt(np.mean((int8_step**2 / 12) @ (w.astype(np.float64) ** 2).reshape(rows, -1, BLOCK).sum(2).T))
    rms = np.sqrt(np.mean((y - expected) ** 2))
    with capsys.disabled():
        print(f"\n[f16 path, mode {mode}, {gpu.adapter_summary()['name']}] RMS error {rms:.3g}, "
              f"{rms / int8_rms:.3f} of the int8 path's expected RMS")
    # The f16 path's point: several times more faithful than the int8 path (a wrong order or scale is not).
    assert rms <= int8_rms / 2
