"""Benchmark: a live stream's latency in the native host, as one JSON line: audio fed a frame (80 ms) at a time, as
a microphone's callback delivers it, through the Python API's live Transcriber (what `kyutai-stt mic` runs).

    python benchmarks/live_latency.py --package PKG [--frames 200]

Each feed() of one frame's audio returns that frame's step (and any word it completes): its time is the latency
from the frame's last sample to its events (resampling, the GPU's whole frame, the readback, the decoder).
"frames_late" counts the frames whose step came back in a later call than their audio (0: none held back).
Frames are fed back to back (faster than real time): on a GPU that keeps up the latency does not depend on the
pause between frames. Without --package, the tiny synthetic package is built first (a smoke test).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kyutai_stt.engine import device as gpu  # noqa: E402
from kyutai_stt.streaming.transcriber import Transcriber  # noqa: E402
from kyutai_stt.weights.convert import convert  # noqa: E402
from kyutai_stt.weights.synthetic import write_checkpoint  # noqa: E402

WARMUP_FRAMES = 10


def measure(package, frames: int) -> dict:
    live = Transcriber(package, silence_prefix=0.0, verify_hashes=False)
    size = live.package.mimi_config.frame_size
    rate = live.package.mimi_config.sample_rate
    rng = np.random.default_rng(0)
    times, late = [], 0
    for i in range(WARMUP_FRAMES + frames):
        pcm = (0.05 * rng.standard_normal(size)).astype(np.float32)
        start = time.perf_counter()
        events = live.feed(pcm, rate)
        elapsed = time.perf_counter() - start
        steps = [e.frame for e in events if e.type == "step"]
        if i >= WARMUP_FRAMES:
            times.append(elapsed * 1e3)
            late += steps != [i]
    t = np.array(times)
    return {"bench": "live_latency", "host": "native", "adapter": gpu.adapter_summary()["name"],
            "frames": frames, "mean_ms": round(float(t.mean()), 4), "p50_ms": round(float(np.median(t)), 4),
            "p95_ms": round(float(np.percentile(t, 95)), 4), "frames_late": late}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=Path, help="model package directory (default: the tiny synthetic one)")
    parser.add_argument("--frames", type=int, default=200, help="timed frames (after 10 of warm-up)")
    args = parser.parse_args()
    if args.frames < 1:
        print(f"live_latency: --frames {args.frames}: at least 1", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="kyutai-live-latency-") as tmp:
        package = args.package
        if package is None:
            write_checkpoint(Path(tmp) / "ckpt", "tiny", seed=0)
            package = Path(tmp) / "pkg"
            convert(str(Path(tmp) / "ckpt"), package, "q4")
        elif not (package / "manifest.json").is_file():
            print(f"live_latency: {package}: not a model package directory (make one with `kyutai-stt convert`)",
                  file=sys.stderr)
            return 2
        print(json.dumps(measure(package, args.frames)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
