"""matmul.wgsl (every FORMAT, every input mode) vs the float64 numpy reference on the dequantised weights.

Tolerance: as tests/kernels/test_matvec.py's bound, with the longest chain of one output here the serial sum over
all COLUMNS (one fused multiply-add per column, the weight decoded exactly: f16 scale x small integer), plus 64
for the input transform and the final scale and add: n = COLUMNS + 64. At D = 2048 that is ~1.2e-4 of sum |W x|,
while one wrong weight moves an output by ~6e-4 of it.
"""

import numpy as np
import pytest
from kernel_helpers import in_out, product_case, random_weights, weight_bindings

from kyutai_stt.engine import device as gpu
from kyutai_stt.reference import lm as ref
from kyutai_stt.weights.quant import FORMATS

PLAIN, RMS_NORM, SWIGLU = ref.INPUT_PLAIN, ref.INPUT_RMS_NORM, ref.INPUT_SWIGLU


def run_matmul(bindings, rows, batch, constants):
    """main, then (K_SPLITS > 1) combine, as a plan dispatches them; bindings 0-4 as the kernel's, 3 the initial y
    (an in_out buffer); returns y."""
    splits = constants.get("K_SPLITS", 1)
    row_threads, stream_threads = constants.get("ROW_THREADS", 16), constants.get("STREAM_THREADS", 16)
    workgroups = (-(-rows // (4 * row_threads)), -(-batch // (4 * stream_threads)), splits)
    partials = gpu.Output((max(1, splits * batch * (rows + 1)),), np.float32, fill=np.nan)
    out = gpu.run_kernel("matmul", {**bindings, 5: partials}, workgroups, constants)
    if splits == 1:
        return out[3]
    return gpu.run_kernel("matmul", {3: bindings[3], 5: in_out(out[5])}, (-(-rows // 64), batch, 1), constants,
                          entry="combine")[3]


def check(quant_type, rng, rows, columns, batch, input_mode=PLAIN, accumulate=False, y_offset=0, y_padding=0,
          row_threads=16, stream_threads=16, tile_k=32, k_splits=1):
    case = product_case(rng, quant_type, rows, columns, batch, input_mode, accumulate, y_offset, y_padding)
    constants = {"FORMAT": FORMATS[quant_type], "ROWS": rows, "COLUMNS": columns, "BATCH": batch,
                 "INPUT_MODE": input_mode, "ACCUMULATE": accumulate, "Y_OFFSET": y_offset,
                 "Y_STRIDE": case.y_initial.shape[1], "ROW_THREADS": row_threads, "STREAM_THREADS": stream_threads,
                 "TILE_K": tile_k, "K_SPLITS": k_splits}
    case.check(run_matmul(case.bindings, rows, batch, constants), columns + 64, f"matmul {quant_type}")


@pytest.mark.parametrize("quant_type", ["q4", "q8", "f16", "f32"])
def test_every_format_with_ragged_tiles(quant_type, rng):
    # 70 rows and 67 streams: both past a whole 64-tile; 192 columns: six steps.
    check(quant_type, rng, rows=70, columns=192, batch=67, accumulate=True)


@pytest.mark.parametrize("quant_type", ["q4", "q8"])
def test_rms_norm_per_stream(quant_type, rng):
    check(quant_type, rng, rows=33, columns=128, batch=9, input_mode=RMS_NORM)


def test_swiglu_offset_output_and_odd_tiles(rng):
    # An 8 x 4 workgroup, 64-column steps: every index expression off its default.
    check("q4", rng, rows=20, columns=192, batch=30, input_mode=SWIGLU, accumulate=True, y_offset=3, y_padding=2,
          row_threads=8, stream_threads=4, tile_k=64)


def test_rms_norm_with_the_most_input_loads(rng):
    # TILE_K = 8 ROW_THREADS: every invocation makes INPUT_LOADS = 8 input loads per step.
    check("q4", rng, rows=24, columns=256, batch=13, input_mode=RMS_NORM, row_threads=4, stream_threads=4,
          tile_k=32)


@pytest.mark.parametrize("input_mode", [RMS_NORM, SWIGLU])
def test_column_splits_with_every_input_mode(rng, input_mode):
    # Three column ranges added by combine: RMS_NORM's squares per range, the residual add once, an output offset.
    check("q4", rng, rows=70, columns=192, batch=67, input_mode=input_mode, accumulate=True, y_offset=1,
          y_padding=2, k_splits=3)


def test_q4_realistic_ffn_input(rng):
    # The LM's FFN-in family: D = 2048 inputs through the fused pre-norm, a slice of the rows, 20 streams.
    check("q4", rng, rows=64, columns=2048, batch=20, input_mode=RMS_NORM)


def test_a_stream_alone_equals_it_among_others(rng):
    # The property the plans rely on: stream s's outputs do not depend on the batch around it, bit for bit.
    streams, _ = random_weights(rng, (40, 256), "q4")
    x = rng.standard_normal((70, 512)).astype(np.float32)
    alpha = rng.standard_normal(256).astype(np.float32)

    def run(inputs, mode, splits):
        constants = {"FORMAT": FORMATS["q4"], "ROWS": 40, "COLUMNS": 256, "BATCH": len(inputs), "INPUT_MODE": mode,
                     "K_SPLITS": splits}
        bindings = {**weight_bindings(streams), 2: np.ascontiguousarray(inputs),
                    3: in_out(np.zeros((len(inputs), 40), np.float32)), 4: alpha}
        return run_matmul(bindings, 40, len(inputs), constants)

    for mode, columns, splits in ((RMS_NORM, 256, 1), (SWIGLU, 512, 1), (RMS_NORM, 256, 2)):
        together = run(x[:, :columns], mode, splits)
        for s in (0, 5, 66):
            assert np.array_equal(run(x[s:s + 1, :columns], mode, splits)[0], together[s]), (mode, s)
