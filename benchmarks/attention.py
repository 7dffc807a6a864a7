"""The LM's attention kernel alone, at the full-size model's shape: one line per setting (streams, the KV rings'
format, slots per range), with the time of one `main` dispatch (its ranges' merge not included) and the rate at
which it reads its rings.

    python benchmarks/attention.py [--streams 1,64,256] [--rings f16,int8] [--slots 48,188,375] [--iterations 20]

Rings: f32 and f16 (`kernels/attention.wgsl`, KV_F16) or int8 (`kernels/attention_int8.wgsl`, needs WGSL's
dot4I8Packed), of random values at a full ring, every stream alike (benchmarks/kernels.py attention_job, which
kernels.py also times for one stream). Slots per range are the kernel's, ceil(context / ranges). Timing as
benchmarks/kernels.py: the median over --iterations
passes of one dispatch, then the mean and p95, and the same dispatches back to back in one pass. Rings smaller than
--rotate-mib rotate through copies, so that repeated dispatches read memory, not the last-level cache. A setting's
first job in a process has been seen to run 2-3x slow on an H100 (where its buffers land): repeat a setting, or
put a throwaway one first, before comparing.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kyutai_stt.config import FULL_LM  # noqa: E402
from kyutai_stt.engine import device as gpu  # noqa: E402
from kyutai_stt.engine.plan import INT8_DOT  # noqa: E402

# benchmarks/kernels.py's timing helpers, by path (a bare `import kernels` can find tests/kernels or the package's).
_spec = importlib.util.spec_from_file_location("kernel_benchmarks", Path(__file__).with_name("kernels.py"))
_kernels = sys.modules["kernel_benchmarks"] = importlib.util.module_from_spec(_spec)   # its dataclass looks it up
_spec.loader.exec_module(_kernels)
attention_job, report, time_job = _kernels.attention_job, _kernels.report, _kernels.time_job
RINGS = ("f32", "f16", "int8")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", default="1,64,256")
    parser.add_argument("--rings", default="f16,int8", help=f"ring formats, of {', '.join(RINGS)}")
    parser.add_argument("--slots", default="48,188,375", help="slots per range (750: one range)")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--rotate-mib", type=int, default=256)
    args = parser.parse_args(argv)
    rings_asked = args.rings.split(",")
    if not set(rings_asked) <= set(RINGS):
        parser.error(f"--rings: each of {', '.join(RINGS)}")
    adapter, device = gpu.get_device()
    rng = np.random.default_rng(0)
    print(f"adapter: {adapter.summary}", flush=True)
    for rings in rings_asked:
        if rings == "int8" and INT8_DOT not in gpu.wgsl_language_features():
            print(f"attention int8 rings: not run, this device lacks WGSL's {INT8_DOT}", flush=True)
            continue
        for streams in (int(s) for s in args.streams.split(",")):
            for slots in (int(s) for s in args.slots.split(",")):
                splits = -(-FULL_LM.context // slots)
                job, pipe = attention_job(device, rng, splits, args.rotate_mib << 20, streams, rings)
                ms, how = time_job(device, job, pipe, args.iterations)
                report(job, ms, how)
    return 0


if __name__ == "__main__":
    sys.exit(main())
