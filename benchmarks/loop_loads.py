"""Whether the GPU overlaps the loads of successive WGSL loop iterations, and the LM attention's two kernels alone:

    python benchmarks/loop_loads.py

One line per kernel (benchmarks/kernels.py's timing: the median of one dispatch in its own pass, then back to
back in one pass). The first kernels each sum 16 independent vec4 loads per invocation (132 workgroups of 128):
in a loop bounded by an override, by a const, written out as 16 loads, as a loop of 4 rounds of 4, with an exp
per item, and a single load for the floor. If the loops take as long as 16 dependent loads while the written-out
loads take one round, the driver does not overlap a loop's iterations (docs/architecture.md "Writing a kernel").
Then attention.wgsl's `main` and `combine_int8` at the LM's shape (16 heads of 128, 750 slots, f16 rings, 16
splits: the plan's one-stream launch).
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kyutai_stt.config import FULL_LM  # noqa: E402
from kyutai_stt.engine import device as gpu  # noqa: E402
from kyutai_stt.models.rope import rope_frequencies  # noqa: E402

# benchmarks/kernels.py's timing helpers, by path (as benchmarks/matmul.py: a bare `import kernels` is ambiguous).
_spec = importlib.util.spec_from_file_location("kernel_benchmarks", Path(__file__).with_name("kernels.py"))
_kernels = sys.modules["kernel_benchmarks"] = importlib.util.module_from_spec(_spec)   # its dataclass looks it up
_spec.loader.exec_module(_kernels)
Job, bind, buffer, pipeline = _kernels.Job, _kernels.bind, _kernels.buffer, _kernels.pipeline
time_job = _kernels.time_job

LOADS = 16
WORKGROUPS = 132     # an H100's SMs: one workgroup each
HEAD = f"""
override N: u32 = {LOADS}u;
const CN = {LOADS}u;
override THREADS: u32;
@group(0) @binding(0) var<storage, read> data: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> out: array<vec4<f32>>;
@compute @workgroup_size(128)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {{
    let i = g.x;
    var acc = vec4<f32>(0.0);
"""
BODIES = {
    "loop, override bound": "for (var k = 0u; k < N; k++) { acc += data[k * THREADS + i]; }",
    "loop, const bound": "for (var k = 0u; k < CN; k++) { acc += data[k * THREADS + i]; }",
    f"{LOADS} loads written out": "\n".join(f"let v{k} = data[{k}u * THREADS + i];" for k in range(LOADS))
                                  + "\nacc = " + " + ".join(f"v{k}" for k in range(LOADS)) + ";",
    "loop of 4 rounds of 4": "for (var k = 0u; k < N; k += 4u) { let a = data[k * THREADS + i]; "
                             "let b = data[(k + 1u) * THREADS + i]; let c = data[(k + 2u) * THREADS + i]; "
                             "let d = data[(k + 3u) * THREADS + i]; acc += a + b + c + d; }",
    "loop, exp per item": "for (var k = 0u; k < N; k++) { acc += exp(data[k * THREADS + i]); }",
    "one load": "acc = data[i];",
}


def report(label: str, ms: float, how: str) -> None:
    print(f"{label:32s} {ms * 1e3:7.2f} us alone ({how})", flush=True)


def main() -> int:
    _, device = gpu.get_device()
    iterations = 200 if gpu.adapter_summary()["adapter_type"].lower() != "cpu" else 3
    threads = WORKGROUPS * 128
    data = buffer(device, np.random.default_rng(0).standard_normal(LOADS * threads * 4).astype(np.float32))
    out = buffer(device, 16 * threads)
    for name, body in BODIES.items():
        module = device.create_shader_module(code=HEAD + body + "\n    out[i] = acc;\n}\n")
        pipe = device.create_compute_pipeline(layout="auto", compute={
            "module": module, "entry_point": "main", "constants": {"THREADS": threads}})
        job = Job(name, "", {}, (WORKGROUPS, 1, 1), bytes_read=16 * threads * LOADS)
        job.bind_groups = [bind(device, pipe, {0: data, 1: out})]
        report(name, *time_job(device, job, pipe, iterations))

    cfg, splits = FULL_LM, 16
    heads, hd, context = cfg.num_heads, cfg.head_dim, cfg.context
    dim = heads * hd
    constants = {"HEADS": heads, "HEAD_DIM": hd, "CONTEXT": context, "SPLITS": splits, "WORKGROUP_SIZE": hd,
                 "KV_F16": True}
    rng = np.random.default_rng(1)
    rings = [buffer(device, rng.standard_normal(heads * context * hd // 2).astype(np.float32)) for _ in range(2)]
    partial_out, stats = buffer(device, 4 * splits * dim), buffer(device, 8 * splits * heads)
    main_bindings = {0: buffer(device, rng.standard_normal(3 * dim).astype(np.float32)),
                     1: buffer(device, np.array([10 * context + 5], np.uint32)),     # a full ring, past many wraps
                     2: buffer(device, rope_frequencies(hd, cfg.max_period)), 3: rings[0], 4: rings[1],
                     5: partial_out, 6: stats}
    merge_bindings = {5: partial_out, 6: stats, 8: buffer(device, dim), 9: buffer(device, dim // 4)}
    for entry, workgroups, bindings in (("main", (heads, splits, 1), main_bindings),
                                        ("combine_int8", (heads, 1, 1), merge_bindings)):
        job = Job(f"attention {entry}", "attention", constants, workgroups, entry=entry)
        pipe = pipeline(device, job)
        job.bind_groups = [bind(device, pipe, bindings)]
        report(job.label, *time_job(device, job, pipe, iterations))
    return 0


if __name__ == "__main__":
    sys.exit(main())
