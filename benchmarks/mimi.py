"""Benchmark: the Mimi encoder plan (1920 samples -> 32 codes) on the native engine, as one line: ms per frame.

    python benchmarks/mimi.py                         # synthetic seed-0 Mimi, q4 package policy, 40 frames
    python benchmarks/mimi.py --package PKG           # a converted package's Mimi tensors
    python benchmarks/mimi.py --profile               # also GPU time per dispatch group (slowest first)
    python benchmarks/mimi.py --streams 64            # a plan of 64 streams (times are per submission of all)
    python benchmarks/mimi.py --streams 40 --mimi-frames 8   # 8 frames of each a submission (files); times per frame
    python benchmarks/mimi.py --qkv-apart             # the attention's QKV as a product of its own (QKV_APART)
    python benchmarks/mimi.py --precision             # no GPU: each precision policy vs the official fp32 encode

The line gives the GPU time of one frame's compute pass (timestamp queries around the pass: the dispatches, their
barriers; median over the frames) and the wall time per frame with frames submitted back to back and read back
pipelined, as the engine runs live (this includes the host's per-frame recording of every dispatch). Frames are
random audio-like noise (the work does not depend on the values); the first frames (pipeline JIT, clocks) are not
timed. Without timestamp queries only the wall time is printed.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kyutai_stt.engine import device as gpu
from kyutai_stt.engine.runtime import Engine  # noqa: E402
from kyutai_stt.models import mimi as mimi_model  # noqa: E402
from kyutai_stt.models.mimi import build_mimi_plan, split_for_streams  # noqa: E402
from kyutai_stt.reference import mimi as mimi_reference  # noqa: E402
from kyutai_stt.weights.synthetic import MIMIS  # noqa: E402

# isort: split
import wgpu  # noqa: E402  (after kyutai_stt.engine.device, which sets the backend environment)


def load(package: str | None, quant: str, mimi: str = "real"):
    """(manifest-form tensors, read_stream) of a package's Mimi tensors, or of the synthetic seed-0 Mimi."""
    if package:
        from kyutai_stt.weights.package import open_package
        pkg = open_package(package, verify_hashes=False)
        tensors = {k: v for k, v in pkg.manifest["tensors"].items() if k.startswith("mimi.")}
        return tensors, pkg.read_stream, pkg.mimi_config, f"package {package} ({pkg.quant})"
    cfg = MIMIS[mimi]
    values = mimi_reference.official_encoder_tensors(0, cfg)
    tensors, streams, _ = mimi_reference.package_tensors(values, None if quant == "f32" else quant, cfg)
    return tensors, streams.__getitem__, cfg, f"synthetic seed 0 ({mimi} Mimi), {quant} policy"


def gpu_times(engine: Engine, frames: int) -> list[float]:
    """GPU milliseconds of each of `frames` frames (one timestamped pass each, submitted together)."""
    return [t[0] for t in engine.gpu_times(frames)]


def dispatch_floor(engine: Engine, label: str = "mimi.downsample", repeats: int = 88) -> float:
    """GPU microseconds per dispatch of one small dispatch repeated back to back in one pass (each writes what the
    next one overwrites, so the host inserts a barrier between them, as between a frame's dependent dispatches)."""
    device = engine.device
    index = [d.label for d in engine.plan.dispatches].index(label)
    pipeline, group, workgroups = engine.commands[index]
    queries = device.create_query_set(type="timestamp", count=2)
    encoder = device.create_command_encoder()
    compute = encoder.begin_compute_pass(timestamp_writes={
        "query_set": queries, "beginning_of_pass_write_index": 0, "end_of_pass_write_index": 1})
    for _ in range(repeats):
        compute.set_pipeline(pipeline)
        compute.set_bind_group(0, group)
        compute.dispatch_workgroups(*workgroups)
    compute.end()
    resolved = device.create_buffer(size=16, usage=wgpu.BufferUsage.QUERY_RESOLVE | wgpu.BufferUsage.COPY_SRC)
    encoder.resolve_query_set(queries, 0, 2, resolved, 0)
    device.queue.submit([encoder.finish()])
    begin, end = np.frombuffer(device.queue.read_buffer(resolved), np.uint64)
    return float(end - begin) / 1e3 / repeats


def _group(label: str) -> str:
    parts = label.split(".")
    if parts[1] == "layers":                 # mimi.layers.3.ffn_in -> transformer.ffn_in (8 layers summed)
        return "transformer." + parts[3]
    if parts[1] == "rvq":
        return "rvq (32 dispatches)"
    return ".".join(parts[1:])


def precision(frames: int) -> None:
    """The quantisation error of the Mimi encoder, per precision policy: the numpy reference (float64) on each
    policy's dequantised weights vs the official fp32 streaming encode of the fixture audio (the f32 line is the
    reference itself: its distance from moshi is float rounding)."""
    import wave
    root = Path(__file__).resolve().parents[1]
    with np.load(root / "tests" / "fixtures" / "reference_tiny_realmimi_seed0.npz") as z:
        official_latents, official_codes = z["mimi_latents"][:frames], z["mimi_codes"][:frames]
    with wave.open(str(root / "tests" / "fixtures" / "speech_en_fr_24k.wav")) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
    values = mimi_reference.official_encoder_tensors(0)
    for policy in ("f32", "q4", "q4-small"):             # f32 = the f16 package's Mimi; q4 = q8's (f16)
        tensors, _, dequantised = mimi_reference.package_tensors(values, None if policy == "f32" else policy)
        latents, codes, _ = mimi_reference.encode(dequantised, pcm, frames=frames)
        error = latents - official_latents
        relative = float(np.sqrt((error ** 2).sum() / (official_latents ** 2).sum()))
        equal = codes == official_codes
        megabytes = sum(s["nbytes"] for t in tensors.values() for s in t["streams"].values()) / 1e6
        print(f"mimi precision {policy:>8}: {megabytes:6.1f} MB, latent relative RMS error {relative:.2e}, "
              f"codes equal {equal.mean():6.1%} (semantic {equal[:, 0].mean():6.1%}, acoustic level 1 "
              f"{equal[:, 1].mean():6.1%}), {frames} frames")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", help="a package directory (default: synthetic seed-0 Mimi weights)")
    parser.add_argument("--quant", default="q4", choices=("q4", "q4-small", "q8", "f16", "f32"),
                        help="precision policy of the synthetic weights (default q4, the package default)")
    parser.add_argument("--frames", type=int, default=0, help="timed frames (default 40 on a GPU, 6 on a CPU)")
    parser.add_argument("--tuning", default="auto", choices=("auto", "gpu", "gpu-many", "cpu"),
                        help="the work split (auto: the device's, \"gpu-many\" past MANY_STREAMS streams, as plans "
                             "take it)")
    parser.add_argument("--mimi", default="real", choices=("real", "tiny"),
                        help="without --package: moshi's Mimi or the tests' tiny one (config.TINY_MIMI)")
    parser.add_argument("--profile", action="store_true", help="also print GPU time per dispatch group")
    parser.add_argument("--streams", type=int, default=1, help="independent streams per submission (docs/plan.md)")
    parser.add_argument("--mimi-frames", type=int, default=1,
                        help="frames of each stream per submission (files: docs/mimi.md); times are per frame, the "
                             "submission's divided by this")
    parser.add_argument("--qkv-apart", action="store_true",
                        help="the attention's q, k, v from a LayerNorm + QKV product of their own under every split "
                             "(models/mimi.py QKV_APART)")
    parser.add_argument("--precision", action="store_true",
                        help="instead: each precision policy's error vs the official encode (numpy, ~10 s each)")
    args = parser.parse_args()
    if args.precision:
        precision(args.frames or 150)
        return 0

    summary = gpu.adapter_summary()
    cpu = summary["adapter_type"].lower() == "cpu"
    per = args.mimi_frames
    tuning = args.tuning if args.tuning != "auto" else split_for_streams("cpu" if cpu else "gpu", args.streams * per)
    frames = args.frames or (6 if cpu else 40)          # submissions
    tensors, read, cfg, source = load(args.package, args.quant, args.mimi)
    if args.qkv_apart:
        mimi_model.QKV_APART = (*mimi_model.QKV_APART, tuning)
    plan = build_mimi_plan(tensors, cfg, tuning=tuning, streams=args.streams, frames=per)
    engine = Engine(plan, read)
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal((frames + 3, args.streams, per * 1920))).astype(np.float32)
    for f in range(3):                       # JIT compilation, first-frame paths, clocks
        engine.submit({"pcm": audio[f]})
    engine.drain()
    start = time.perf_counter()
    for f in range(frames):
        engine.submit({"pcm": audio[3 + f]})
    engine.drain()
    wall = (time.perf_counter() - start) / frames / per * 1e3
    timing = ""
    if "timestamp-query" in engine.device.features:
        times = sorted(t / per for t in gpu_times(engine, frames))
        timing = (f"GPU {statistics.median(times):.3f} ms per frame (min {times[0]:.3f}, mean "
                  f"{statistics.fmean(times):.3f}, p95 {times[int(0.95 * (len(times) - 1))]:.3f}), ")
    print(f"mimi: {timing}wall {wall:.3f} ms per frame pipelined (the mean); {len(plan.dispatches)} dispatches, "
          f"{frames * per} frames of {args.streams} stream{'s' * (args.streams > 1)}, {per} a submission, "
          f"tuning {tuning}, {source}, on "
          f"{summary['name']} ({summary['backend']})")
    if args.profile and "timestamp-query" in engine.device.features:
        for group, ms in engine.dispatch_profile(_group).items():
            print(f"  {group:<32} {ms / per:8.3f} ms per frame")
        if args.streams * per == 1:     # the downsample is a small dispatch for one stream's frame only
            floor = min(dispatch_floor(engine) for _ in range(3))
            print(f"  (one small dependent dispatch in a pass: {floor:.1f} us; x {len(plan.dispatches)} dispatches "
                  f"= {floor * len(plan.dispatches) / 1e3:.3f} ms per frame)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
