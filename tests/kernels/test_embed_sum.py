"""embed_sum.wgsl (every FORMAT) vs lm_reference.embed_sum.

Exact: every dequantised element (f16 scale x small integer, or an f16/f32 value) is exact in f32, and the kernel
adds the rows in the reference's order (0, 1, ..., then the accumulated group), so a float32 reference summed in
the same order must match bit for bit (a fused multiply-add changes nothing: the product is exact).
"""

import numpy as np
import pytest
from kernel_helpers import in_out, poisoned, random_weights, weight_bindings

from kyutai_stt.engine import device as gpu
from kyutai_stt.reference import lm as ref
from kyutai_stt.weights.quant import FORMATS

ELEMENTS_PER_WORD = {"q4": 8, "q8": 4, "f16": 2, "f32": 1}
QUANTS = list(ELEMENTS_PER_WORD)


def run_embed_sum(quant_type, streams, ids, dim, tables, table_rows, x=None, **constants):
    batch = ids.shape[0]
    words_per_workgroup = constants.get("WORDS_PER_WORKGROUP", 8)
    bindings = {
        **weight_bindings(streams),
        2: ids.astype(np.uint32),                                        # [batch, IDS_STRIDE]
        3: in_out(x) if x is not None else poisoned((batch, dim)),       # [batch, DIM]
    }
    words = dim // ELEMENTS_PER_WORD[quant_type]
    workgroups = (-(-words // words_per_workgroup), batch, 1)
    constants = {"FORMAT": FORMATS[quant_type], "DIM": dim, "TABLES": tables, "TABLE_ROWS": table_rows,
                 "IDS_STRIDE": ids.shape[1], **constants}
    return gpu.run_kernel("embed_sum", bindings, workgroups, constants)[3]


def check(rng, quant_type, dim, tables, table_rows, batch=1, extra_ids=0, accumulate=False, **constants):
    streams, table = random_weights(rng, (tables * table_rows, dim), quant_type)
    ids = rng.integers(0, table_rows, (batch, tables + extra_ids))
    ids[0, 0] = table_rows - 1  # the last row of a table (the start token's) is reachable
    x = rng.standard_normal((batch, dim)).astype(np.float32) if accumulate else None
    got = run_embed_sum(quant_type, streams, ids, dim, tables, table_rows, x, ACCUMULATE=accumulate, **constants)
    expected = ref.embed_sum(table, ids[:, :tables], table_rows, accumulate_into=x, dtype=np.float32)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("quant_type", QUANTS)
def test_codebook_group(quant_type, rng):
    check(rng, quant_type, dim=64, tables=5, table_rows=7)


@pytest.mark.parametrize("quant_type", QUANTS)
def test_tables_looped_over_few_invocations_and_a_ragged_last_workgroup(quant_type, rng):
    # 2 invocations over 5 tables (3 + 2 rows each); 3 words per workgroup do not divide the row's words.
    check(rng, quant_type, dim=128, tables=5, table_rows=4, WORDS_PER_WORKGROUP=3, TABLE_THREADS=2)


@pytest.mark.parametrize("quant_type", QUANTS)
def test_single_table_accumulates_text_row(quant_type, rng):
    check(rng, quant_type, dim=128, tables=1, table_rows=9, accumulate=True)


@pytest.mark.parametrize("quant_type", ["q4", "f16"])
def test_streams_with_ids_sharing_a_buffer(quant_type, rng):
    # Each stream's ids row holds its codes and one more id (the text token's place): IDS_STRIDE = TABLES + 1.
    check(rng, quant_type, dim=64, tables=3, table_rows=5, batch=2, extra_ids=1)


def test_realistic_width_and_codebook_count(rng):
    # The LM: 32 codebooks, D = 2048 (tables kept short: their length only changes addresses).
    check(rng, "q4", dim=2048, tables=32, table_rows=5)
