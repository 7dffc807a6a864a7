"""matvec.wgsl (every FORMAT) and matvec_subgroup.wgsl vs the float64 numpy reference on the dequantised weights
(kyutai_stt.reference.lm).

Tolerance: the a-priori bound of a float32 dot product, |error| <= n u sum_k |W[n, k] in(x)[k]|, where n counts the
roundings on the longest chain of one output: a member accumulates its units serially (COLUMNS / THREADS_PER_ROW
products and adds, at most), the team tree adds log2(THREADS_PER_ROW) more, and the dequantisation (exact:
f16 scale x small integer), the input transform (RMSNorm: a sum of squares and inverseSqrt's 2 ULP; SwiGLU: exp's
3 + 2|x| ULP, < 16 ULP for these inputs) and the final scale and residual add stay under 64 more. So
n = COLUMNS / THREADS_PER_ROW + 64. At D = 2048 that is ~6e-6 of sum |W x|, while a bug as small as one wrong
weight moves an output by ~1 / (0.8 D) ~ 6e-4 of it: 100x above the bound.
"""

import numpy as np
import pytest
from kernel_helpers import in_out, poisoned, product_case, weight_bindings

from kyutai_stt.engine import device as gpu
from kyutai_stt.reference import lm as ref
from kyutai_stt.weights.quant import FORMATS

PLAIN, RMS_NORM, SWIGLU = ref.INPUT_PLAIN, ref.INPUT_RMS_NORM, ref.INPUT_SWIGLU
UNIT = {"q4": 32, "q8": 32, "f16": 8, "f32": 4}  # weights per member load; q4/q8 need COLUMNS % 64 == 0
MIN_COLUMNS = {"q4": 64, "q8": 64, "f16": 8, "f32": 4}
DEFAULTS = {"WORKGROUP_SIZE": 256, "THREADS_PER_ROW": 64, "ROWS_PER_THREAD": 4}


def run_matvec(quant_type, streams, x, rows, columns, *, y=None, alpha=None, kernel=None, **constants):
    """Dispatch matvec (or `kernel`) once with FORMAT = quant_type's. y: the initial output buffer (else
    NaN-poisoned [BATCH, ROWS])."""
    tuning = {**DEFAULTS, **{k: v for k, v in constants.items() if k in DEFAULTS}}
    rows_per_workgroup = tuning["WORKGROUP_SIZE"] // tuning["THREADS_PER_ROW"] * tuning["ROWS_PER_THREAD"]
    batch = constants.get("BATCH", 1)
    bindings = {
        **weight_bindings(streams),
        2: np.ascontiguousarray(x, np.float32),  # [BATCH, X_STRIDE]
        3: in_out(y) if y is not None else poisoned((batch, rows)),  # [BATCH, Y_STRIDE]
        4: alpha if alpha is not None else np.zeros(4, np.float32),  # read in RMS_NORM mode only; always bound
    }
    workgroups = (-(-rows // rows_per_workgroup), 1, 1)
    constants = {"FORMAT": FORMATS[quant_type], "ROWS": rows, "COLUMNS": columns, **constants}
    return gpu.run_kernel(kernel or "matvec", bindings, workgroups, constants)[3]


def check(quant_type, rng, rows, columns, input_mode=PLAIN, accumulate=False, batch=1, y_offset=0, y_padding=0,
          kernel=None, **tuning):
    case = product_case(rng, quant_type, rows, columns, batch, input_mode, accumulate, y_offset, y_padding)
    constants = {"INPUT_MODE": input_mode, "ACCUMULATE": accumulate, "BATCH": batch, **tuning}
    if y_offset or y_padding:
        constants |= {"Y_OFFSET": y_offset, "Y_STRIDE": case.y_initial.shape[1]}
    y = run_matvec(quant_type, case.streams, case.x, rows, columns, y=case.y_initial, alpha=case.alpha,
                   kernel=kernel, **constants)
    case.check(y, columns / tuning.get("THREADS_PER_ROW", 64) + 64, f"{kernel or 'matvec'} {quant_type}")


QUANTS = ["q4", "q8", "f16", "f32"]


@pytest.mark.parametrize("quant_type", QUANTS)
def test_one_row_of_minimal_width(quant_type, rng):
    check(quant_type, rng, rows=1, columns=MIN_COLUMNS[quant_type])


@pytest.mark.parametrize("quant_type", QUANTS)
def test_odd_rows_and_columns_accumulate(quant_type, rng):
    # 37 rows: not a multiple of the 16 rows of a workgroup; 5 * MIN_COLUMNS: most members of a 64-team idle, and
    # 2 * 64 + 9 f16 units (etc.): a ragged last pass over the row.
    columns = {"q4": 320, "q8": 320, "f16": 8 * 137, "f32": 4 * 137}[quant_type]
    check(quant_type, rng, rows=37, columns=columns, accumulate=True)


@pytest.mark.parametrize("quant_type", QUANTS)
def test_rms_norm_input(quant_type, rng):
    columns = {"q4": 192, "q8": 192, "f16": 136, "f32": 68}[quant_type]
    check(quant_type, rng, rows=9, columns=columns, input_mode=RMS_NORM, ROWS_PER_THREAD=3)


@pytest.mark.parametrize("quant_type", QUANTS)
def test_swiglu_input_batch_offset_and_odd_tuning(quant_type, rng):
    # Two streams, output rows placed at an offset inside a wider buffer, a non-power-of-two team (3 members) in a
    # 96-invocation workgroup: every index expression of the skeleton off its default.
    columns = {"q4": 128, "q8": 128, "f16": 24, "f32": 12}[quant_type]
    check(quant_type, rng, rows=6, columns=columns, input_mode=SWIGLU, accumulate=True, batch=2, y_offset=2,
          y_padding=3, WORKGROUP_SIZE=96, THREADS_PER_ROW=3, ROWS_PER_THREAD=2)


@pytest.mark.parametrize("quant_type", ["q4", "q8"])
def test_batch_with_rms_norm_uses_per_stream_norms(quant_type, rng):
    check(quant_type, rng, rows=11, columns=128, input_mode=RMS_NORM, batch=3, THREADS_PER_ROW=32)


def test_q4_realistic_attention_input(rng):
    # The LM's QKV/FFN-in shape family: D = 2048 inputs through the fused pre-norm (a slice of the rows).
    check("q4", rng, rows=48, columns=2048, input_mode=RMS_NORM)


def test_q4_realistic_ffn_output(rng):
    # The FFN-out shape family: F = 5632 inputs from SwiGLU, residual add fused.
    check("q4", rng, rows=20, columns=5632, input_mode=SWIGLU, accumulate=True)


def minimum_subgroup_size():
    adapter, device = gpu.get_device()
    if "subgroup" not in device.features:
        pytest.skip("the adapter has no subgroups")
    info = adapter.info
    # wgpu-py 0.32 spells the key "stackgroup_min_size".
    return int(info.get("subgroup_min_size", info.get("stackgroup_min_size", 4)))


@pytest.mark.parametrize("case", ["rms_batch", "swiglu_offset", "realistic"])
def test_q4_subgroup_variant(rng, case):
    teams = {"THREADS_PER_ROW": minimum_subgroup_size()}
    if case == "rms_batch":
        check("q4", rng, rows=13, columns=192, input_mode=RMS_NORM, batch=2, kernel="matvec_subgroup", **teams)
    elif case == "swiglu_offset":
        check("q4", rng, rows=6, columns=128, input_mode=SWIGLU, accumulate=True, y_offset=1, y_padding=2,
              kernel="matvec_subgroup", WORKGROUP_SIZE=32, THREADS_PER_ROW=2, ROWS_PER_THREAD=3)
    else:
        check("q4", rng, rows=40, columns=2048, input_mode=RMS_NORM, kernel="matvec_subgroup", **teams)


@pytest.mark.parametrize("quant_type", ["q8", "f16", "f32"])
def test_subgroup_variant_other_formats(quant_type, rng):
    # The plans use the subgroup variant for q4 only, but it takes every FORMAT as matvec.wgsl does.
    columns = {"q8": 192, "f16": 136, "f32": 68}[quant_type]
    check(quant_type, rng, rows=13, columns=columns, input_mode=RMS_NORM, batch=2, kernel="matvec_subgroup",
          THREADS_PER_ROW=minimum_subgroup_size())
