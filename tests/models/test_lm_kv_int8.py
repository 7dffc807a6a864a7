"""The LM's KV rings in int8 (Tuning.kv_int8: attention_int8.wgsl, a scale per 32 values, the query rounded to int8
too) against f32 and f16 rings on the same q4 package: the numeric effect, on the official fixture's teacher-forced
inputs and at full size (the kernel itself: tests/kernels/test_attention_int8.py)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from lm_paths import compare, kernels_by_label, open_full_q4_package, random_inputs, teacher_forced

from kyutai_stt.engine import device as gpu
from kyutai_stt.models.lm import MATVEC_MAX_STREAMS, MatvecTuning, Tuning, build_lm_plan, tensors_of
from kyutai_stt.models.variants import tunings

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "reference_tiny_seed0"
PORTABLE = Tuning({"default": MatvecTuning(64, 16, 2)}, 8)
KV_INT8 = dataclasses.replace(PORTABLE, kv_int8=True)
# Logits of the tiny LM, per step, of max |logit|: int8 keeps ~8 bits of each key, value and query element (a
# step of 1/127 of its block's largest). A wrong scale or unit moves them by tens of percent.
LOGIT_TOLERANCE = 1e-2
WRAPPED = 760                  # a step index past the full-size ring's 750 slots


def test_int8_rings_take_their_kernel_and_144_bytes_a_row_of_128(tiny_packages):
    package = tiny_packages("q4")
    cfg, tensors = package.config, tensors_of(package)
    plan = build_lm_plan(cfg, tensors, KV_INT8)
    assert {k for label, k in kernels_by_label(plan).items() if label.endswith(".attention")} == {"attention_int8"}
    ring = plan.buffer(f"lm.k_cache.{cfg.num_layers - 1}")
    assert ring.size == cfg.num_heads * cfg.context * (cfg.head_dim + 16 * -(-cfg.head_dim // 128))
    # A head size that is not a multiple of 32 keeps kv_f16's rings (blocks of 32 never span two heads).
    small = dataclasses.replace(cfg, num_heads=cfg.dim // 16)
    plan = build_lm_plan(small, tensors, dataclasses.replace(KV_INT8, kv_f16=True))
    assert "attention_int8" not in {p.kernel for p in plan.pipelines}
    assert plan.buffer("lm.k_cache.0").size == 2 * small.num_heads * small.context * 16


def test_plans_of_many_streams_read_int8_rings_in_their_own_ranges(tiny_packages):
    package = tiny_packages("q4")
    cfg, tensors = package.config, tensors_of(package)
    many = MATVEC_MAX_STREAMS + 1
    ranges = dataclasses.replace(PORTABLE, kv_f16=True, attention_slots_per_split_many=2,
                                 attention_slots_per_split_many_int8=4)

    def splits(tuning, streams):
        plan = build_lm_plan(cfg, tensors, tuning, streams)
        return {p.constants["SPLITS"] for p in plan.pipelines if p.kernel.startswith("attention")}
    assert cfg.context == 8
    assert splits(ranges, many) == {4}                                             # f16 rings: ranges of 2
    assert splits(dataclasses.replace(ranges, kv_int8=True), many) == {2}         # int8 rings: ranges of 4
    assert splits(dataclasses.replace(ranges, kv_int8=True), 1) == {1}            # few streams: ranges of 8
    no_int8_ranges = dataclasses.replace(ranges, kv_int8=True, attention_slots_per_split_many_int8=None)
    assert splits(no_int8_ranges, many) == {4}
    # Every GPU variant names its int8 rings' ranges (benchmarks/attention_splits.py --kv-rings int8 measured them).
    assert all(t.attention_slots_per_split_many_int8 for name, t in tunings().items() if name != "cpu")


def test_int8_rings_against_f32_rings(tiny_packages, capsys):
    package = tiny_packages("q4")
    inputs = np.load(FIXTURE.with_suffix(".npz"))["lm_input_tokens"]   # 40 steps = 5 x the tiny context: wraps
    c = compare(teacher_forced(package, PORTABLE, inputs), teacher_forced(package, KV_INT8, inputs), LOGIT_TOLERANCE)
    with capsys.disabled():
        print(f"\n[int8 KV rings vs f32, tiny q4, {len(inputs)} steps] {c.line()}")
    assert 0 < c.worst <= LOGIT_TOLERANCE, "int8 rings changed nothing: were they used?"
    assert c.decided_equal
    assert c.decided.sum() >= len(inputs) // 2, "too many near-ties for a meaningful token comparison"


@pytest.mark.huge
@pytest.mark.full_size
def test_full_size_int8_rings_against_the_portable_path(request, capsys):
    """At full size, the int8 path with int8 rings against the portable path (f32 rings), from step WRAPPED as
    test_lm_kv_f16's full-size test: every step attends to the whole 750-slot ring. On a lent GPU (`-m huge`)."""
    package = open_full_q4_package(request)
    adapter = gpu.adapter_summary()
    if adapter["adapter_type"].lower() == "cpu":
        pytest.skip("full size on a CPU adapter takes minutes a step: run it on a lent GPU (-m huge)")
    fast, steps = dataclasses.replace(tunings()["gpu-int8"], kv_int8=True), 40
    inputs = random_inputs(package.config, steps)
    c = compare(teacher_forced(package, PORTABLE, inputs, WRAPPED), teacher_forced(package, fast, inputs, WRAPPED),
                2e-2)
    with capsys.disabled():
        print(f"\n[int8 rings + int8 path vs portable, full size q4, {steps} steps, {adapter['name']}] {c.line()}")
    assert c.worst <= 2e-2
    assert c.decided_equal
