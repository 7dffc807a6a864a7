"""benchmarks/attention.py: the attention kernel alone, a line per setting, on rings of the plan's layout."""
from __future__ import annotations

import dataclasses
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from kyutai_stt.models.lm import MatvecTuning, Tuning, build_lm_plan, tensors_of

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "attention.py"
LINE = r"attention (f32|f16|int8) +rings +(\d+) streams +(\d+) ranges of +(\d+) slots +[0-9.]+ ms +[0-9.]+ GB/s  \(.*\)"


def load_kernel_benchmarks():
    spec = importlib.util.spec_from_file_location("kernel_benchmarks", SCRIPT.with_name("kernels.py"))
    module = sys.modules["kernel_benchmarks"] = importlib.util.module_from_spec(spec)   # its dataclass looks it up
    spec.loader.exec_module(module)
    return module


def test_attention_benchmark_prints_a_line_per_setting():
    done = subprocess.run([sys.executable, str(SCRIPT), "--streams", "2", "--rings", "f16,int8", "--slots", "375,750",
                           "--iterations", "2", "--rotate-mib", "1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("attention")]
    found = [re.fullmatch(LINE, line) for line in lines]
    assert all(found), lines
    assert [(m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4))) for m in found] == [
        ("f16", 2, 2, 375), ("f16", 2, 1, 750), ("int8", 2, 2, 375), ("int8", 2, 1, 750)]


def test_attention_benchmark_rings_have_the_plans_layout(tiny_packages):
    """The benchmark's rings are the plan's: a ring buffer of the tiny LM is heads x context of its rows."""
    benchmarks = load_kernel_benchmarks()
    package = tiny_packages("q4")
    cfg, tensors = package.config, tensors_of(package)
    base = Tuning({"default": MatvecTuning(64, 16, 2)}, 8)
    rng = np.random.default_rng(0)
    for rings, tuning in (("f32", base), ("f16", dataclasses.replace(base, kv_f16=True)),
                          ("int8", dataclasses.replace(base, kv_int8=True))):
        ring = build_lm_plan(cfg, tensors, tuning).buffer("lm.k_cache.0")
        data = benchmarks.stream_ring(rng, rings, cfg.num_heads, cfg.context, cfg.head_dim)
        assert ring.size == data.nbytes, rings
