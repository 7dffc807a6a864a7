"""benchmarks/attention_splits.py runs on the tiny package (plans of 1 stream and of 9: the matvec and the matmul
paths) and prints a line per setting, whose slots per range set the plan's attention ranges."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "attention_splits.py"


def test_attention_splits_benchmark_prints_a_line_per_setting(tiny_packages):
    done = subprocess.run([sys.executable, str(SCRIPT), "--package", str(tiny_packages("q4").root), "--streams", "1,9",
                           "--slots", "2,100", "--steps", "1", "--warmup", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    pattern = r"streams +(\d+) slots per range +(\d+): step mean +[0-9.]+ ms, GPU +[0-9.]+ ms, attention \(with its " \
              r"merge\) +[0-9.]+ ms, (\d+) dispatches"
    found = [re.fullmatch(pattern, line) for line in lines]
    assert all(found) and [(int(m.group(1)), int(m.group(2))) for m in found] == [(1, 2), (1, 100), (9, 2), (9, 100)], \
        lines
    # The tiny ring (8 slots) in 4 ranges of 2 merges them after each layer's attention; in one range it does not,
    # for one stream (the matvec path's slot ranges) and for several (the matmul path's) alike.
    assert int(found[0].group(3)) > int(found[1].group(3)) and int(found[2].group(3)) > int(found[3].group(3)), lines
