"""Benchmark: `kyutai-stt convert` on the full synthetic checkpoint (real layout, 2.4 GB), as one line:
seconds, MB written, peak RSS of the conversion process. Target: < 2 min and < 8 GB on a 2-core machine.

    python benchmarks/convert.py [--checkpoint DIR] [--quant q4]

Without --checkpoint, a synthetic full checkpoint is written to a temporary directory first (not timed). The
conversion runs as a child process (the CLI itself), so its peak RSS excludes the synthetic writer's.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="an official-layout checkpoint directory")
    parser.add_argument("--quant", default="q4")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kyutai-convert-bench-"))
    try:
        checkpoint = args.checkpoint
        if checkpoint is None:
            from kyutai_stt.weights import synthetic
            checkpoint = synthetic.write_checkpoint(work / "checkpoint", "full")["config"].parent
        out = work / "package"
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "kyutai_stt.cli", "convert", str(checkpoint), str(out),
                               "--quant", args.quant], capture_output=True, text=True)
        if done.returncode:
            sys.stderr.write(done.stdout + done.stderr)
            return done.returncode
        seconds = time.perf_counter() - started
        written = sum(f.stat().st_size for f in out.iterdir())
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        print(f"convert full synthetic ({args.quant}): {seconds:.1f} s, {written / 1e6:.1f} MB written, "
              f"peak RSS {peak_kib / 2**20:.2f} GiB, {os.cpu_count()} CPUs")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
