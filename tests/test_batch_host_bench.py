"""benchmarks/batch_host.py runs (its stand-in engine keeps up with how BatchTranscriber drives an Engine) and prints
its one line: every frame of every file went through the host's path."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "batch_host.py"


def test_batch_host_benchmark_prints_its_line():
    done = subprocess.run([sys.executable, str(SCRIPT), "--files", "3", "--seconds", "1.5", "--streams", "2"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    line = json.loads(done.stdout.strip().splitlines()[-1])
    assert line["bench"] == "batch_host" and line["files"] == 3 and line["streams"] == 2
    # 3 files of 1.5 s (19 frames each with the lead-in, and the flush) on 2 streams: at least 2 files' frames
    assert line["frames"] >= 2 * 19 and line["us_per_stream_frame"] > 0
    assert set(line["frame_ms"]) == {"mean", "p50", "p95"}
