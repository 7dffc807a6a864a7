"""matmul_int8.wgsl, the int8 path of q4 matrices in plans of many streams: on inputs quantised by the numpy
reference (test_matvec_int8's packing), the integer products are exact, so only f32 sums' bound applies (per block
d * scale * integer, three roundings, then one addition per block and per column range). Tiles, steps of blocks
and column ranges off their defaults; every stream's results equal, bit for bit, its results alone."""

import numpy as np
import pytest
from kernel_helpers import U32, assert_within, in_out, random_weights, weight_bindings
from test_matvec_int8 import BLOCK, awkward_input, pack_inputs, require_int8_dot

from kyutai_stt.engine import device as gpu
from kyutai_stt.reference import lm as ref


def run(streams, xq, xs, rows, columns, batch, y, *, row_threads=4, stream_threads=4, tile_blocks=2, k_splits=1,
        stream_quads=1, **constants):
    """main, then combine when the columns are split; returns y. stream_quads: 4 streams an invocation, or 8."""
    tile = {"ROW_THREADS": row_threads, "STREAM_THREADS": stream_threads, "TILE_BLOCKS": tile_blocks,
            "K_SPLITS": k_splits, **({"STREAM_QUADS": stream_quads} if stream_quads > 1 else {})}
    constants = {"ROWS": rows, "COLUMNS": columns, "BATCH": batch, **tile, **constants}
    partials = np.zeros(max(1, k_splits * batch * rows), np.float32)
    out = gpu.run_kernel("matmul_int8", {**weight_bindings(streams), 2: xq, 3: in_out(y), 4: xs, 5: in_out(partials)},
                         (-(-rows // (4 * row_threads)), -(-batch // (4 * stream_quads * stream_threads)), k_splits),
                         constants)
    if k_splits == 1:
        return out[3]
    return gpu.run_kernel("matmul_int8", {3: in_out(y), 5: out[5]}, (-(-rows // 64), batch, 1), constants,
                          entry="combine")[3]


CASES = {   # rows, columns, streams, tile and splits
    "ragged tiles": (70, 128, 5, {}),
    "model width, split columns": (129, 512, 67, {"row_threads": 16, "stream_threads": 16, "tile_blocks": 4,
                                                  "k_splits": 2}),
    "one block a step, 4 ranges": (33, 256, 9, {"tile_blocks": 1, "k_splits": 4}),
    "the plans' tile, two tile sets": (129, 512, 67, {"row_threads": 16, "stream_threads": 16, "tile_blocks": 2,
                                                      "k_splits": 2}),
    "8 streams an invocation, ragged": (70, 128, 21, {"stream_threads": 2, "stream_quads": 2}),
    "8 streams an invocation, the plans' tile, split columns": (129, 512, 67, {"row_threads": 16, "stream_threads": 8,
                                                                             "stream_quads": 2, "k_splits": 2}),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("accumulate", [False, True])
def test_matmul_int8_against_the_exact_integers(rng, case, accumulate):
    require_int8_dot()
    rows, columns, batch, tile = CASES[case]
    streams, w = random_weights(rng, (rows, columns), "q4")
    value = awkward_input(rng, batch, columns)
    q, scale = ref.quantize_int8(value)
    xq = pack_inputs(q)
    xs = np.stack([scale, q.reshape(batch, -1, BLOCK).sum(axis=2)], axis=-1).astype(np.float32)   # [B, K/32, 2]
    y0 = rng.standard_normal((batch, rows)).astype(np.float32) if accumulate else np.full((batch, rows), np.nan,
                                                                                            np.float32)
    y = run(streams, xq, xs, rows, columns, batch, y0, ACCUMULATE=accumulate, **tile).reshape(batch, rows)
    rounded = (q.reshape(batch, -1, BLOCK) * scale[..., None].astype(np.float32)).reshape(batch, columns)
    expected = ref.matvec(w, rounded, accumulate_into=y0 if accumulate else None)
    bound = (columns / BLOCK + 8) * U32 * (np.abs(rounded) @ np.abs(w).T)
    if accumulate:
        bound = bound + U32 * np.abs(expected)
    assert_within(y, expected, bound, case)
    # A stream's results do not depend on the others: the last stream alone gives the same bits.
    alone = run(streams, xq[-1:], xs[-1:], rows, columns, 1, y0[-1:], ACCUMULATE=accumulate, **tile)
    np.testing.assert_array_equal(alone.reshape(rows), y[-1], "the last stream alone")


@pytest.mark.parametrize("k_splits", [1, 2])
def test_eight_streams_an_invocation_give_the_same_bits(rng, k_splits):
    """The plans' 64 x 64 tile as 16 x 16 invocations of 4 streams or 16 x 8 of 8 (lm.MatmulTuning.wide_grid): every
    output summed in the same order, so the same bits, ragged rows and streams included."""
    require_int8_dot()
    rows, columns, batch = 150, 512, 100
    streams, _ = random_weights(rng, (rows, columns), "q4")
    q, scale = ref.quantize_int8(awkward_input(rng, batch, columns))
    xq = pack_inputs(q)
    xs = np.stack([scale, q.reshape(batch, -1, BLOCK).sum(axis=2)], axis=-1).astype(np.float32)
    y0 = rng.standard_normal((batch, rows)).astype(np.float32)
    four, eight = (run(streams, xq, xs, rows, columns, batch, y0, row_threads=16, stream_threads=threads,
                       stream_quads=quads, k_splits=k_splits, ACCUMULATE=True) for threads, quads in [(16, 1), (8, 2)])
    np.testing.assert_array_equal(four.view(np.uint32), eight.view(np.uint32))
