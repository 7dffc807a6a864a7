"""benchmarks/attention_splits.py runs on the tiny package (a plan of 9 streams: the matmul path) and prints a line
per setting, whose slots per range set the plan's attention ranges."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "attention_splits.py"


def test_attention_splits_benchmark_prints_a_line_per_setting(tiny_packages):
    done = subprocess.run([sys.executable, str(SCRIPT), "--package", str(tiny_packages("q4").root), "--streams", "9",
                           "--slots", "2,100", "--steps", "1", "--warmup", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    pattern = r"streams   9 slots per range +(\d+): step mean +[0-9.]+ ms, attention \(with its merge\) +[0-9.]+ ms, " \
              r"(\d+) dispatches"
    found = [re.fullmatch(pattern, line) for line in lines]
    assert all(found) and [int(m.group(1)) for m in found] == [2, 100], lines
    # The tiny ring (8 slots) in 4 ranges of 2 merges them after each layer's attention; in one range it does not.
    assert int(found[0].group(2)) > int(found[1].group(2)), lines
