"""kernels/matmul.wgsl (the plans' matrix kernel for many streams) at the LM's shapes: one line per matrix and
stream count, with the time of one dispatch (plus its combine dispatch where the columns are split), the effective
bandwidth of the weights it must read, and the
arithmetic rate (2 x rows x columns x streams flops). --int8: kernels/matmul_int8.wgsl instead (q4 weights, inputs
already int8; the tile's third value is then TILE_BLOCKS, 32-column blocks per step).

    python benchmarks/matmul.py [--streams 16,64,256] [--shapes ffn_in,...] [--quant q4] [--tile 16,16,32]
    python benchmarks/matmul.py --int8 [--tile 16,16,4,8]
    python benchmarks/matmul.py --int8 --tile 16,8,2,1,8          # 8 streams an invocation (STREAM_QUADS 2)
    python benchmarks/matmul.py --source other.wgsl      # the same lines for another version of the kernel (A/B)

Timing as benchmarks/kernels.py (timestamp queries, weights rotated past the L2 cache, a warm-up first).
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kyutai_stt.engine import device as gpu  # noqa: E402
from kyutai_stt.weights import quant  # noqa: E402
from kyutai_stt.weights.quant import FORMATS  # noqa: E402

# benchmarks/kernels.py's timing helpers, by path (a bare `import kernels` can find tests/kernels or the package's).
_spec = importlib.util.spec_from_file_location("kernel_benchmarks", Path(__file__).with_name("kernels.py"))
_kernels = sys.modules["kernel_benchmarks"] = importlib.util.module_from_spec(_spec)   # its dataclass looks it up
_spec.loader.exec_module(_kernels)
LM_SHAPES, Job, bind, buffer = _kernels.LM_SHAPES, _kernels.Job, _kernels.bind, _kernels.buffer
time_job, weight_copies, with_scales = _kernels.time_job, _kernels.weight_copies, _kernels.with_scales


def matmul_jobs(device, rng, source, quant_type, name, streams, tile, weights, int8=False):
    """The main dispatch, and the combine dispatch when the tile splits the columns (else None)."""
    rows, columns, input_mode = LM_SHAPES[name]
    row_threads, stream_threads, tile_k, splits = tile[:4]
    quads = tile[4] // 4 if len(tile) > 4 else 1     # streams an invocation, 4 or 8 (a --source kernel's STREAM_QUADS)
    kernel = "matmul_int8" if int8 else "matmul"
    constants = {"ROWS": rows, "COLUMNS": columns, "ACCUMULATE": input_mode == 2, "BATCH": streams,
                 "ROW_THREADS": row_threads, "STREAM_THREADS": stream_threads, "K_SPLITS": splits}
    constants |= {"TILE_BLOCKS": tile_k} if int8 else {"FORMAT": FORMATS[quant_type], "INPUT_MODE": input_mode,
                                                       "TILE_K": tile_k}
    constants |= {"STREAM_QUADS": quads} if quads > 1 else {}
    job = Job(f"{kernel} {quant_type} {name:<10} [{rows:>5} x {columns:>4}] x {streams:>3} streams", kernel,
              constants, (-(-rows // (4 * row_threads)), -(-streams // (4 * quads * stream_threads)), splits),
              bytes_read=quant.nbytes(quant_type, (rows, columns)))
    module = device.create_shader_module(code=source)
    width = 2 * columns if input_mode == 2 and not int8 else columns
    if int8:    # int8 inputs (any words) and their blocks' (scale, sum)
        x = buffer(device, rng.integers(0, 2**32, (streams, columns // 4), dtype=np.uint64).astype(np.uint32))
        alpha = buffer(device, rng.random((streams, columns // 32, 2)).astype(np.float32))
    else:
        x = buffer(device, rng.standard_normal((streams, width)).astype(np.float32))
        alpha = buffer(device, np.ones(columns, np.float32))
    y = buffer(device, np.zeros((streams, rows), np.float32))
    partials = buffer(device, 4 * splits * streams * (rows + 1))
    pipes = []
    for entry in ("main", "combine") if splits > 1 else ("main",):
        pipe = device.create_compute_pipeline(layout="auto", compute={"module": module, "entry_point": entry,
                                                                      "constants": job.constants})
        pipes.append(pipe)
    job.bind_groups = [bind(device, pipes[0], {**with_scales(copy), 2: x, 3: y, 4: alpha, 5: partials})
                       for copy in weights]
    combine = None
    if splits > 1:
        combine = Job(job.label + " combine", kernel, job.constants, (-(-rows // 64), streams, 1), entry="combine")
        combine.bind_groups = [bind(device, pipes[1], {3: y, 5: partials})]
    return (job, pipes[0]), (combine, pipes[1]) if combine else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", default="16,64,256")
    parser.add_argument("--shapes", default=",".join(LM_SHAPES))
    parser.add_argument("--quant", default="q4")
    parser.add_argument("--tile", default="16,16,32,8",
                        help="ROW_THREADS,STREAM_THREADS,TILE_K,K_SPLITS[,streams an invocation: 4, or 8 with --int8]")
    parser.add_argument("--source", type=Path, help="a WGSL file in place of kernels/matmul.wgsl")
    parser.add_argument("--int8", action="store_true", help="kernels/matmul_int8.wgsl (q4 only)")
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--rotate-mib", type=int, default=256)
    args = parser.parse_args(argv)
    adapter, device = gpu.get_device()
    source = gpu.to_native_wgsl(args.source.read_text()) if args.source else gpu.load_kernel_source(
        "matmul_int8" if args.int8 else "matmul")
    tile = tuple(int(v) for v in args.tile.split(","))
    rng = np.random.default_rng(0)
    for name in args.shapes.split(","):
        rows, columns, _ = LM_SHAPES[name]
        weights = weight_copies(device, rng, args.quant, rows, columns, args.rotate_mib * 2**20)
        for streams in (int(s) for s in args.streams.split(",")):
            (job, pipe), combine = matmul_jobs(device, rng, source, args.quant, name, streams, tile, weights,
                                               args.int8)
            ms, how = time_job(device, job, pipe, args.iterations)
            if combine:
                ms += time_job(device, *combine, args.iterations)[0]   # each includes ~4 us of pass overhead
            tflops = 2 * rows * columns * streams / (ms * 1e-3) / 1e12
            print(f"{job.label:<56} {ms:9.4f} ms {job.bytes_read / (ms * 1e-3) / 1e9:8.1f} GB/s "
                  f"{tflops:6.2f} TFLOPS  tile {args.tile}  ({how.split(';')[0]})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
