"""benchmarks/attention_splits.py runs on the tiny package (plans of 1 stream and of 9: the matvec and the matmul
paths) and prints a line per setting, whose slots per range set the plan's attention ranges."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "attention_splits.py"
PATTERN = r"streams +(\d+) slots per range +(\d+) \((\d+) ranges\) rings (f32|f16|int8): step mean +[0-9.]+ ms, " \
          r"GPU +[0-9.]+ ms, attention \(with its merge\) +[0-9.]+ ms, (\d+) dispatches"


def run_benchmark(package, *arguments) -> list[re.Match]:
    done = subprocess.run([sys.executable, str(SCRIPT), "--package", str(package), "--steps", "1", "--warmup", "1",
                           *arguments], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    found = [re.fullmatch(PATTERN, line) for line in lines]
    assert all(found), lines
    return found


def test_attention_splits_benchmark_prints_a_line_per_setting(tiny_packages):
    found = run_benchmark(tiny_packages("q4").root, "--streams", "1,9", "--slots", "2,100")
    assert [(int(m.group(1)), int(m.group(2))) for m in found] == [(1, 2), (1, 100), (9, 2), (9, 100)]
    assert {m.group(4) for m in found} != {"int8"}     # int8 rings only when asked for
    # The tiny ring (8 slots) in 4 ranges of 2, or in one, for one stream (the matvec path's slot ranges) and for
    # several (the matmul path's) alike. (A range's merge is a dispatch; with the int8 path the merge also rounds
    # attn_out's input, which one range does in a dispatch of its own, so the counts can be equal.)
    assert [int(m.group(3)) for m in found] == [4, 1, 4, 1]
    assert int(found[0].group(5)) >= int(found[1].group(5)) and int(found[2].group(5)) >= int(found[3].group(5))


def test_attention_splits_benchmark_takes_int8_rings(tiny_packages):
    found = run_benchmark(tiny_packages("q4").root, "--streams", "9", "--slots", "100", "--kv-rings", "int8")
    assert [(int(m.group(1)), int(m.group(2)), m.group(4)) for m in found] == [(9, 100, "int8")]
