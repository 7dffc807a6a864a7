"""benchmarks/live_latency.py: one frame at a time through the live Transcriber, one JSON line; every frame's step
comes back in the call that fed its audio (none held back by the readback ring)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "live_latency.py"


def test_every_frame_comes_back_in_its_own_call(tiny_packages):
    done = subprocess.run([sys.executable, str(SCRIPT), "--package", str(tiny_packages("q4").root), "--frames", "6"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    line = json.loads(done.stdout.strip().splitlines()[-1])
    assert line["bench"] == "live_latency" and line["frames"] == 6
    assert line["frames_late"] == 0
    assert 0 < line["p50_ms"] <= line["p95_ms"] and line["mean_ms"] > 0


def test_a_directory_that_is_no_package_exits_2(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--package", str(tmp_path)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 2 and "not a model package" in done.stderr and "Traceback" not in done.stderr
