"""Every WGSL kernel in Chromium's WebGPU (SwiftShader) against the same numpy references as natively.

The native kernel tests (tests/kernels/*) run here: their cases, references and error bounds are imported and
gpu.run_kernel is answered by the browser (conftest.BrowserKernels: one dispatch of the kernels/*.wgsl file the
site serves; bindings and results as raw bytes). A kernel that is right on lavapipe and wrong under Chrome's Tint
compiler, or a host difference in how constants or bindings are passed, fails here.

Differences from the native runs, each for a stated reason:
  - RoPE (attention, attention_chunk): WGSL, like Vulkan, allows cos/sin an absolute error of 2^-11 on [-pi, pi];
    SwiftShader uses it (measured 1.9e-4), lavapipe's libm is exact to a few ulp, and the native bounds assume the
    latter. The attention cases below add the propagated trigonometric error to the native bound (derivation in
    test_attention.trig_score_error); wrong slots, rotations or heads are still orders of magnitude beyond it.
  - Subsets, for time (SwiftShader runs these ~10x slower than lavapipe): RVQ and the strided conv run each
    format once (alternating the work splits, each split and both history regions at least once), the int8 tile
    each case once (accumulating or not, alternately), the realistic 16-head x 750-slot LM attention is replaced
    by the LM's head size on a short ring; the native subgroup test reads the native adapter's subgroup size, so
    its cases run here with the browser's.
Nothing needs shader-f16 (SwiftShader lacks it): the f16 layouts are read through unpack2x16float, so every format
runs here.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import test_attention
import test_attention_int8
import test_matmul_int8
import test_matvec
import test_matvec_int8
import test_mimi_kernels
from kernel_helpers import assert_within
from test_attention import test_combine_rounded_equals_combine_then_quantize_input  # noqa: F401 - run here too
from test_embed_sum import (  # noqa: F401 - the native cases, run here by the browser
    test_codebook_group,
    test_realistic_width_and_codebook_count,
    test_single_table_accumulates_text_row,
    test_streams_with_ids_sharing_a_buffer,
    test_tables_looped_over_few_invocations_and_a_ragged_last_workgroup,
)
from test_matvec import (  # noqa: F401 - the native cases, run here by the browser
    test_batch_with_rms_norm_uses_per_stream_norms,
    test_odd_rows_and_columns_accumulate,
    test_one_row_of_minimal_width,
    test_q4_realistic_attention_input,
    test_q4_realistic_ffn_output,
    test_rms_norm_input,
    test_swiglu_input_batch_offset_and_odd_tuning,
)
from test_matvec_int8 import (  # noqa: F401 - the native cases, run here by the browser
    test_int8_batch_offset_and_odd_tuning,
    test_int8_model_widths,
    test_int8_odd_rows_and_columns_accumulate,
    test_int8_one_row_of_minimal_width,
    test_quantize_input,
    test_whole_path_against_the_float_matvec,
)
from test_mimi_kernels import (  # noqa: F401 - the native cases, run here by the browser
    test_conv1d_accumulate_with_layer_scale,
    test_conv1d_layer_norm_in_gelu_out,
    test_conv1d_pcm_keeps_its_sample_history_across_frames,
    test_conv1d_replicate_padding_on_the_first_frame_only,
    test_rvq_stream_sitting_out_keeps_its_codes,
)
from test_output_heads import (  # noqa: F401 - the native cases, run here by the browser
    test_argmax_all_equal_and_tiny_counts,
    test_argmax_at_the_edges_of_invocation_ranges,
    test_argmax_realistic_vocabulary,
    test_argmax_skips_nan,
    test_argmax_streams_offsets_and_destinations,
    test_argmax_streams_sitting_out_keep_token_and_prompt,
    test_argmax_ties_go_to_the_lowest_index,
    test_prompt_allows_only_padding_and_the_next_id_then_advances,
    test_prompt_edge_cases,
    test_vad_realistic,
    test_vad_streams_offsets_and_small_teams,
)

from kyutai_stt.engine import device as gpu
from kyutai_stt.models.mimi import FORMATS
from kyutai_stt.models.rope import rope_frequencies
from kyutai_stt.reference import mimi as mr

# WGSL's accuracy for cos and sin: absolute error <= 2^-11 on [-pi, pi] (the kernels reduce angles there first).
WGSL_TRIG_ERROR = 2.0**-11


@pytest.fixture(autouse=True)
def in_the_browser(monkeypatch, browser_kernels):
    monkeypatch.setattr(gpu, "run_kernel", browser_kernels.run_kernel)


@pytest.fixture
def rng():
    # As tests/kernels/conftest.py: a fresh seed per test, printed so that a failure says how to replay it.
    seed = int(os.environ.get("KERNEL_TEST_SEED") or np.random.SeedSequence().entropy % 2**63)
    print(f"replay with KERNEL_TEST_SEED={seed}")
    return np.random.default_rng(seed)


# ---- subgroups ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser_subgroup_size(page):
    info = page.call("adapterInfo")
    assert "subgroups" in info["features"], "Chromium's SwiftShader adapter offers subgroups (platform.md §1)"
    return int(info["subgroupMinSize"])


@pytest.mark.parametrize("case", ["rms_batch", "swiglu_offset", "realistic"])
def test_q4_subgroup_in_the_browser(rng, case, browser_subgroup_size):
    # test_matvec.test_q4_subgroup_variant's cases, teams as wide as this adapter's smallest subgroup (4 here);
    # the kernel's `enable subgroups;` directive, which Tint requires and the native host strips, is used as is.
    teams = {"THREADS_PER_ROW": browser_subgroup_size}
    if case == "rms_batch":
        test_matvec.check("q4", rng, rows=13, columns=192, input_mode=test_matvec.RMS_NORM, batch=2,
                          kernel="matvec_subgroup", **teams)
    elif case == "swiglu_offset":
        test_matvec.check("q4", rng, rows=6, columns=128, input_mode=test_matvec.SWIGLU, accumulate=True,
                          y_offset=1, y_padding=2, kernel="matvec_subgroup", WORKGROUP_SIZE=32,
                          THREADS_PER_ROW=2, ROWS_PER_THREAD=3)
    else:
        test_matvec.check("q4", rng, rows=40, columns=2048, input_mode=test_matvec.RMS_NORM,
                          kernel="matvec_subgroup", **teams)


@pytest.mark.parametrize("quant_type", ["q8", "f16", "f32"])
def test_subgroup_variant_other_formats_in_the_browser(rng, quant_type, browser_subgroup_size):
    # test_matvec.test_subgroup_variant_other_formats with this adapter's subgroups: Tint compiles every FORMAT.
    columns = {"q8": 192, "f16": 136, "f32": 68}[quant_type]
    test_matvec.check(quant_type, rng, rows=13, columns=columns, input_mode=test_matvec.RMS_NORM, batch=2,
                      kernel="matvec_subgroup", THREADS_PER_ROW=browser_subgroup_size)


@pytest.mark.parametrize("case", ["batch_offset", "model_width"])
def test_int8_subgroup_in_the_browser(rng, case, browser_subgroup_size, page):
    # test_matvec_int8.test_int8_subgroup_variant's cases with this adapter's subgroups; Tint gets the file's
    # `enable subgroups;` and `requires packed_4x8_integer_dot_product;` as they are.
    assert test_matvec_int8.INT8_DOT_NAME in page.call("adapterInfo")["wgslLanguageFeatures"]
    teams = {"THREADS_PER_ROW": browser_subgroup_size}
    if case == "batch_offset":
        test_matvec_int8.check_matvec(rng, rows=13, columns=192, batch=2, accumulate=True, y_offset=1, y_padding=2,
                                      kernel="matvec_int8_subgroup", WORKGROUP_SIZE=32, ROWS_PER_THREAD=3, **teams)
    else:
        test_matvec_int8.check_matvec(rng, rows=40, columns=2048, kernel="matvec_int8_subgroup", **teams)


# ---- RVQ ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt, tuning", [("q8", "gpu"), ("f16", "cpu"), ("f32", "cpu"), ("q4", "gpu-many")])
def test_rvq_split_levels(rng, fmt, tuning):
    test_mimi_kernels.test_rvq_split_levels_match_the_reference(rng, fmt, tuning)


@pytest.mark.parametrize("fmt, tuning, parity", [("q4", "gpu-many", 0), ("f16", "gpu", 1), ("q8", "cpu", 0),
                                                 ("f32", "gpu-many", 1), ("q8", "gpu-many/5", 1)])
def test_conv1d_strided_with_history_regions(rng, fmt, tuning, parity):
    test_mimi_kernels.test_conv1d_strided_with_history_regions(rng, fmt, tuning, parity, 37 if parity else 20)


@pytest.mark.parametrize("case, accumulate", [(case, i % 2 == 1) for i, case in enumerate(test_matmul_int8.CASES)])
def test_matmul_int8_against_the_exact_integers(rng, case, accumulate):
    test_matmul_int8.test_matmul_int8_against_the_exact_integers(rng, case, accumulate)


# ---- attention with WGSL's trigonometric accuracy ----------------------------------------------------------------
ATTENTION_CASES = {      # test_attention.py's cases (see there; fewer ring positions), plus the LM's head size
    "first step": dict(positions=[0]),
    **{f"ring at {p}": dict(positions=[p]) for p in (5, 7, 8, 19)},
    **{f"3 splits at {p}": dict(positions=[p], splits=3) for p in (4, 30)},
    "streams": dict(positions=[0, 13, 6], splits=2),
    "position field": dict(positions=[3, 9], POSITION_INDEX=2),
    "large position": dict(positions=[100_003], head_dim=16),
    "24 h and beyond": dict(positions=[1_080_000, 2_160_000, 8_388_607], head_dim=16),
    **{f"workgroup {w}, team {t}": dict(positions=[11], head_dim=64, context=10, splits=2, WORKGROUP_SIZE=w,
                                        SCORE_TEAM=t) for w, t in [(1, 8), (48, 5), (16, 1), (128, 32)]},
    "LM heads, short ring": dict(positions=[50], heads=4, head_dim=128, context=20, splits=3),
    "f16 rings, streams, 3 splits": dict(positions=[5, 19], splits=3, KV_F16=True),
    "f16 rings, LM heads": dict(positions=[50], heads=4, head_dim=128, context=20, splits=3, KV_F16=True),
    "f16 rings, one invocation": dict(positions=[11], head_dim=64, context=10, splits=2, WORKGROUP_SIZE=1,
                                      KV_F16=True),
}


@pytest.mark.parametrize("case", ATTENTION_CASES)
def test_lm_attention(rng, case):
    test_attention.check(rng, trig_error=WGSL_TRIG_ERROR, **ATTENTION_CASES[case])


INT8_ATTENTION_CASES = {    # test_attention_int8.py's cases (see there), the LM's head size on a short ring
    "first step": dict(positions=[0]),
    "streams, 3 splits, position field": dict(positions=[4, 19, 30], splits=3, POSITION_INDEX=2),
    "two scale units": dict(positions=[21], heads=1, head_dim=256, context=12, splits=2, WORKGROUP_SIZE=64),
    "LM heads, short ring": dict(positions=[50], heads=4, head_dim=128, context=20, splits=3, WORKGROUP_SIZE=128),
}


@pytest.mark.parametrize("case", INT8_ATTENTION_CASES)
def test_lm_attention_over_int8_rings(rng, case):
    test_attention_int8.check(rng, trig_error=WGSL_TRIG_ERROR, **INT8_ATTENTION_CASES[case])


def test_attention_chunk_one_frame_of_several(rng):
    """test_mimi_kernels' case (ROWS / FIRST_ROW: Mimi plans of several frames a submission), given_qkv, with the
    trigonometric term."""
    test_mimi_kernels.check_one_frame_of_several(rng, "given_qkv", trig_error=WGSL_TRIG_ERROR)


@pytest.mark.parametrize("ring,steps,fmt,entry", [(7, 2, "q4", "main"), (8, 2, "f32", "main"), (9, 3, "q8", "main"),
                                                  (8, 2, "q4", "given_qkv")])
def test_attention_chunk_over_ring_wraps(rng, ring, steps, fmt, entry):
    """test_mimi_kernels' case (14 chunks of LayerNorm + QKV + RoPE + ring + attention, far past the wrap), with
    its 1e-5 float bound plus the trigonometric term. The GPU's ring carries over between chunks as natively; its
    keys differ from the reference's by the rotation error only (each slot is rewritten from fresh inputs).
    given_qkv: the entry point of plans of many streams, fed q, k, v computed by numpy."""
    heads, head_dim, context = 4, 16, 7
    dim = heads * head_dim
    freqs = rope_frequencies(head_dim, 10_000.0)
    main, scales, w = test_mimi_kernels.weight_streams(rng, (3 * dim, dim), fmt)
    norm_w = rng.uniform(0.5, 1.5, dim).astype(np.float32)
    norm_b = (0.1 * rng.standard_normal(dim)).astype(np.float32)
    kv = np.full((2, heads, ring, head_dim), test_mimi_kernels.GARBAGE, np.float32)
    ref_k, ref_v = kv[0].astype(np.float64), kv[1].astype(np.float64)
    constants = {"FORMAT": FORMATS[fmt], "HEADS": heads, "HEAD_DIM": head_dim, "STEPS": steps, "RING": ring,
                 "CONTEXT": context, "POSITION_INDEX": 1, "WORKGROUP_SIZE": 32}
    k_norm = k_max = v_max = 0.0               # over every key/value written so far (what a query can attend)
    for chunk in range(14):
        base = chunk * steps
        x = (0.5 + rng.standard_normal((steps, dim))).astype(np.float32)
        out, qkv = test_mimi_kernels.run_attention_chunk(entry, x, (main, scales, w), (norm_w, norm_b), base, freqs,
                                                         kv, constants)
        kv = out[6]
        expected = mr.attention_chunk(qkv, base, ref_k, ref_v, freqs, context)
        q, k, v = (qkv[:, i * dim:(i + 1) * dim].reshape(steps, heads, head_dim) for i in range(3))
        k_norm = max(k_norm, np.linalg.norm(k, axis=2).max())
        k_max = max(k_max, np.abs(k).max())
        v_max = max(v_max, np.abs(v).max())
        score_error = test_attention.trig_score_error(np.linalg.norm(q, axis=2).max(), k_norm, head_dim,
                                                      WGSL_TRIG_ERROR)
        assert_within(out[7].reshape(steps, dim), expected, 1e-5 + 2 * score_error * v_max, f"chunk {chunk}")
        key_bound = 1e-5 * np.abs(ref_k) + 1e-5 + 2 * WGSL_TRIG_ERROR * k_max
        assert_within(kv[0], ref_k, key_bound, f"keys after chunk {chunk}")
        assert_within(kv[1], ref_v, 1e-5 * np.abs(ref_v) + 1e-5, f"values after chunk {chunk}")
