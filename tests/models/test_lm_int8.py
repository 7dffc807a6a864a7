"""The int8 path of q4 matrices in the LM plan (quantize_input + matvec_int8), against the portable path on the same
q4 package: its numeric effect, measured and bounded, on the official fixture's teacher-forced inputs.

The native host picks the int8 path where WGSL has dot4I8Packed on a GPU adapter (models/variants.py,
data/variants.json); here on lavapipe the plans are built with explicit tunings, so both paths run on the same
device: the portable one (matvec.wgsl, the parity path of tests/models/test_lm_parity.py) and the int8 one, with
and without subgroups.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from lm_paths import compare, full_size_against_portable, kernels_by_label, teacher_forced

from kyutai_stt.engine import device as gpu
from kyutai_stt.engine.plan import INT8_DOT
from kyutai_stt.models.lm import MatmulTuning, MatvecTuning, Tuning, build_lm_plan, tensors_of
from kyutai_stt.models.variants import tuning_for, tunings

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "reference_tiny_seed0"
PORTABLE = Tuning({"default": MatvecTuning(64, 16, 2)}, 8)
INT8 = Tuning(PORTABLE.matvec, 8, int8_matvec={"default": MatvecTuning(64, 16, 1)})
# Teams of 4: every adapter's subgroups are at least that wide (lavapipe 8, SwiftShader 4).
INT8_SUBGROUP = Tuning(PORTABLE.matvec, 8, int8_matvec={"default": MatvecTuning(64, 4, 2, subgroup=True)})
# The CPU variant's launch shapes (data/variants.json "cpu"): on lavapipe ~8x faster at full size than the above.
PORTABLE_CPU = tunings()["cpu"]
INT8_CPU = dataclasses.replace(PORTABLE_CPU, int8_matvec={"default": MatvecTuning(32, 8, 1)})
# Logits: the int8 path rounds each matvec input by up to 1/254 of its block's largest value; through the tiny LM
# that moved the logits by at most 1.85e-2 of max |logit| (relative RMS 6.4e-3) on lavapipe; 2e-2 leaves room for
# other adapters' summation orders, while a wrong scale, sum or input order moves them by tens of percent.
LOGIT_TOLERANCE = 2e-2         # of max |logit|, per step


@pytest.fixture(scope="module")
def arrays():
    return dict(np.load(FIXTURE.with_suffix(".npz")))


def test_int8_plan_uses_the_int8_kernels_for_q4_matrices_only(tiny_packages):
    package = tiny_packages("q4-small")    # q4 and q8 matrices: the q8 ones keep the portable kernel
    plan = build_lm_plan(package.config, tensors_of(package), tunings()["gpu-int8"])
    kernels = kernels_by_label(plan)
    tensors = tensors_of(package)
    for name, t in tensors.items():
        if name in kernels and len(t.shape) == 2 and name != "vad_heads":
            assert kernels[name] == ("matvec_int8" if t.quant == "q4" else "matvec"), name
            assert (kernels.get(f"{name} input to int8") == "quantize_input") == (t.quant == "q4"), name
    assert plan.required_language_features == [INT8_DOT]
    assert build_lm_plan(package.config, tensors, PORTABLE).required_language_features == []


def test_tuning_follows_the_device():
    assert tuning_for("DiscreteGPU", ("subgroup",), 32, "", (INT8_DOT,)).int8_matvec["attn_qkv"].subgroup
    assert not tuning_for("DiscreteGPU", ("subgroup",), 16, "", (INT8_DOT,)).int8_matvec["attn_qkv"].subgroup
    assert tuning_for("DiscreteGPU", ("subgroup",), 32, "", ()).int8_matvec == {}
    assert tuning_for("CPU", ("subgroup",), 32, "", (INT8_DOT,)).int8_matvec == {}     # lavapipe: portable


# matmul_int8.wgsl, the int8 path of plans of many streams, forced for one stream.
INT8_MATMUL = dataclasses.replace(INT8, matmul=MatmulTuning(row_threads=8, stream_threads=4, from_streams=1))


@pytest.mark.parametrize("int8", [INT8, INT8_SUBGROUP, INT8_MATMUL], ids=["int8", "int8-subgroup", "int8-matmul"])
def test_int8_path_against_the_portable_path(tiny_packages, arrays, int8, capsys):
    assert INT8_DOT in gpu.wgsl_language_features(), "Naga accepts dot4I8Packed on every adapter"
    package = tiny_packages("q4")
    inputs = arrays["lm_input_tokens"]                     # 40 steps = 5 x the tiny context: the ring wraps
    portable = teacher_forced(package, PORTABLE, inputs)
    int8_run = teacher_forced(package, int8, inputs)
    c = compare(portable, int8_run, LOGIT_TOLERANCE)
    official = arrays["lm_tokens"][:len(inputs)]
    with capsys.disabled():
        print(f"\n[int8 path vs portable, tiny q4, {len(inputs)} steps] {c.line()}; agreement with the official bf16 "
              f"tokens: int8 {np.mean(int8_run[1] == official):.0%}, portable {np.mean(portable[1] == official):.0%}")
    assert c.worst <= LOGIT_TOLERANCE
    assert c.decided_equal
    assert c.decided.sum() >= len(inputs) // 2, "too many near-ties for a meaningful token comparison"


@pytest.mark.slow
@pytest.mark.full_size
def test_full_size_int8_path_against_the_portable_path(request, capsys):
    """The same comparison at full size (2048 wide, 16 layers) over random codes and text tokens (the comparison
    needs no official run), on the default q4 package of the cached full-size synthetic checkpoint (the one
    tests/test_convert.py checks). FULL_Q4_PACKAGE names an existing full-size q4 package instead (on a lent GPU:
    benchmarks/gpu_run.sh makes one). On a CPU adapter (lavapipe: ~10 s a step for both paths) with the CPU launch
    shapes and 4 steps; on a GPU with the GPU ones and 24 steps."""
    c = full_size_against_portable(request, capsys, "int8 path", (PORTABLE, INT8), (PORTABLE_CPU, INT8_CPU),
                                   LOGIT_TOLERANCE)
    assert c.worst <= LOGIT_TOLERANCE
    assert c.decided_equal


def test_attention_merge_writing_int8_changes_no_bit(tiny_packages):
    """attention.wgsl's combine_int8 instead of combine + quantize_input for attn_out's input (3 splits over the tiny
    ring of 8, head dim 32): one dispatch fewer per layer, the same logits and results bit for bit."""
    package = tiny_packages("q4")
    fused = dataclasses.replace(INT8, attention_slots_per_split=3)
    separate = dataclasses.replace(fused, attention_rounds_output=False)
    plans = [build_lm_plan(package.config, tensors_of(package), t) for t in (fused, separate)]
    labels = [[d.label for d in plan.dispatches] for plan in plans]
    layers = package.config.num_layers
    assert sum("combine to int8" in label for label in labels[0]) == layers
    assert len(labels[1]) - len(labels[0]) == layers and not any("combine to int8" in x for x in labels[1])
    inputs = np.load(FIXTURE.with_suffix(".npz"))["lm_input_tokens"][:20]      # the ring of 8 wraps twice
    runs = [teacher_forced(package, t, inputs) for t in (fused, separate)]
    np.testing.assert_array_equal(runs[0][0], runs[1][0], "logits")
    np.testing.assert_array_equal(runs[0][1], runs[1][1], "tokens")
