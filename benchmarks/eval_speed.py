"""Benchmark: `kyutai-stt eval` over a synthetic dataset the size of LibriSpeech test-clean (2620 files, 5.4 h of
audio), as one JSON line:

    {"bench": "eval", "files": 2620, "audio_s": ..., "processing_s": ..., "rtf": ..., "command_s": ..., "batch": N}

    python benchmarks/eval_speed.py --package PKG [--files 2620] [--seconds 7.42] [--batch 64]

The files are benchmarks/transcribe.py's speech-like signal (16 kHz, so the resampler runs), each with a one-line
reference, in the simple layout (name.wav + name.txt), written to a temporary folder first (not timed).
processing_s is the report's (decoding + transcription: with --batch, the batch's wall time), command_s the whole
command (model loading and the upfront checks of every file too). The WER of a synthetic package means nothing.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_spec = importlib.util.spec_from_file_location("transcribe_benchmark", Path(__file__).with_name("transcribe.py"))
_transcribe = sys.modules["transcribe_benchmark"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_transcribe)

TEST_CLEAN_FILES = 2620
TEST_CLEAN_SECONDS = 5.4 * 3600 / TEST_CLEAN_FILES       # 7.42 s a file on average


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=Path, required=True, help="model package directory")
    parser.add_argument("--files", type=int, default=TEST_CLEAN_FILES)
    parser.add_argument("--seconds", type=float, default=TEST_CLEAN_SECONDS, help="length of each file")
    parser.add_argument("--batch", type=int, default=64, help="kyutai-stt eval --batch")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kyutai-eval-bench-"))
    try:
        data = work / "data"
        data.mkdir()
        for i in range(args.files):
            _transcribe.write_speechlike(data / f"utt{i:05d}.wav", args.seconds, seed=i)
            (data / f"utt{i:05d}.txt").write_text("a reference line\n")
        report = work / "report.json"
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "kyutai_stt.cli", "eval", str(data), "--model", str(args.package),
                               "--batch", str(args.batch), "--output", str(report)], capture_output=True, text=True)
        command_s = time.perf_counter() - started
        if done.returncode:
            sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
            return done.returncode
        summary = json.loads(report.read_text())["summary"]
        print(json.dumps({"bench": "eval", "files": summary["files"], "audio_s": summary["audio_s"],
                          "processing_s": summary["processing_s"], "rtf": summary["rtf"],
                          "command_s": round(command_s, 3), "batch": args.batch}))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
