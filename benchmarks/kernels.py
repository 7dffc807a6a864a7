"""Per-kernel GPU timings of the LM step's kernels: one line per kernel and shape.

    python benchmarks/kernels.py                     # matvec in every format (and its subgroup variant for q4)
                                                     # at the LM shapes, then the other kernels
    python benchmarks/kernels.py --quants q4 --sweep     # also try tuning constants; print the best per shape

Each line: the median time of one dispatch in its own compute pass over --iterations passes (timestamp queries at
the pass's start and end: the kernel plus ~4 us of pass overhead on an H100, see the "empty dispatch" line), then
"back to back": the average over the same dispatches recorded in one pass (what a recorded step sees, barriers
between dependent dispatches included), each with the effective bandwidth of the bytes the kernel must read
(weights with their scales, or the KV ring for attention). Timestamps are taken as nanoseconds, as WebGPU specifies
(lavapipe and NVIDIA's Vulkan tick in ns). Without timestamp queries the line gives the wall clock around one
submission of all dispatches ("wall"). Each job first runs for 50 ms: an idle GPU runs at a fraction of its clocks.
The last lines add the kernel times of one LM step per matvec variant (no dispatch overhead, no combine pass).
A variant is a weight format (FORMAT of kernels/matvec.wgsl), `_subgroup` for kernels/matvec_subgroup.wgsl,
`q4_int8` / `q4_int8_subgroup` for kernels/matvec_int8[_subgroup].wgsl (the int8 path: its input already quantised;
the `quantize_input` lines time that once-per-input kernel, and the step estimate of an int8 variant adds them),
`q4_f16` for kernels/matvec_f16.wgsl (the f16 path: likewise, its input already rounded to f16; needs shader-f16).

Weights rotate through enough copies to exceed --rotate-mib, so that repeated dispatches read memory, not the last
level cache (an H100 has 50 MB of L2: the default 256 MiB is 5x that). Contents are random bits of the right layout:
bandwidth does not depend on them. On a CPU adapter (lavapipe) the defaults shrink so that the script just runs.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kyutai_stt.config import FULL_LM  # noqa: E402
from kyutai_stt.engine import device as gpu
from kyutai_stt.models.lm import kv_ring_row  # noqa: E402
from kyutai_stt.models.rope import rope_frequencies  # noqa: E402
from kyutai_stt.weights import quant  # noqa: E402
from kyutai_stt.weights.quant import FORMATS  # noqa: E402

# isort: split
import wgpu  # noqa: E402  (after kyutai_stt.engine.device, which sets the backend environment)

D, F = FULL_LM.dim, FULL_LM.ffn_dim
# [rows x columns] of every matvec of the step, with the input mode the step uses (for its extra input reads).
LM_SHAPES = {
    "attn_qkv": (3 * D, D, 1),
    "attn_out": (D, D, 0),
    "ffn_in": (2 * F, D, 1),
    "ffn_out": (D, F, 2),
    "text_head": (FULL_LM.text_card, D, 1),
}
DEFAULT_TUNING = {"WORKGROUP_SIZE": 256, "THREADS_PER_ROW": 64, "ROWS_PER_THREAD": 4}
SWEEP = [dict(WORKGROUP_SIZE=w, THREADS_PER_ROW=t, ROWS_PER_THREAD=r)
         for w in (64, 128, 256) for t in (8, 16, 32, 64, 128, 256) for r in (1, 2, 4, 8) if w % t == 0]
STORAGE = wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_DST | wgpu.BufferUsage.COPY_SRC


@dataclass
class Job:
    """One pipeline and the bind groups it cycles through (one per weight copy)."""
    label: str
    kernel: str
    constants: dict
    workgroups: tuple[int, int, int]
    bind_groups: list = field(default_factory=list)
    bytes_read: int = 0
    entry: str = "main"


def buffer(device, data: np.ndarray | bytes | int):
    if isinstance(data, int):
        return device.create_buffer(size=max(16, -(-data // 16) * 16), usage=STORAGE)
    raw = data if isinstance(data, bytes) else np.ascontiguousarray(data).tobytes()
    return device.create_buffer_with_data(data=raw + bytes(-len(raw) % 4), usage=STORAGE)


def pipeline(device, job: Job):
    module = device.create_shader_module(code=gpu.load_kernel_source(job.kernel))
    return device.create_compute_pipeline(
        layout="auto", compute={"module": module, "entry_point": job.entry, "constants": job.constants})


def bind(device, pipe, buffers: dict[int, object]):
    return device.create_bind_group(layout=pipe.get_bind_group_layout(0), entries=[
        {"binding": i, "resource": {"buffer": b}} for i, b in sorted(buffers.items())])


def time_job(device, job: Job, pipe, iterations: int, warmup_seconds: float = 0.05) -> tuple[float, str]:
    """Milliseconds per dispatch, and how they were measured.

    With timestamp queries: the median over `iterations` compute passes of one dispatch each (the kernel alone,
    plus the pass's own overhead), and, in the description, the average over one pass of `iterations` back-to-back
    dispatches (what a recorded step sees: dispatch overhead and the barriers between dependent dispatches included).

    The GPU first runs this job for warmup_seconds: an idle GPU runs at a fraction of its clocks, and a few
    milliseconds of dispatches would be timed before the clocks rise.
    """
    start = time.perf_counter()
    while time.perf_counter() - start < warmup_seconds:
        warmup = device.create_command_encoder()
        compute_pass = warmup.begin_compute_pass()
        compute_pass.set_pipeline(pipe)
        for i in range(50):
            compute_pass.set_bind_group(0, job.bind_groups[i % len(job.bind_groups)])
            compute_pass.dispatch_workgroups(*job.workgroups)
        compute_pass.end()
        device.queue.submit([warmup.finish()])
        gpu.wait_for_gpu()

    encoder = device.create_command_encoder()
    if "timestamp-query" in device.features:
        queries = device.create_query_set(type="timestamp", count=2 * iterations)
        for i in range(iterations):
            compute_pass = encoder.begin_compute_pass(timestamp_writes={
                "query_set": queries, "beginning_of_pass_write_index": 2 * i,
                "end_of_pass_write_index": 2 * i + 1})
            compute_pass.set_pipeline(pipe)
            compute_pass.set_bind_group(0, job.bind_groups[i % len(job.bind_groups)])
            compute_pass.dispatch_workgroups(*job.workgroups)
            compute_pass.end()
        resolved = device.create_buffer(size=16 * iterations,
                                         usage=wgpu.BufferUsage.QUERY_RESOLVE | wgpu.BufferUsage.COPY_SRC)
        encoder.resolve_query_set(queries, 0, 2 * iterations, resolved, 0)
        # The same dispatches back to back in one pass.
        whole = device.create_query_set(type="timestamp", count=2)
        compute_pass = encoder.begin_compute_pass(timestamp_writes={
            "query_set": whole, "beginning_of_pass_write_index": 0, "end_of_pass_write_index": 1})
        compute_pass.set_pipeline(pipe)
        for i in range(iterations):
            compute_pass.set_bind_group(0, job.bind_groups[i % len(job.bind_groups)])
            compute_pass.dispatch_workgroups(*job.workgroups)
        compute_pass.end()
        resolved_whole = device.create_buffer(size=16, usage=wgpu.BufferUsage.QUERY_RESOLVE | wgpu.BufferUsage.COPY_SRC)
        encoder.resolve_query_set(whole, 0, 2, resolved_whole, 0)
        device.queue.submit([encoder.finish()])
        stamps = np.frombuffer(device.queue.read_buffer(resolved), np.uint64).reshape(iterations, 2)
        durations = (stamps[:, 1] - stamps[:, 0]).astype(np.float64) / 1e6
        begin, end = np.frombuffer(device.queue.read_buffer(resolved_whole), np.uint64)
        in_pass = float(end - begin) / 1e6 / iterations
        in_pass_gbps = job.bytes_read / (in_pass * 1e-3) / 1e9
        spread = f"mean {durations.mean():.4f} p95 {np.percentile(durations, 95):.4f}"
        return statistics.median(durations), (f"timestamps, {spread}; back to back {in_pass:.4f} ms "
                                              f"{in_pass_gbps:6.1f} GB/s")
    compute_pass = encoder.begin_compute_pass()
    compute_pass.set_pipeline(pipe)
    for i in range(iterations):
        compute_pass.set_bind_group(0, job.bind_groups[i % len(job.bind_groups)])
        compute_pass.dispatch_workgroups(*job.workgroups)
    compute_pass.end()
    start = time.perf_counter()
    device.queue.submit([encoder.finish()])
    gpu.wait_for_gpu()
    return (time.perf_counter() - start) * 1e3 / iterations, "wall"


def random_streams(rng, quant_type: str, rows: int, columns: int) -> dict[int, np.ndarray]:
    """Weight bindings of a random [rows, columns] tensor in a package layout (random bits; scales small, finite).
    f32/f16 have no scales: binding 1 is then bound to the weights again (see with_scales)."""
    n = rows * columns
    if quant_type in ("q4", "q8"):
        words = n // (8 if quant_type == "q4" else 4)
        scales = rng.uniform(1e-3, 1e-2, n // quant.BLOCK).astype(np.float16)
        return {0: rng.integers(0, 2**32, words, dtype=np.uint32), 1: scales.view(np.uint32)}
    if quant_type == "f16":
        return {0: (0.01 * rng.standard_normal(n)).astype(np.float16).view(np.uint32)}
    return {0: (0.01 * rng.standard_normal(n)).astype(np.float32)}


def weight_copies(device, rng, quant_type: str, rows: int, columns: int, rotate_bytes: int) -> list[dict]:
    """Enough copies of one random weight tensor's streams ({binding: buffer}) to exceed rotate_bytes."""
    first = {i: buffer(device, a) for i, a in random_streams(rng, quant_type, rows, columns).items()}
    copies = [first]
    weight_bytes = quant.nbytes(quant_type, (rows, columns))
    encoder = device.create_command_encoder()
    for _ in range(max(1, -(-rotate_bytes // weight_bytes)) - 1):  # the same bits in new buffers, copied on the GPU
        fresh = {i: device.create_buffer(size=b.size, usage=STORAGE) for i, b in first.items()}
        for i, b in first.items():
            encoder.copy_buffer_to_buffer(b, 0, fresh[i], 0, b.size)
        copies.append(fresh)
    device.queue.submit([encoder.finish()])
    return copies


def with_scales(weights: dict[int, object]) -> dict[int, object]:
    """Bindings 0 and 1 of the FORMAT kernels: the scales, or the weights again where the format has none."""
    return {1: weights[0], **weights}


def matvec_job(device, rng, variant, name, rows, columns, input_mode, tuning, weights) -> tuple[Job, object]:
    """matvec (FORMAT of the variant; matvec_subgroup for `<format>_subgroup`) at one LM shape with the step's input
    mode (weights: from weight_copies)."""
    quant_type = variant.split("_")[0]
    tuning = {**DEFAULT_TUNING, **tuning}
    rows_per_workgroup = tuning["WORKGROUP_SIZE"] // tuning["THREADS_PER_ROW"] * tuning["ROWS_PER_THREAD"]
    if "_int8" in variant or "_f16" in variant:
        return rounded_matvec_job(device, rng, variant, name, rows, columns, input_mode, tuning, weights)
    kernel = "matvec_subgroup" if variant.endswith("_subgroup") else "matvec"
    job = Job(f"matvec {variant:<12} {name:<10} [{rows:>5} x {columns:>4}]", kernel,
              {"FORMAT": FORMATS[quant_type], "ROWS": rows, "COLUMNS": columns, "INPUT_MODE": input_mode,
               "ACCUMULATE": input_mode == 2, **tuning},
              (-(-rows // rows_per_workgroup), 1, 1), bytes_read=quant.nbytes(quant_type, (rows, columns)))
    pipe = pipeline(device, job)
    width = 2 * columns if input_mode == 2 else columns
    x = buffer(device, rng.standard_normal(width).astype(np.float32))
    alpha = buffer(device, np.ones(columns, np.float32))
    y = buffer(device, np.zeros(rows, np.float32))
    job.bind_groups = [bind(device, pipe, {**with_scales(copy), 2: x, 3: y, 4: alpha}) for copy in weights]
    return job, pipe


def rounded_matvec_job(device, rng, variant, name, rows, columns, input_mode, tuning, weights) -> tuple[Job, object]:
    """matvec_int8[_subgroup] or matvec_f16 (q4 weights, an input rounded by quantize_input beforehand: random int8
    words or f16 halves below 1, and block scales; the kernel's work does not depend on their values)."""
    rows_per_workgroup = tuning["WORKGROUP_SIZE"] // tuning["THREADS_PER_ROW"] * tuning["ROWS_PER_THREAD"]
    kernel = "matvec_f16" if "_f16" in variant else \
        "matvec_int8_subgroup" if variant.endswith("_subgroup") else "matvec_int8"
    job = Job(f"matvec {variant:<12} {name:<10} [{rows:>5} x {columns:>4}]", kernel,
              {"ROWS": rows, "COLUMNS": columns, "ACCUMULATE": input_mode == 2, **tuning},
              (-(-rows // rows_per_workgroup), 1, 1), bytes_read=quant.nbytes("q4", (rows, columns)))
    pipe = pipeline(device, job)
    xq = buffer(device, rng.uniform(-1, 1, columns).astype(np.float16).view(np.uint32) if kernel == "matvec_f16"
                else rng.integers(0, 2**32, columns // 4, dtype=np.uint32))   # [COLUMNS / 2] f16 or [/ 4] int8
    xs = buffer(device, np.stack([rng.uniform(1e-3, 1e-2, columns // 32),               # [COLUMNS / 32] (scale, sum)
                                  rng.integers(-500, 500, columns // 32)], axis=1).astype(np.float32))
    y = buffer(device, np.zeros(rows, np.float32))
    job.bind_groups = [bind(device, pipe, {**with_scales(copy), 2: xq, 3: y, 4: xs}) for copy in weights]
    return job, pipe


def quantize_input_job(device, rng, columns: int, input_mode: int, f16: bool = False) -> tuple[Job, object]:
    """quantize_input (once per int8- or f16-path input: RMSNorm of D inputs, or SwiGLU of 2F), workgroups of 256."""
    blocks = columns // 32
    mode = {0: "plain", 1: "rms_norm", 2: "swiglu"}[input_mode]
    job = Job(f"quantize_input {'f16' if f16 else 'int8'} {mode:<8} [{columns:>5}]", "quantize_input",
              {"COLUMNS": columns, "INPUT_MODE": input_mode, "WORKGROUP_SIZE": 256, "OUTPUT_F16": f16},
              (-(-columns // 8 // 256), 1, 1), bytes_read=4 * columns * (2 if input_mode else 1))
    pipe = pipeline(device, job)
    x = buffer(device, rng.standard_normal(2 * columns if input_mode == 2 else columns).astype(np.float32))
    job.bind_groups = [bind(device, pipe, {0: x, 1: buffer(device, np.ones(columns, np.float32)),
                                           2: buffer(device, 2 * columns), 3: buffer(device, 8 * blocks)})]
    return job, pipe


def stream_ring(rng, rings: str, heads: int, context: int, head_dim: int) -> np.ndarray:
    """One stream's KV ring [heads * context, row words] of random values of its layout (models/lm.py kv_ring_row;
    int8: random bytes, scales of 0.01)."""
    words = kv_ring_row(head_dim, rings)[0]
    if rings == "int8":
        rows = rng.integers(0, 2**32, (heads * context, words), dtype=np.uint32)
        rows[:, head_dim // 4:] = np.float32(0.01).view(np.uint32)
        return rows
    values = rng.standard_normal(heads * context * head_dim)
    return values.astype(np.float16 if rings == "f16" else np.float32).view(np.uint32)


def attention_job(device, rng, splits: int, rotate_bytes: int, streams: int = 1, rings: str = "f32",
                  score_team: int | None = None) -> tuple[Job, object]:
    """The LM's attention `main` at the full-size shape: `streams` full rings (past many wraps) of `rings` (f32, f16:
    attention.wgsl; int8: attention_int8.wgsl), read in `splits` ranges."""
    cfg = FULL_LM
    heads, head_dim, context = cfg.num_heads, cfg.head_dim, cfg.context
    dim = heads * head_dim
    one = stream_ring(rng, rings, heads, context, head_dim)
    ring_bytes = streams * one.nbytes
    constants = {"HEADS": heads, "HEAD_DIM": head_dim, "CONTEXT": context, "SPLITS": splits, "WORKGROUP_SIZE": head_dim,
                 **({"KV_F16": True} if rings == "f16" else {}),
                 **({"SCORE_TEAM": score_team} if score_team else {})}
    slots, team = -(-context // splits), f" SCORE_TEAM {score_team}" if score_team else ""
    job = Job(f"attention {rings:<4} rings {streams:3} streams {splits:2} ranges of {slots:3} slots{team}",
              "attention_int8" if rings == "int8" else "attention", constants, (heads, splits, streams),
              bytes_read=2 * ring_bytes)
    pipe = pipeline(device, job)
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


EMPTY_KERNEL = "@compute @workgroup_size(1) fn main() {}"


def floor_job(device) -> tuple[Job, object]:
    """An empty dispatch: the fixed cost every line above includes."""
    job = Job("empty dispatch (1 invocation)", "", {}, (1, 1, 1))
    pipe = device.create_compute_pipeline(layout="auto", compute={
        "module": device.create_shader_module(code=EMPTY_KERNEL), "entry_point": "main"})
    job.bind_groups = [device.create_bind_group(layout=pipe.get_bind_group_layout(0), entries=[])]
    return job, pipe


def small_jobs(device, rng) -> list[tuple[Job, object]]:
    """embed_sum (32 audio rows, q4), argmax over the vocabulary, the VAD heads: latency, not bandwidth."""
    cfg = FULL_LM
    jobs = []
    rows = 64  # table rows present (the ids stay below): the kernel's cost does not depend on the table's length
    embed = Job(f"embed_sum q4 [{cfg.n_q} rows x {D}]", "embed_sum",
                {"FORMAT": FORMATS["q4"], "DIM": D, "TABLES": cfg.n_q, "TABLE_ROWS": 2}, (-(-D // (8 * 8)), 1, 1),
                bytes_read=cfg.n_q * quant.nbytes("q4", (1, D)))
    pipe = pipeline(device, embed)
    streams = random_streams(rng, "q4", cfg.n_q * 2 * rows // 2, D)
    embed.bind_groups.append(bind(device, pipe, {**{i: buffer(device, a) for i, a in streams.items()},
                                                 2: buffer(device, np.ones(cfg.n_q, np.uint32)),
                                                 3: buffer(device, 4 * D)}))
    jobs.append((embed, pipe))
    argmax = Job(f"argmax       [{cfg.text_card}]", "argmax", {"COUNT": cfg.text_card}, (1, 1, 1),
                 bytes_read=4 * cfg.text_card)
    pipe = pipeline(device, argmax)
    argmax.bind_groups.append(bind(device, pipe, {0: buffer(device, rng.standard_normal(cfg.text_card)
                                                                     .astype(np.float32)),
                                                  1: buffer(device, 4), 2: buffer(device, 4)}))
    jobs.append((argmax, pipe))
    rows_vad = cfg.extra_heads_num_heads * cfg.extra_heads_dim
    vad = Job(f"vad_heads    [{rows_vad} x {D}] f32", "vad_heads", {"DIM": D}, (cfg.extra_heads_num_heads, 1, 1),
              bytes_read=4 * rows_vad * D)
    pipe = pipeline(device, vad)
    vad.bind_groups.append(bind(device, pipe, {0: buffer(device, rng.standard_normal(D).astype(np.float32)),
                                               1: buffer(device, np.ones(D, np.float32)),
                                               2: buffer(device, rng.standard_normal(rows_vad * D)
                                                         .astype(np.float32)),
                                               3: buffer(device, 16)}))
    jobs.append((vad, pipe))
    return jobs


def tuning_text(constants: dict) -> str:
    return (f" WG {constants['WORKGROUP_SIZE']} TPR {constants['THREADS_PER_ROW']} "
            f"RPT {constants['ROWS_PER_THREAD']}")


def report(job: Job, ms: float, how: str, extra: str = "") -> None:
    gbps = job.bytes_read / (ms * 1e-3) / 1e9 if ms > 0 else float("inf")
    print(f"{job.label:<50} {ms:9.4f} ms {gbps:9.1f} GB/s  ({how}){extra}", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quants", default="q4,q4_subgroup,q4_int8,q4_int8_subgroup,q4_f16,q8,f16,f32",
                        help="matvec variants (comma-separated)")
    parser.add_argument("--shapes", default=",".join(LM_SHAPES), help="LM matrices (comma-separated)")
    parser.add_argument("--iterations", type=int, help="dispatches timed per line (default 200; 3 on a CPU)")
    parser.add_argument("--rotate-mib", type=int, help="weight copies to cycle through (default 256; 0 on a CPU)")
    parser.add_argument("--sweep", action="store_true", help="also time tuning constants; print the best")
    parser.add_argument("--matvec-only", action="store_true", help="skip attention and the small kernels")
    args = parser.parse_args(argv)

    adapter, device = gpu.get_device()
    on_cpu = adapter.info.get("adapter_type", "") == "CPU"
    iterations = args.iterations or (3 if on_cpu else 200)
    rotate_bytes = (args.rotate_mib if args.rotate_mib is not None else 0 if on_cpu else 256) * 2**20
    print(f"adapter: {adapter.info.get('device', '?')} ({adapter.info.get('backend_type', '?')}); "
          f"features: {', '.join(sorted(f for f in gpu.WANTED_FEATURES if f in device.features))}; "
          f"{iterations} dispatches per line", flush=True)
    rng = np.random.default_rng(0)
    subgroups = gpu.subgroup_size()
    if subgroups:
        print(f"subgroup size (measured): {subgroups}")
    best = {}  # (variant, matrix) -> ms, for the step estimate
    for variant in args.quants.split(","):
        if variant.endswith("_subgroup") and "subgroup" not in device.features:
            print(f"matvec {variant}: skipped (no subgroups)")
            continue
        if "_int8" in variant and gpu.INT8_DOT not in gpu.wgsl_language_features():
            print(f"matvec {variant}: skipped (no {gpu.INT8_DOT})")
            continue
        if "_f16" in variant and "shader-f16" not in device.features:
            print(f"matvec {variant}: skipped (no shader-f16)")
            continue
        # The subgroup variant's teams must fit in a subgroup (a power of two <= the minimum subgroup size).
        default = {"THREADS_PER_ROW": min(subgroups, 32)} if variant.endswith("_subgroup") else {}
        if "_int8" in variant or "_f16" in variant:
            default = {"WORKGROUP_SIZE": 64, "THREADS_PER_ROW": min(subgroups or 16, 16), "ROWS_PER_THREAD": 1}
        sweep = [t for t in SWEEP if not variant.endswith("_subgroup") or t["THREADS_PER_ROW"] <= subgroups]
        for name in args.shapes.split(","):
            rows, columns, input_mode = LM_SHAPES[name]
            weights = weight_copies(device, rng, variant.split("_")[0], rows, columns, rotate_bytes)
            results = []
            for tuning in [default] + (sweep if args.sweep else []):
                job, pipe = matvec_job(device, rng, variant, name, rows, columns, input_mode, tuning, weights)
                ms, how = time_job(device, job, pipe, iterations)
                results.append((ms, job, how))
                if len(results) == 1:
                    report(job, ms, how, tuning_text(job.constants))
            if args.sweep:
                ms, job, how = min(results, key=lambda r: r[0])
                report(job, ms, how, tuning_text(job.constants) + " (best of the sweep)")
            best[variant, name] = min(r[0] for r in results)
            del weights
    quantize_ms = {}  # (f16, input mode) -> ms of quantize_input at the step's widths (D for RMSNorm/plain, F for
    for f16 in (False, True):       # SwiGLU)
        if any(("_f16" if f16 else "_int8") in v for v, _ in best):
            for input_mode, columns in ((1, D), (0, D), (2, F)):
                job, pipe = quantize_input_job(device, rng, columns, input_mode, f16)
                quantize_ms[f16, input_mode], how = time_job(device, job, pipe, iterations)
                report(job, quantize_ms[f16, input_mode], how)
    attention_ms, small_ms = 0.0, 0.0
    if not args.matvec_only:
        attention = []
        for splits, score_team in ((1, 8), (8, 8), (16, 8), (32, 8), (16, 4), (16, 16)):
            job, pipe = attention_job(device, rng, splits, rotate_bytes, score_team=score_team)
            ms, how = time_job(device, job, pipe, iterations)
            attention.append(ms)
            report(job, ms, how)
        attention_ms = min(attention)
        for job, pipe in small_jobs(device, rng) + [floor_job(device)]:
            ms, how = time_job(device, job, pipe, iterations)
            small_ms += ms if job.bytes_read else 0.0
            report(job, ms, how)
    layers = FULL_LM.num_layers
    for variant in dict.fromkeys(v for v, _ in best):
        if all((variant, name) in best for name in LM_SHAPES):
            # The int8 and f16 paths round each matvec input once (a dispatch before it).
            rounded = "_int8" in variant or "_f16" in variant
            extra = {name: quantize_ms["_f16" in variant, LM_SHAPES[name][2]] if rounded else 0.0
                     for name in LM_SHAPES}
            per_layer = sum(best[variant, name] + extra[name] for name in LM_SHAPES if name != "text_head")
            total = layers * (per_layer + attention_ms) + best[variant, "text_head"] + extra["text_head"] + small_ms
            print(f"LM step, all matrices matvec {variant}: {total:.3f} ms of kernel time ({layers} layers x "
                  f"({per_layer:.4f} matvec + {attention_ms:.4f} attention) + text head + small kernels; "
                  f"dispatch overhead and the attention combine pass not included)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
