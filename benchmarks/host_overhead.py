"""Where the native host's CPU time per frame goes (issue 15, item 3): one line per part of a frame's recording.

    python benchmarks/host_overhead.py [--package PKG] [--whole-frame] [--recordings 200]

The plan this device gets (the whole frame with --whole-frame, else the LM step) is recorded --recordings times into
a command encoder that is finished and dropped (nothing is submitted: CPU time only). Lines, each with mean, p50 and
p95 in microseconds per frame and per dispatch:
  pass only              begin_compute_pass + end + finish, no dispatch (the fixed cost)
  set_pipeline           + one set_pipeline per dispatch (wgpu-native's C function, called directly)
  + set_bind_group       + its bind group
  recorded (direct)      + dispatch_workgroups: what Engine.record does (engine/device.py dispatch_recorder)
  recorded (public)      the same through wgpu-py's public methods (their Python checks and allocations)
  submit + readback      Engine.submit of one frame and its readback, steady state (GPU time included)
Differences between lines are the cost of each call. Without --package a tiny synthetic q4 package is made.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kyutai_stt.engine import device as gpu  # noqa: E402
from kyutai_stt.engine.runtime import Engine  # noqa: E402
from kyutai_stt.models.lm import lm_plan  # noqa: E402
from kyutai_stt.models.stt import stt_plan  # noqa: E402
from kyutai_stt.models.variants import tuning_for  # noqa: E402
from kyutai_stt.weights.package import open_package  # noqa: E402


def timed(function, repeats: int) -> np.ndarray:
    """Seconds per call, `repeats` calls after 5 unmeasured ones."""
    for _ in range(5):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return np.array(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--package", type=Path)
    parser.add_argument("--whole-frame", action="store_true")
    parser.add_argument("--recordings", type=int, default=200)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kyutai-stt-overhead-") as tmp:
        path = args.package
        if path is None:
            from kyutai_stt.weights.convert import convert
            from kyutai_stt.weights.synthetic import write_checkpoint
            write_checkpoint(Path(tmp) / "ckpt", "tiny", seed=0)
            convert(str(Path(tmp) / "ckpt"), Path(tmp) / "pkg", "q4")
            path = Path(tmp) / "pkg"
        package = open_package(path, verify_hashes=False)
        tuning = tuning_for(*gpu.device_traits())
        plan = stt_plan(package, tuning) if args.whole_frame else lm_plan(package, tuning)
        engine = Engine(plan, package.read_stream)
    device, commands = engine.device, engine.commands
    count = len(commands)
    from wgpu.backends.wgpu_native._ffi import ffi, lib  # the calls dispatch_recorder makes, one kind at a time
    handles = [(p._internal, g._internal, *w) for p, g, w in commands]
    record_direct = gpu.dispatch_recorder(commands)

    def frame(body):
        def run():
            encoder = device.create_command_encoder()
            compute = encoder.begin_compute_pass()
            body(compute)
            compute.end()
            encoder.finish()
        return run

    def pipelines_only(compute):
        for pipeline, _, *_ in handles:
            lib.wgpuComputePassEncoderSetPipeline(compute._internal, pipeline)

    def pipelines_and_groups(compute):
        for pipeline, group, *_ in handles:
            lib.wgpuComputePassEncoderSetPipeline(compute._internal, pipeline)
            lib.wgpuComputePassEncoderSetBindGroup(compute._internal, 0, group, 0, ffi.NULL)

    def public(compute):
        for pipeline, group, workgroups in commands:
            compute.set_pipeline(pipeline)
            compute.set_bind_group(0, group)
            compute.dispatch_workgroups(*workgroups)

    inputs = {role: np.zeros(plan.buffer(name).size // 4, np.uint32) for role, name in plan.inputs.items()
              if plan.buffer(name).kind == "input"}
    inputs = inputs or {"codes": np.zeros(package.config.n_q, np.uint32)}

    def submit():
        engine.submit(inputs)

    print(f"{gpu.adapter_summary()['name']}: {'whole frame' if args.whole_frame else 'LM step'}, {count} dispatches, "
          f"variant with int8 path: {bool(tuning.int8_matvec)}; {args.recordings} recordings", flush=True)
    parts = [("pass only", frame(lambda c: None)), ("set_pipeline", frame(pipelines_only)),
             ("+ set_bind_group", frame(pipelines_and_groups)), ("recorded (direct)", frame(record_direct)),
             ("recorded (public)", frame(public)), ("submit + readback", submit)]
    for name, function in parts:
        seconds = timed(function, args.recordings) * 1e6
        print(f"{name:<20} mean {seconds.mean():8.1f} us  p50 {np.median(seconds):8.1f}  p95 "
              f"{np.percentile(seconds, 95):8.1f} per frame; {seconds.mean() / count:6.2f} us per dispatch", flush=True)
    engine.drain()
    return 0


if __name__ == "__main__":
    sys.exit(main())
