"""The f16 path of q4 matrices in the LM plan (quantize_input with OUTPUT_F16, then matvec_f16), against the
portable path on the same q4 package: its numeric effect, measured and bounded, on the official fixture's
teacher-forced inputs; and where the variant rules choose it.

The hosts take the f16 path on a GPU adapter with `shader-f16` and without dot4I8Packed (models/variants.py,
data/variants.json "gpu-f16"); here on lavapipe (which has shader-f16) the plans are built with explicit tunings,
so both paths run on the same device.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from lm_paths import compare, full_size_against_portable, kernels_by_label, teacher_forced
from test_lm_int8 import FIXTURE, INT8, PORTABLE, PORTABLE_CPU

from kyutai_stt.engine import device as gpu
from kyutai_stt.engine.plan import INT8_DOT
from kyutai_stt.models.lm import MatmulTuning, MatvecTuning, Tuning, build_lm_plan, tensors_of
from kyutai_stt.models.variants import tuning_for, tunings

F16 = Tuning(PORTABLE.matvec, 8, f16_matvec={"default": MatvecTuning(64, 16, 1)})
F16_CPU = dataclasses.replace(PORTABLE_CPU, f16_matvec={"default": MatvecTuning(32, 8, 1)})
# Logits: the f16 path rounds each matvec input to 11 significant bits and sums a block's 32 products in f16;
# through the tiny LM that moved the logits by at most 1.26e-3 of max |logit| on lavapipe (the int8 path: 1.85e-2);
# 5e-3 leaves room for GPUs that round each f16 operation (lavapipe may keep more bits), while a wrong pair order
# or scale moves them by tens of percent.
LOGIT_TOLERANCE = 5e-3         # of max |logit|, per step


def require_f16():
    assert "shader-f16" in gpu.get_device()[1].features, "this adapter lacks shader-f16 (lavapipe has it)"


def test_f16_plan_uses_the_f16_kernels_for_q4_matrices_only(tiny_packages):
    package = tiny_packages("q4-small")    # q4 and q8 matrices: the q8 ones keep the portable kernel
    tensors = tensors_of(package)
    plan = build_lm_plan(package.config, tensors, tunings()["gpu-f16"])
    kernels = kernels_by_label(plan)
    for name, t in tensors.items():
        if name in kernels and len(t.shape) == 2 and name != "vad_heads":
            assert kernels[name] == ("matvec_f16" if t.quant == "q4" else "matvec"), name
            assert (kernels.get(f"{name} input to f16") == "quantize_input") == (t.quant == "q4"), name
    assert "shader-f16" in plan.required_features and plan.required_language_features == []

    # Plans of many streams keep matmul.wgsl: no f16 rounding, no scratch for it.
    many = build_lm_plan(package.config, tensors, dataclasses.replace(
        tunings()["gpu-f16"], matmul=MatmulTuning(from_streams=2)), streams=2)
    assert not {"matvec_f16", "quantize_input"} & set(kernels_by_label(many).values())
    assert "lm.input_f16" not in many.buffers


def test_rules_choose_the_f16_path_without_dot4_and_with_shader_f16():
    assert tuning_for("DiscreteGPU", ("shader-f16", "subgroup"), 32, "", ()).rounded_inputs == "f16"
    assert tuning_for("DiscreteGPU", ("shader-f16",), 32, "", (INT8_DOT,)).rounded_inputs == "int8"
    assert tuning_for("DiscreteGPU", ("subgroup",), 32, "", ()).rounded_inputs is None
    assert tuning_for("CPU", ("shader-f16",), 8, "", ()).rounded_inputs is None       # lavapipe: portable


def test_a_tuning_with_both_paths_takes_the_int8_one():
    both = dataclasses.replace(INT8, f16_matvec=F16.f16_matvec)
    assert both.rounded_inputs == "int8" and both.for_f16_matvec("layers.0.ffn_in") is None


def test_f16_path_against_the_portable_path(tiny_packages, capsys):
    require_f16()
    package = tiny_packages("q4")
    arrays = np.load(FIXTURE.with_suffix(".npz"))
    inputs = arrays["lm_input_tokens"]                     # 40 steps = 5 x the tiny context: the ring wraps
    portable = teacher_forced(package, PORTABLE, inputs)
    f16_run = teacher_forced(package, F16, inputs)
    int8_run = teacher_forced(package, INT8, inputs)
    c = compare(portable, f16_run, LOGIT_TOLERANCE)
    c_int8 = compare(portable, int8_run, LOGIT_TOLERANCE)
    official = arrays["lm_tokens"][:len(inputs)]
    with capsys.disabled():
        print(f"\n[f16 path vs portable, tiny q4, {len(inputs)} steps] {c.line()}; the int8 path: max error "
              f"{c_int8.worst:.2e}, relative RMS {c_int8.relative_rms:.2e}; agreement with the official bf16 "
              f"tokens: f16 {np.mean(f16_run[1] == official):.0%}, portable {np.mean(portable[1] == official):.0%}")
    assert c.worst <= LOGIT_TOLERANCE
    assert c.decided_equal
    assert c.decided.sum() >= len(inputs) // 2, "too many near-ties for a meaningful token comparison"
    assert c.relative_rms < c_int8.relative_rms / 2, "the f16 path is meant to be closer than the int8 path"


@pytest.mark.slow
@pytest.mark.full_size
def test_full_size_f16_path_against_the_portable_path(request, capsys):
    """As test_lm_int8's full-size comparison (whose portable run it shares): the default q4 package of the cached
    full-size synthetic checkpoint, or FULL_Q4_PACKAGE; 4 steps with CPU launch shapes on a CPU adapter, 24 with
    GPU ones on a GPU."""
    require_f16()
    c = full_size_against_portable(request, capsys, "f16 path", (PORTABLE, F16), (PORTABLE_CPU, F16_CPU),
                                   LOGIT_TOLERANCE)
    assert c.worst <= LOGIT_TOLERANCE
    assert c.decided_equal


def test_attention_merge_writing_f16_changes_no_bit(tiny_packages):
    """attention.wgsl's combine_f16 instead of combine + quantize_input (f16) for attn_out's input (3 splits over the
    tiny ring of 8, head dim 32): one dispatch fewer per layer, the same logits and results bit for bit."""
    require_f16()
    package = tiny_packages("q4")
    fused = dataclasses.replace(F16, attention_slots_per_split=3)
    separate = dataclasses.replace(fused, attention_rounds_output=False)
    plans = [build_lm_plan(package.config, tensors_of(package), t) for t in (fused, separate)]
    labels = [[d.label for d in plan.dispatches] for plan in plans]
    layers = package.config.num_layers
    assert sum("combine to f16" in label for label in labels[0]) == layers
    assert len(labels[1]) - len(labels[0]) == layers and not any("combine to f16" in x for x in labels[1])
    inputs = np.load(FIXTURE.with_suffix(".npz"))["lm_input_tokens"][:20]      # the ring of 8 wraps twice
    runs = [teacher_forced(package, t, inputs) for t in (fused, separate)]
    np.testing.assert_array_equal(runs[0][0], runs[1][0], "logits")
    np.testing.assert_array_equal(runs[0][1], runs[1][1], "tokens")
