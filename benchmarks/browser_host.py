"""Benchmark: the browser host (web/runtime.js) on this machine's GPU, outside a browser, as one JSON line in the
format of `kyutai-stt bench` (with "host": "browser"):

    python benchmarks/browser_host.py --package PKG [--steps 400] [--position 750] [--whole-frame] [--streams S]
                                      [--kernels auto|no-int8|no-int8,no-f16] [--tokens] [--compare-native]
                                      [--profile] [--dawn-toggle TOGGLE ...] [--node NODE]

The same package is exported as a site (kyutai_stt/site/build.py: its runtime.js, kernels and model files), and
benchmarks/browser_host.mjs runs that runtime.js in Node on Dawn, the WebGPU implementation inside Chrome, through
the `webgpu` npm package (the root package.json's dev dependency, installed here with `npm ci` when missing).
The plans are the ones `kyutai-stt bench` runs (the LM alone or the whole frame, every variant); the browser's own
rules (plans.json "rules", web/runtime.js chooseVariant) pick one from what Dawn reports. Timing as `bench`: the
mean over the timed frames (the throughput), p50 and p95 of the interval between completed frames, a one-frame
latency on an idle GPU; plus the GPU time per frame from timestamp queries where the device has them.
--compare-native also runs the plan the browser's rules chose in the native engine (wgpu-py, the same WGSL through
Naga instead of Tint) on the frames the browser host took, from the same position, and adds how many of the timed
steps' text tokens the two hosts agree on ("native_tokens_equal"). --profile adds the GPU milliseconds per group of
dispatches ("profile_ms", as `kyutai-stt bench --profile` gives the native host's: each dispatch in a pass of its
own), to see which kernels the two shader compilers (Tint here, Naga natively) treat differently. --dawn-toggle
passes a Dawn toggle to the adapter, e.g. `enable-dawn-features=vulkan_enable_f16_on_nvidia`: Dawn withholds
`shader-f16` on NVIDIA's Vulkan driver (known driver bugs: crbug.com/42251215), so this is how the f16 path
(`--kernels no-int8`) runs there, in a test rig only, never in a browser one browses with.
Environment: Dawn finds the Vulkan driver as any Vulkan program does (VK_DRIVER_FILES; on a CPU-only machine
Chromium's SwiftShader driver works: docs/testing.md). Bad input exits 2 with the problem named.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from kyutai_stt.cli.bench import dispatch_group, matrix_kernel, weight_bytes_per_step
from kyutai_stt.engine import host
from kyutai_stt.engine.runtime import Engine, grouped_times
from kyutai_stt.models import variants
from kyutai_stt.models.lm import MAX_STREAMS, lm_plan
from kyutai_stt.models.stt import stt_plan
from kyutai_stt.site.build import export_site
from kyutai_stt.weights.package import open_package

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).with_suffix(".mjs")
WEBGPU = ROOT / "node_modules" / "webgpu"
LATENCY_SAMPLES = 20
# Timestamps as measured, not rounded to the coarse steps Dawn uses against timing attacks in pages.
DAWN_TOGGLES = ["disable-dawn-features=timestamp_quantization"]


def fail(message: str) -> None:
    print(f"browser_host: {message}", file=sys.stderr)
    raise SystemExit(2)


def ensure_webgpu() -> None:
    if (WEBGPU / "index.js").is_file():
        return
    npm = shutil.which("npm")
    if npm is None:
        fail(f"{WEBGPU} is missing and there is no npm to install it: install Node.js and npm, then run `npm ci` "
             "in the repository (or copy node_modules/webgpu from a machine that has it)")
    done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=ROOT, capture_output=True,
                          text=True)
    if done.returncode:
        fail(f"`npm ci` failed (the webgpu package is needed):\n{done.stderr.strip()}")


def plans_document(plans: dict) -> dict:
    """plans.json's form ({host, rules, variants}) for these plans. An LM-alone plan gets one stage, so that its
    GPU time is measured as the whole frame's stages are."""
    docs = {}
    for name, plan in plans.items():
        doc = json.loads(plan.to_json())
        doc["stages"] = doc.get("stages") or [{"name": "lm", "first": 0}]
        docs[name] = doc
    return {"host": host.document(), "rules": variants.rules(), "variants": docs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=Path, required=True, help="a model package directory (kyutai-stt convert)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--position", type=int, default=0, help="first frame index (750: a full KV ring)")
    parser.add_argument("--whole-frame", action="store_true", help="LM step + Mimi encoder, as `bench`")
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--kernels", choices=("auto", "no-int8", "no-int8,no-f16"), default="auto",
                        help="no-int8: choose the variant as a browser without dot4I8Packed would (the f16 path "
                             "where the GPU has shader-f16); no-int8,no-f16: as one without shader-f16 either")
    parser.add_argument("--tokens", action="store_true",
                        help="also print each timed step's text token (\"tokens\"), to compare with the native host")
    parser.add_argument("--compare-native", action="store_true",
                        help="also run the chosen plan in the native engine on the same frames and count the timed "
                             "steps whose text tokens the two hosts agree on (implies --tokens)")
    parser.add_argument("--profile", action="store_true",
                        help="also GPU milliseconds per dispatch group (\"profile_ms\", slowest first; needs the "
                             "timestamp-query feature)")
    parser.add_argument("--dawn-toggle", action="append", default=[],
                        help="a Dawn toggle for the adapter, e.g. enable-dawn-features=vulkan_enable_f16_on_nvidia "
                             "(repeatable)")
    parser.add_argument("--node", default=shutil.which("node"), help="the Node.js binary (default: node on PATH)")
    args = parser.parse_args()
    args.tokens = args.tokens or args.compare_native
    for toggle in args.dawn_toggle:
        if not re.fullmatch(r"(enable|disable)-dawn-features=[a-z0-9_]+(,[a-z0-9_]+)*", toggle):
            fail(f"--dawn-toggle {toggle!r}: expected enable-dawn-features=NAME[,NAME] or disable-dawn-features=...")
    if not args.node or not Path(args.node).is_file():
        fail("no Node.js binary: install Node.js (./dev.sh installs it) or pass --node PATH")
    if not 1 <= args.streams <= MAX_STREAMS:
        fail(f"--streams {args.streams}: from 1 to {MAX_STREAMS}")
    if args.steps < 2:
        fail(f"--steps {args.steps}: at least 2 (p50 and p95 are of intervals between frames)")
    if not (args.package / "manifest.json").is_file():
        fail(f"{args.package}: not a model package directory (make one with `kyutai-stt convert`)")
    ensure_webgpu()
    package = open_package(args.package, verify_hashes=False)
    cfg = package.config
    with tempfile.TemporaryDirectory(prefix="kyutai-browser-host-") as tmp:
        site = export_site(Path(tmp) / "site", args.package)
        build = stt_plan if args.whole_frame else lm_plan       # the plans `kyutai-stt bench` runs, every variant
        plans = {name: build(package, tuning, args.streams) for name, tuning in variants.tunings().items()}
        config = Path(tmp) / "config.json"
        config.write_text(json.dumps({
            "site": str(site), "plans": plans_document(plans), "steps": args.steps, "warmup": args.warmup,
            "position": args.position,
            "latency_samples": LATENCY_SAMPLES, "no_int8": args.kernels != "auto",
            "no_f16": "no-f16" in args.kernels, "tokens": args.tokens, "toggles": DAWN_TOGGLES + args.dawn_toggle,
            "inputs_out": str(Path(tmp) / "inputs.json") if args.compare_native else None, "profile": args.profile,
            # the work does not depend on the values: audio codes below the codebook size, or speech-level noise
            "inputs": {"pcm": {"f32_scale": 0.17}} if args.whole_frame else {"codes": {"u32_below": cfg.card}}}))
        done = subprocess.run([args.node, str(SCRIPT), str(config)], capture_output=True, text=True)
        if done.returncode:
            fail(f"the browser host failed:\n{done.stderr.strip()[-4000:]}")
        out = json.loads(done.stdout.strip().splitlines()[-1])
        plan = plans[out["variant"]]
        frames = json.loads((Path(tmp) / "inputs.json").read_text()) if args.compare_native else None
    extra = {}
    if args.profile:      # grouped as `kyutai-stt bench --profile` groups the native host's
        if out.get("gpu_mean_ms") is None:
            fail("--profile needs the timestamp-query feature, which this adapter lacks: leave it out")
        extra["profile_ms"] = {g: round(ms, 4) for g, ms in
                               grouped_times(plan, out["dispatch_ms"], dispatch_group).items()}
    if frames is not None:
        tokens = native_tokens(plan, package, frames, args)
        extra |= {"native_tokens_equal": sum(a == b for a, b in zip(tokens, out["tokens"])), "native_tokens": tokens}
    mean_ms, streams = out["mean_ms"], out["streams"]
    bytes_per_step = weight_bytes_per_step(package)
    print(json.dumps({
        "bench": "whole_frame" if args.whole_frame else "lm_step", "host": "browser", "adapter": out["adapter"],
        "variant": out["variant"], "package_quant": package.quant, "kernels": args.kernels,
        "int8_path": bool(variants.tunings()[out["variant"]].int8_matvec),
        "rounded_inputs": variants.tunings()[out["variant"]].rounded_inputs,
        "kv_f16": variants.tunings()[out["variant"]].kv_f16, "start_position": args.position,
        "p50_ms": round(out["p50_ms"], 4), "p95_ms": round(out["p95_ms"], 4), "mean_ms": round(mean_ms, 4),
        "gpu_mean_ms": None if out["gpu_mean_ms"] is None else round(out["gpu_mean_ms"], 4),
        "readback_depth": host.READBACK_DEPTH,
        "weight_MB_per_step": round(bytes_per_step / 1e6, 1),
        "effective_GBps": round(bytes_per_step / (out["p50_ms"] * 1e-3) / 1e9, 1),
        "dispatches_per_step": out["dispatches_per_step"], "streams": streams,
        "stream_frames_per_s": round(streams * 1e3 / mean_ms, 1), "realtime_streams": round(streams * 80 / mean_ms, 1),
        "frame_latency_p50_ms": round(out["frame_latency_p50_ms"], 4),
        "matrix_kernel": matrix_kernel(plan), **({"tokens": out["tokens"]} if args.tokens else {}), **extra}))
    return 0


def native_tokens(plan, package, frames: list[dict], args) -> list[int]:
    """Stream 0's text token of each timed step of the plan in the native engine, on the browser host's frames
    ({role: [stream][words]} each, taken in turn) and in its order: reset at the position, the warm-up, the steps."""
    engine = Engine(plan, package.read_stream)
    engine.reset(first_frame=args.position)
    inputs = [{role: np.array(words, np.float32 if role == "pcm" else np.uint32) for role, words in frame.items()}
              for frame in frames]
    for i in range(args.warmup):
        engine.submit(inputs[i % len(inputs)])
    engine.drain()
    results = []
    for i in range(args.steps):
        results += engine.submit(inputs[i % len(inputs)])
    results += engine.drain()
    return [int(r.outputs["results"][0]) for r in results]


if __name__ == "__main__":
    sys.exit(main())
