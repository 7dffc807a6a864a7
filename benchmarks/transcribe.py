"""Benchmark: `kyutai-stt transcribe` on a long file, end to end (decode, resample, GPU, words), as one JSON line:

    {"bench": "transcribe", "audio_s": 600, "wall_s": ..., "rtf": ..., "load_s": ..., "adapter": ...}

    python benchmarks/transcribe.py --package PKG [--audio FILE] [--seconds 600] [-- --parallel-segments ...]

wall_s is the command's own measure of the time spent on the file (decoding + transcription, model loading
excluded; that is load_s), rtf = wall_s / audio_s (< 1: faster than real time). Without --audio, a speech-like
signal (harmonic "vowels" at syllable rate, pauses, a little noise; 16 kHz mono, so the resampler runs too) of
--seconds is written to a temporary file first (not timed). Without --package, the tiny synthetic package is built
first (a smoke test of the pipeline, not a measure of the real model). The command runs as a child process (the
CLI itself), exactly as a user runs it; arguments after `--` are passed to it (the line names them in "options").
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np

RATE = 16000


def write_speechlike(path: Path, seconds: float, seed: int = 0) -> Path:
    """Written one second at a time: an hour of it never sits in memory."""
    rng = np.random.default_rng(seed)
    phase = np.zeros(4)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        for second in range(int(np.ceil(seconds))):
            n = RATE if second + 1 <= seconds else int(round((seconds - second) * RATE))
            t = np.arange(n) / RATE
            f0 = 110 + 40 * rng.random()                          # pitch of this second's voice
            syllables = 0.5 + 0.5 * np.sin(2 * np.pi * (3 + 2 * rng.random()) * t) ** 2
            voiced = sum(np.sin(2 * np.pi * f0 * (k + 1) * t + phase[k]) / (k + 1) for k in range(4))
            phase += 2 * np.pi * f0 * np.arange(1, 5) * n / RATE
            x = 0.15 * syllables * voiced + 0.005 * rng.standard_normal(n)
            if second % 7 == 6:                                   # a pause now and then
                x *= 0.02
            w.writeframes(np.round(np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=Path, help="model package directory (default: the tiny synthetic one)")
    parser.add_argument("--audio", type=Path, help="an audio file (default: a generated speech-like signal)")
    parser.add_argument("--seconds", type=float, default=600.0, help="length of the generated signal")
    parser.add_argument("options", nargs="*", help="after --: options of `kyutai-stt transcribe`")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kyutai-transcribe-bench-"))
    try:
        package = args.package
        if package is None:
            from kyutai_stt.weights.convert import convert
            from kyutai_stt.weights.synthetic import write_checkpoint
            write_checkpoint(work / "ckpt", "tiny", seed=0)
            package = work / "pkg"
            convert(str(work / "ckpt"), package, "q4")
        audio = args.audio or write_speechlike(work / "speechlike.wav", args.seconds)
        done = subprocess.run([sys.executable, "-m", "kyutai_stt.cli", "transcribe", str(audio), "--model",
                               str(package), "--output", str(work / "transcript.txt"), *args.options],
                              capture_output=True, text=True)
        if done.returncode:
            sys.stderr.write(done.stdout + done.stderr)
            return done.returncode
        summary = json.loads(done.stderr.strip().splitlines()[-1])
        from kyutai_stt.engine import device as gpu
        print(json.dumps({"bench": "transcribe", "audio_s": summary["audio_s"], "wall_s": summary["wall_s"],
                          "rtf": summary["rtf"], "load_s": summary["load_s"], "streams": summary["streams"],
                          "mimi_frames": summary["mimi_frames"],
                          "options": " ".join(args.options),
                          "adapter": gpu.adapter_summary()["name"]}))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
