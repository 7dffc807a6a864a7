"""The LM's attention kernel alone, at the full-size model's shape: one line per setting (streams, the KV rings'
format, slots per range), with the time of one `main` dispatch (its ranges' merge not included) and the rate at
which it reads its rings.

    python benchmarks/attention.py [--streams 1,64,256] [--rings f16,int8] [--slots 48,188,375] [--iterations 20]

Rings: f32 and f16 (`kernels/attention.wgsl`, KV_F16) or int8 (`kernels/attention_int8.wgsl`, needs WGSL's
dot4I8Packed), filled with random values of their layout (int8: random bytes, scales of 0.01) at a full ring
(position past many wraps), every stream alike. Timing as benchmarks/kernels.py: the median over --iterations
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
from kyutai_stt.models.rope import rope_frequencies  # noqa: E402

# benchmarks/kernels.py's timing helpers, by path (a bare `import kernels` can find tests/kernels or the package's).
_spec = importlib.util.spec_from_file_location("kernel_benchmarks", Path(__file__).with_name("kernels.py"))
_kernels = sys.modules["kernel_benchmarks"] = importlib.util.module_from_spec(_spec)   # its dataclass looks it up
_spec.loader.exec_module(_kernels)
Job, bind, buffer, pipeline, report, time_job = (_kernels.Job, _kernels.bind, _kernels.buffer, _kernels.pipeline,
                                                 _kernels.report, _kernels.time_job)
RINGS = ("f32", "f16", "int8")


def row_words(rings: str, head_dim: int) -> int:
    """u32 words of one ring row (a slot of a head): f32 one a value, f16 two, int8 four plus a 16-byte unit of
    scales per 128 values (kernels/attention_int8.wgsl)."""
    return {"f32": head_dim, "f16": head_dim // 2, "int8": head_dim // 4 + 4 * -(-head_dim // 128)}[rings]


def stream_ring(rng, rings: str, heads: int, context: int, head_dim: int) -> np.ndarray:
    """One stream's ring [heads * context, row words] of random values of its layout."""
    words = row_words(rings, head_dim)
    if rings == "int8":
        rows = rng.integers(0, 2**32, (heads * context, words), dtype=np.uint32)
        rows[:, head_dim // 4:] = np.float32(0.01).view(np.uint32)
        return rows
    values = rng.standard_normal(heads * context * head_dim)
    return values.astype(np.float16 if rings == "f16" else np.float32).view(np.uint32)


def attention_job(device, rng, streams: int, rings: str, slots: int, rotate_bytes: int) -> tuple[Job, object]:
    cfg = FULL_LM
    heads, head_dim, context = cfg.num_heads, cfg.head_dim, cfg.context
    splits = -(-context // slots)
    one = stream_ring(rng, rings, heads, context, head_dim)
    ring_bytes = streams * one.nbytes
    constants = {"HEADS": heads, "HEAD_DIM": head_dim, "CONTEXT": context, "SPLITS": splits,
                 "WORKGROUP_SIZE": head_dim, **({"KV_F16": True} if rings == "f16" else {})}
    job = Job(f"attention {rings:<4} rings {streams:3} streams {splits:2} ranges of {slots:3} slots",
              "attention_int8" if rings == "int8" else "attention", constants, (heads, splits, streams),
              bytes_read=2 * ring_bytes)
    pipe = pipeline(device, job)
    dim = heads * head_dim
    qkv = buffer(device, rng.standard_normal(streams * 3 * dim).astype(np.float32))
    positions = buffer(device, np.full(streams, 10 * context + 5, np.uint32))    # full rings, past many wraps
    freqs = buffer(device, rope_frequencies(head_dim, cfg.max_period))
    partial_out, stats = buffer(device, 4 * streams * splits * dim), buffer(device, 8 * streams * splits * heads)
    source = buffer(device, one)
    for _ in range(max(1, -(-rotate_bytes // job.bytes_read))):
        k_cache, v_cache = buffer(device, ring_bytes), buffer(device, ring_bytes)
        encoder = device.create_command_encoder()
        for s in range(streams):
            encoder.copy_buffer_to_buffer(source, 0, k_cache, s * one.nbytes, one.nbytes)
            encoder.copy_buffer_to_buffer(source, 0, v_cache, s * one.nbytes, one.nbytes)
        device.queue.submit([encoder.finish()])
        job.bind_groups.append(bind(device, pipe, {0: qkv, 1: positions, 2: freqs, 3: k_cache, 4: v_cache,
                                                   5: partial_out, 6: stats}))
    return job, pipe


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
                job, pipe = attention_job(device, rng, streams, rings, slots, args.rotate_mib << 20)
                ms, how = time_job(device, job, pipe, args.iterations)
                report(job, ms, how)
    return 0


if __name__ == "__main__":
    sys.exit(main())
