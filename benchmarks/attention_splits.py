"""The LM step against the attention's slot ranges: for each stream count and slots per range
(Tuning.attention_slots_per_split, and its _many for plans of many streams), the step's mean wall time, its GPU
time (one pass, timestamp queries) and the attention's GPU time (its dispatches and their merges, each timed in a
pass of its own), at a full ring (position 750). One line per setting.

    python benchmarks/attention_splits.py --package PKG [--streams 1,64,256] [--slots 48,94,188,375,750]
        [--kv-rings auto|int8]
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kyutai_stt.engine import device as gpu  # noqa: E402
from kyutai_stt.engine.runtime import Engine  # noqa: E402
from kyutai_stt.models.lm import lm_plan  # noqa: E402
from kyutai_stt.models.variants import KV_RINGS, tuning_for, with_kv_rings  # noqa: E402
from kyutai_stt.weights.package import open_package  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", required=True, type=Path, help="a full-size package (kyutai-stt convert)")
    parser.add_argument("--streams", default="64,256")
    parser.add_argument("--slots", default="48,94,188,375,750", help="slots per range (750: one range)")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per setting")
    parser.add_argument("--kv-rings", default="auto", choices=KV_RINGS, help="the KV rings' format (as transcribe's)")
    parser.add_argument("--warmup", type=int, default=10, help="steps before the timed ones (compilation, clocks)")
    args = parser.parse_args()
    package = open_package(args.package, verify_hashes=False)
    traits = gpu.device_traits()
    base = with_kv_rings(tuning_for(*traits), args.kv_rings, traits[-1])
    rng = np.random.default_rng(0)
    for streams in (int(s) for s in args.streams.split(",")):
        inputs = [{"codes": rng.integers(0, package.config.card, (streams, package.config.n_q)).astype(np.uint32)}
                  for _ in range(8)]
        for slots in (int(s) for s in args.slots.split(",")):
            plan = lm_plan(package, replace(base, attention_slots_per_split=slots,
                                            attention_slots_per_split_many=slots,
                                            attention_slots_per_split_many_int8=slots), streams)
            engine = Engine(plan, package.read_stream)
            engine.reset(first_frame=750)
            for i in range(args.warmup):
                engine.submit(inputs[i % 8])
            engine.drain()
            start = time.perf_counter()
            for i in range(args.steps):
                engine.submit(inputs[i % 8])
            engine.drain()
            mean = (time.perf_counter() - start) / args.steps * 1e3
            step_gpu = float(np.mean(engine.gpu_times(args.steps)))
            attention = sum(ms for d, ms in zip(plan.dispatches, engine.dispatch_times()) if "attention" in d.label)
            print(f"streams {streams:3} slots per range {slots:4} ({plan_ranges(plan)} ranges) "
                  f"rings {plan_rings(plan)}: step mean {mean:7.3f} ms, GPU {step_gpu:7.3f} ms, "
                  f"attention (with its merge) {attention:7.3f} ms, {len(plan.dispatches)} dispatches", flush=True)
    return 0


def plan_ranges(plan) -> int:
    """The ranges the plan's attention reads the ring in (its SPLITS constant)."""
    return max(p.constants["SPLITS"] for p in plan.pipelines if p.kernel.startswith("attention"))


def plan_rings(plan) -> str:
    """The KV rings' format the plan holds, read from its attention pipelines."""
    attention = [p for p in plan.pipelines if p.kernel.startswith("attention")]
    if any(p.kernel == "attention_int8" for p in attention):
        return "int8"
    return "f16" if any(p.constants.get("KV_F16") for p in attention) else "f32"


if __name__ == "__main__":
    sys.exit(main())
