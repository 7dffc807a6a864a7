"""Benchmark: the host's own work in BatchTranscriber (reading files, framing, decoding results), the GPU engine
replaced by one that answers at once, as one JSON line:

    {"bench": "batch_host", "files": N, "streams": S, "frames": ..., "us_per_stream_frame": mean,
     "frame_ms": {"mean", "p50", "p95"}, "wall_s": ...}

    python benchmarks/batch_host.py [--files 128] [--seconds 7.42] [--streams 64]

What this measures is everything `kyutai-stt eval --batch S` does on the CPU per frame of S streams: it must stay
below the GPU's frame time (BENCHMARKS.md) or the GPU waits. The files are benchmarks/transcribe.py's speech-like
signal (16 kHz: the resampler runs), the model the tiny synthetic package (its plan is built, never run); the
stand-in engine's results are mostly padding with a word piece now and then, as a real transcript's are. frame_ms
is the host time between two of the LM's submissions (BatchTranscriber's second pass; the first, Mimi's, is in
wall_s).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kyutai_stt.engine.runtime import FrameResult  # noqa: E402
from kyutai_stt.streaming import batch  # noqa: E402

_spec = importlib.util.spec_from_file_location("transcribe_benchmark", Path(__file__).with_name("transcribe.py"))
_transcribe = sys.modules["transcribe_benchmark"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_transcribe)

TOKENS = [3] * 6 + [0] * 2 + [17, 25]     # padding mostly, word boundaries, two pieces


class InstantEngine:
    """Engine's interface as BatchTranscriber uses it (the LM's and Mimi's); results one submission late, as the
    real one's: word pieces and padding for the LM's "results", random codes for Mimi's."""

    def __init__(self, plan, *_args, **_kwargs):
        self.plan, self.frame, self.pending, self.submitted_at = plan, 0, [], []
        self.words = {role: plan.buffer(name).size // 4 for role, name in plan.outputs.items()}
        self.rng = np.random.default_rng(0)

    def reset(self, first_frame: int = 0) -> None:
        self.frame, self.pending = first_frame, []

    def reset_stream(self, stream: int, first_frame: int = 0) -> None:
        pass

    def write_input(self, role, value, stream=None) -> None:
        pass

    def submit(self, inputs, active=None) -> list[FrameResult]:
        self.submitted_at.append(time.perf_counter())
        outputs = {role: (self.rng.choice(TOKENS, n) if role == "results" else self.rng.integers(0, 2048, n))
                   .astype(np.uint32) for role, n in self.words.items()}
        self.pending.append(FrameResult(self.frame, outputs, (), tuple(active or ())))
        self.frame += 1
        ready, self.pending = self.pending[:-1], self.pending[-1:]
        return ready

    def drain(self) -> list[FrameResult]:
        ready, self.pending = self.pending, []
        return ready


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=7.42, help="length of each file (test-clean's mean)")
    parser.add_argument("--streams", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kyutai-batch-host-") as tmp:
        from kyutai_stt.weights.convert import convert
        from kyutai_stt.weights.synthetic import write_checkpoint
        write_checkpoint(Path(tmp) / "ckpt", "tiny", seed=0, mimi="tiny")
        convert(str(Path(tmp) / "ckpt"), Path(tmp) / "pkg", "q4")
        files = [_transcribe.write_speechlike(Path(tmp) / f"u{i:05d}.wav", args.seconds, seed=i)
                 for i in range(args.files)]
        batch.Engine = InstantEngine
        transcriber = batch.BatchTranscriber(Path(tmp) / "pkg", args.streams)
        started = time.perf_counter()
        transcriber.transcribe(files)
        wall = time.perf_counter() - started
    engine = transcriber.engine            # the LM's (a frame each submission); Mimi's work is in wall_s
    frame_ms = 1e3 * np.diff(engine.submitted_at)
    print(json.dumps({"bench": "batch_host", "files": args.files, "streams": args.streams,
                      "mimi_frames": transcriber.mimi_frames, "frames": engine.frame,
                      "us_per_stream_frame": round(1e6 * wall / (engine.frame * args.streams), 1),
                      "frame_ms": {"mean": round(float(frame_ms.mean()), 3),
                                   "p50": round(float(np.median(frame_ms)), 3),
                                   "p95": round(float(np.percentile(frame_ms, 95)), 3)},
                      "wall_s": round(wall, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
