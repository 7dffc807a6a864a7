"""The LM's KV rings in f16 (Tuning.kv_f16: attention.wgsl KV_F16, the GPU variants' choice) against f32 rings on
the same q4 package: half the ring's bytes, and the numeric effect of rounding every key and value to f16,
measured on the official fixture's teacher-forced inputs (the kernel itself: tests/kernels/test_attention.py)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from lm_paths import compare, open_full_q4_package, random_inputs, teacher_forced

from kyutai_stt.engine import device as gpu
from kyutai_stt.models.lm import MatvecTuning, Tuning, build_lm_plan, tensors_of
from kyutai_stt.models.variants import tunings

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "reference_tiny_seed0"
PORTABLE = Tuning({"default": MatvecTuning(64, 16, 2)}, 8)
KV_F16 = dataclasses.replace(PORTABLE, kv_f16=True)
# Logits: f16 keeps 11 bits of each key and value (bf16, in which the official GPU runs keep their cache, 8);
# through the tiny LM that moved the logits by at most 1.0e-4 of max |logit| (relative RMS 3.8e-5) on lavapipe. A
# wrong unit order or a lost half moves them by tens of percent.
LOGIT_TOLERANCE = 1e-3         # of max |logit|, per step
WRAPPED = 760                  # a step index past the full-size ring's 750 slots


def test_gpu_variants_keep_f16_rings_and_the_cpu_variant_f32(tiny_packages):
    package = tiny_packages("q4")
    cfg, tensors = package.config, tensors_of(package)
    for name, tuning in tunings().items():
        assert tuning.kv_f16 == (name != "cpu"), name
    f32, f16 = (build_lm_plan(cfg, tensors, t) for t in (PORTABLE, KV_F16))
    ring = f"lm.k_cache.{cfg.num_layers - 1}"
    assert f16.buffer(ring).size * 2 == f32.buffer(ring).size == 4 * cfg.num_heads * cfg.context * cfg.head_dim


def test_f16_rings_against_f32_rings(tiny_packages, capsys):
    package = tiny_packages("q4")
    inputs = np.load(FIXTURE.with_suffix(".npz"))["lm_input_tokens"]   # 40 steps = 5 x the tiny context: wraps
    c = compare(teacher_forced(package, PORTABLE, inputs), teacher_forced(package, KV_F16, inputs), LOGIT_TOLERANCE)
    with capsys.disabled():
        print(f"\n[f16 KV rings vs f32, tiny q4, {len(inputs)} steps] {c.line()}")
    assert 0 < c.worst <= LOGIT_TOLERANCE, "f16 rings changed nothing: were they used?"
    assert c.decided_equal
    assert c.decided.sum() >= len(inputs) // 2, "too many near-ties for a meaningful token comparison"


@pytest.mark.huge
@pytest.mark.full_size
def test_full_size_gpu_variant_against_the_portable_path(request, capsys):
    """At full size, the GPU's variant (f16 rings, with the int8 path where the device has dot4I8Packed: both of
    its numeric effects together) against the portable path. Both start at step WRAPPED with empty rings, so every
    step attends to the whole 750-slot ring (zeros where nothing was written), as past the wrap. On a lent GPU
    (FULL_Q4_PACKAGE, as test_lm_int8: `-m huge`); on a CPU adapter it is the CPU variant plus f16 rings over 6
    steps, ~2 min on lavapipe, more than the suite's budget has left (the tiny comparison above runs in it)."""
    package = open_full_q4_package(request)
    adapter = gpu.adapter_summary()
    if adapter["adapter_type"].lower() == "cpu":
        portable, fast, steps = tunings()["cpu"], dataclasses.replace(tunings()["cpu"], kv_f16=True), 6
    else:
        portable, fast, steps = PORTABLE, tunings()["gpu-int8"], 40
    inputs = random_inputs(package.config, steps)
    c = compare(teacher_forced(package, portable, inputs, WRAPPED), teacher_forced(package, fast, inputs, WRAPPED),
                2e-2)
    with capsys.disabled():
        print(f"\n[{'f16 rings' if fast.kv_f16 and not fast.int8_matvec else 'f16 rings + int8 path'} vs portable, "
              f"full size q4, {steps} steps, {adapter['name']}] {c.line()}")
    assert c.worst <= 2e-2
    assert c.decided_equal
