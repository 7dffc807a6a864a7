"""`kyutai-stt bench`: time the LM step, or the whole frame (LM + Mimi); prints one JSON line.

Steady state of the streaming loop: one submission per step, readback pipelined (as the engine always runs).
Reports the median and p95 of the interval between consecutive completed steps, and the effective bandwidth of
the weight bytes one step must read (every matrix once; the embedding rows are negligible). With --streams S, each
step computes S independent streams (docs/plan.md "Streams"): stream_frames_per_s = S frames per step, and
realtime_streams = how many 80 ms streams that throughput keeps up with (S x 80 ms / the mean step).
"""
from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from kyutai_stt.cli.common import add_kv_rings_argument
from kyutai_stt.engine import device as gpu
from kyutai_stt.engine.runtime import READBACK_DEPTH, Engine
from kyutai_stt.errors import UserError
from kyutai_stt.models.lm import MAX_STREAMS, lm_plan
from kyutai_stt.models.stt import stt_plan
from kyutai_stt.models.variants import tuning_for, with_kv_rings
from kyutai_stt.weights.convert import convert
from kyutai_stt.weights.package import open_package
from kyutai_stt.weights.synthetic import write_checkpoint

LATENCY_SAMPLES = 20          # single submissions timed after the throughput run
GPU_TIMED_FRAMES = 50         # frames timed by timestamp queries, back to back in one submission


def add_arguments(parser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--package", type=Path, help="a model package directory (kyutai-stt convert)")
    source.add_argument("--synthetic", choices=("tiny", "full", "tiny-2.6b", "2.6b"), default=None,
                        help="build a synthetic checkpoint of this size (kyutai-stt synth --size) and convert it "
                             "first (default: tiny)")
    parser.add_argument("--quant", default="q4", choices=("q4", "q8", "f16"), help="with --synthetic")
    parser.add_argument("--steps", type=int, default=200, help="timed steps (after warm-up)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--whole-frame", action="store_true",
                        help="time the whole frame (LM step + Mimi encoder on 1920 samples), one submission")
    parser.add_argument("--readback-depth", type=int, default=None,
                        help="frames in flight before a readback (default: the engine's); with --batch-readback, "
                             "all of them are read back at once")
    parser.add_argument("--batch-readback", action="store_true")
    parser.add_argument("--kernels", default="auto", type=kernel_switches,
                        help="auto: the fast paths this device has (as every command); or, comma-separated, what to "
                             "leave out (an A/B of each): no-int8 (the int8 path of q4 matrices, as on devices "
                             "without dot4I8Packed), no-f16 (the f16 path of q4 matrices, taken without the int8 "
                             "path, as on devices without shader-f16), no-f16-kv (f16 KV rings: f32 instead), "
                             "no-merge-rounding (the attention's merge writing attn_out's int8 or f16 input: a "
                             "quantize_input dispatch instead)")
    add_kv_rings_argument(parser)
    parser.add_argument("--streams", type=int, default=1,
                        help=f"independent streams per step (the plan of several streams; up to {MAX_STREAMS})")
    parser.add_argument("--profile", action="store_true",
                        help="also GPU milliseconds per dispatch group (\"profile_ms\", slowest first; needs the "
                             "timestamp-query feature)")
    parser.add_argument("--position", type=int, default=0,
                        help="start at this step index (e.g. 750: a full KV ring, the worst case)")


KERNEL_SWITCHES = ("no-int8", "no-f16", "no-f16-kv", "no-merge-rounding")


def kernel_switches(value: str) -> str:
    """--kernels: "auto" or a comma-separated set of KERNEL_SWITCHES."""
    unknown = set(value.split(",")) - set(KERNEL_SWITCHES) if value != "auto" else set()
    if unknown:
        raise argparse.ArgumentTypeError(f"{', '.join(sorted(unknown))}: not one of auto, {', '.join(KERNEL_SWITCHES)}")
    return value


def step_tensors(package) -> list:
    """The LM tensors read whole every step: the layers' and the text head's (not the embedding tables)."""
    return [package.tensor(n) for n in package.tensor_names() if n.startswith("layers.") or n == "text_head"]


def weight_bytes_per_step(package) -> int:
    return sum(s.nbytes for t in step_tensors(package) for s in t.streams.values())


def matrix_kernel(plan) -> str:
    """Which kernel the plan's matrices take, as its pipelines say."""
    kernels = {p.kernel for p in plan.pipelines}
    if "matmul_int8" in kernels:
        return "int8 matmul"
    if "matmul" in kernels:
        return "matmul"
    return "f16" if "matvec_f16" in kernels else "int8" if "quantize_input" in kernels else "matvec"


def dispatch_group(label: str) -> str:
    """A dispatch's profile group: its label with the numbers starred ("layers.*.attention")."""
    return re.sub(r"\d+", "*", label)


def gpu_summary(times: list[list[float]] | None) -> dict:
    """gpu_mean_ms, gpu_p50_ms, gpu_p95_ms of the timed frames' passes; None each without timestamp queries."""
    if times is None:
        return {"gpu_mean_ms": None, "gpu_p50_ms": None, "gpu_p95_ms": None}
    t = np.array(times)[:, 0]
    return {"gpu_mean_ms": round(float(t.mean()), 4), "gpu_p50_ms": round(float(np.median(t)), 4),
            "gpu_p95_ms": round(float(np.percentile(t, 95)), 4)}


def run(args) -> int:
    with tempfile.TemporaryDirectory(prefix="kyutai-stt-bench-") as tmp:
        path = args.package
        if path is None:
            write_checkpoint(Path(tmp) / "ckpt", args.synthetic or "tiny", seed=0)
            path = Path(tmp) / "pkg"
            convert(str(Path(tmp) / "ckpt"), path, args.quant)
        if not Path(path).exists():
            raise UserError(f"{path}: no such package directory (make one with `kyutai-stt convert`)")
        package = open_package(path, verify_hashes=False)
        adapter_type, features, subgroup_size, description, language_features = gpu.device_traits()
        off = set(args.kernels.split(","))
        if "no-int8" in off:    # the int8 path is chosen by this language feature alone
            language_features = ()
        if "no-f16" in off:     # the f16 path by this feature (the f16 KV rings need none)
            features = tuple(f for f in features if f != "shader-f16")
        tuning = tuning_for(adapter_type, features, subgroup_size, description, language_features)
        tuning = replace(tuning, kv_f16=tuning.kv_f16 and "no-f16-kv" not in off,
                         attention_rounds_output="no-merge-rounding" not in off)
        tuning = with_kv_rings(tuning, args.kv_rings, language_features)
        if not 1 <= args.streams <= MAX_STREAMS:
            raise UserError(f"--streams {args.streams}: from 1 to {MAX_STREAMS}")
        streams = args.streams
        plan = (stt_plan if args.whole_frame else lm_plan)(package, tuning, streams)
        engine = Engine(plan, package.read_stream, args.readback_depth or READBACK_DEPTH, args.batch_readback)
        if args.profile and "timestamp-query" not in engine.device.features:
            raise UserError("--profile needs the timestamp-query feature, which this device lacks: leave it out")
        engine.reset(first_frame=args.position)
        rng = np.random.default_rng(0)
        if args.whole_frame:   # noise at speech level: the work does not depend on the values
            inputs = [{"pcm": (0.1 * rng.standard_normal((streams, 1920))).astype(np.float32)} for _ in range(16)]
        else:
            inputs = [{"codes": rng.integers(0, package.config.card, (streams, package.config.n_q)).astype(np.uint32)}
                      for _ in range(16)]
        stamps = []
        for i in range(args.warmup):
            engine.submit(inputs[i % len(inputs)])
        engine.drain()
        start = time.perf_counter()
        for i in range(args.steps):
            results = engine.submit(inputs[i % len(inputs)])
            if results:       # one burst of results (one, or the whole ring with --batch-readback)
                stamps.append((time.perf_counter(), len(results)))
        engine.drain()
        mean_ms = (time.perf_counter() - start) * 1e3 / args.steps
        # A live stream's frame latency: one submission on an otherwise idle GPU, until its result is back.
        latencies = []
        for i in range(min(LATENCY_SAMPLES, args.steps)):
            begin = time.perf_counter()
            engine.submit(inputs[i % len(inputs)])
            engine.drain()
            latencies.append((time.perf_counter() - begin) * 1e3)
        # The GPU's own time for a frame's pass (timestamp queries), without the host's recording and waiting.
        gpu_ms = engine.gpu_times(GPU_TIMED_FRAMES) if "timestamp-query" in engine.device.features else None
        # GPU milliseconds per group of dispatches, their numbers starred ("layers.*.attention").
        profile = engine.dispatch_profile(dispatch_group) if args.profile else None
    # Per step: the time between bursts shared out by the steps of the later one.
    times, counts = np.array(stamps).T
    intervals = np.diff(times) * 1e3 / counts[1:]
    p50, p95 = float(np.median(intervals)), float(np.percentile(intervals, 95))
    bytes_per_step = weight_bytes_per_step(package)
    multiply_adds = streams * sum(int(np.prod(t.shape)) for t in step_tensors(package) if len(t.shape) == 2)
    per_step_ms = mean_ms if args.batch_readback else p50       # batched results arrive in bursts
    print(json.dumps({
        "bench": "whole_frame" if args.whole_frame else "lm_step", "host": "native",
        "adapter": gpu.adapter_summary()["name"],
        "package_quant": package.quant, "kernels": args.kernels, "int8_path": bool(tuning.int8_matvec),
        "rounded_inputs": tuning.rounded_inputs,
        "kv_f16": tuning.kv_f16, "kv_int8": tuning.kv_int8,
        "dim": package.config.dim, "layers": package.config.num_layers, "start_position": args.position,
        "p50_ms": round(p50, 4), "p95_ms": round(p95, 4), "mean_ms": round(mean_ms, 4),
        "readback_depth": args.readback_depth or READBACK_DEPTH, "batch_readback": args.batch_readback,
        "weight_MB_per_step": round(bytes_per_step / 1e6, 1),
        "effective_GBps": round(bytes_per_step / (per_step_ms * 1e-3) / 1e9, 1),
        "dispatches_per_step": len(plan.dispatches), "streams": streams,
        "plan_MiB": round(sum(b.size for b in plan.buffers) / 2**20, 3),     # GPU memory the plan's buffers take
        "stream_frames_per_s": round(streams * 1e3 / mean_ms, 1),
        "realtime_streams": round(streams * 80 / mean_ms, 1),
        "frame_latency_p50_ms": round(float(np.median(latencies)), 4),
        **gpu_summary(gpu_ms),
        "matrix_kernel": matrix_kernel(plan),
        "matrix_TFLOPS": round(2 * multiply_adds / (mean_ms * 1e-3) / 1e12, 2),
        **({"profile_ms": {g: round(ms, 4) for g, ms in profile.items()}} if profile else {})}))
    return 0
