"""The native WebGPU device (wgpu-py) and a helper to run one kernel on numpy arrays.

get_device() opens the device once, with the adapter's own limits (not the spec defaults) and the optional
features the kernels can use. run_kernel() is for tests and one-off work: the engine records whole frames itself.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from kyutai_stt.engine.host import WANTED_LIMITS
from kyutai_stt.engine.plan import INT8_DOT

# wgpu reads these when it creates its instance, so they are set before the import.
if sys.platform.startswith("linux"):
    # Only Vulkan: otherwise wgpu also enumerates a GL adapter (slow to start, never the one we want).
    os.environ.setdefault("WGPU_BACKEND_TYPE", "Vulkan")
    # Mesa warns on every start when this is unset; mkdtemp makes it 0700 as XDG requires.
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="kyutai-stt-xdg-"))

import wgpu  # noqa: E402

# wgpu logs "Forcing backend: Vulkan" as a warning on every start; forcing it is deliberate here.
logging.getLogger("wgpu").addFilter(lambda record: not record.getMessage().startswith("Forcing backend"))

KERNEL_DIR = Path(__file__).parents[1] / "kernels"

INSTALL_HINT = (
    "No WebGPU adapter found. Install a Vulkan driver: for software Vulkan (any machine, no GPU needed) run "
    "`sudo apt-get install mesa-vulkan-drivers libvulkan1`; for a GPU, install its vendor driver "
    "(with its Vulkan ICD), then run `kyutai-stt doctor` again."
)

# Optional features that select faster kernel variants; every such kernel has a fallback without them.
WANTED_FEATURES = ("shader-f16", "subgroup", "timestamp-query")


class NoAdapterError(RuntimeError):
    """No WebGPU adapter on this machine; the message says what to install."""


@cache
def get_device() -> tuple[wgpu.GPUAdapter, wgpu.GPUDevice]:
    """The high-performance adapter and a device on it (opened once per process)."""
    try:
        adapter = wgpu.gpu.request_adapter_sync(power_preference="high-performance")
    except RuntimeError as error:  # wgpu-py raises (not returns None) when there is no adapter
        raise NoAdapterError(f"{INSTALL_HINT}\n(wgpu said: {error})") from error
    if adapter is None:
        raise NoAdapterError(INSTALL_HINT)
    limits = {name: adapter.limits[name] for name in WANTED_LIMITS if name in adapter.limits}
    features = [name for name in WANTED_FEATURES if name in adapter.features]
    device = adapter.request_device_sync(
        label="kyutai-stt", required_features=features, required_limits=limits
    )
    return adapter, device


def adapter_summary() -> dict:
    """What `doctor` reports: the adapter, the limits that matter, the optional features we use."""
    adapter, device = get_device()
    info = adapter.info
    return {
        "name": info.get("device", ""),
        "description": info.get("description", ""),
        "vendor": info.get("vendor", ""),
        "backend": info.get("backend_type", ""),
        "adapter_type": info.get("adapter_type", ""),
        "limits": {name: device.limits[name] for name in WANTED_LIMITS if name in device.limits},
        "features": sorted(name for name in WANTED_FEATURES if name in device.features),
    }


# Kernel files are written for the browser (Chrome's Tint requires `enable subgroups;`); Naga rejects that
# directive ("not yet supported") yet compiles subgroup builtins without it, so it is stripped here.
# `enable f16;` is required by both compilers and is kept. Matches `enable subgroups;` and lists like
# `enable f16, subgroups;`.
_ENABLE_DIRECTIVE = re.compile(r"^[ \t]*enable\s+([\w\s,]+);[ \t]*$", re.MULTILINE)
_NAGA_UNSUPPORTED_EXTENSIONS = {"subgroups"}
# Naga cannot bitcast a u32 to vec2<f16> (a width-changing bitcast); kernels needing it call a helper whose body is
# exactly the first line below, compiled natively as the second: the same values (an f16 -> f32 -> f16 round trip is
# exact).
_NAGA_F16_BITCAST = ("    return bitcast<vec2<f16>>(word);\n", "    return vec2<f16>(unpack2x16float(word));\n")


def to_native_wgsl(source: str) -> str:
    """The same shader with the enable-extensions Naga rejects removed from its `enable` directives, and u32 ->
    vec2<f16> bitcasts written as an unpack."""

    def keep_supported(match: re.Match) -> str:
        names = [name.strip() for name in match.group(1).split(",") if name.strip()]
        kept = [name for name in names if name not in _NAGA_UNSUPPORTED_EXTENSIONS]
        return f"enable {', '.join(kept)};" if kept else ""

    return _ENABLE_DIRECTIVE.sub(keep_supported, source).replace(*_NAGA_F16_BITCAST)


def load_kernel_source(name: str) -> str:
    """kernels/<name>.wgsl, ready for Naga."""
    return to_native_wgsl((KERNEL_DIR / f"{name}.wgsl").read_text())


@dataclass(frozen=True)
class Output:
    """A storage buffer the kernel writes: read back and returned with this shape and dtype.

    fill: initial value of every element (np.nan poisons a float output so unwritten elements show);
    None leaves the buffer zeroed (WebGPU zero-initialises buffers).
    """

    shape: tuple[int, ...]
    dtype: type = np.float32
    fill: float | int | None = None


@dataclass(frozen=True)
class Uniform:
    """Bytes for a `var<uniform>` binding, e.g. Uniform(np.array([rows, length], np.uint32))."""

    data: np.ndarray | bytes


def _padded(data: bytes, multiple: int) -> bytes:
    # Buffer sizes and copies must be multiples of 4 bytes (16 for uniform structs); never 0.
    size = max(multiple, -(-len(data) // multiple) * multiple)
    return data + bytes(size - len(data))


_pipelines: dict[tuple, wgpu.GPUComputePipeline] = {}


def _pipeline(source: str, entry: str, constants: dict) -> wgpu.GPUComputePipeline:
    # Cached: the first dispatch of a pipeline JIT-compiles (0.1-0.5 s on lavapipe).
    key = (source, entry, tuple(sorted(constants.items())))
    if key not in _pipelines:
        _, device = get_device()
        module = device.create_shader_module(code=source)
        _pipelines[key] = device.create_compute_pipeline(
            layout="auto", compute={"module": module, "entry_point": entry, "constants": constants}
        )
    return _pipelines[key]


def run_shader(
    source: str,
    bindings: dict[int, np.ndarray | Uniform | Output],
    workgroups: tuple[int, int, int],
    constants: dict[str, float | int | bool] | None = None,
    entry: str = "main",
) -> dict[int, np.ndarray]:
    """Dispatch `entry` of a WGSL source (browser or native form) once, bind group 0; return the Outputs.

    bindings: binding index -> np.ndarray (uploaded storage buffer, read by the kernel), Uniform, or Output.
    Pass exactly the bindings the entry point uses: the automatic layout drops unused ones.
    """
    _, device = get_device()
    pipeline = _pipeline(to_native_wgsl(source), entry, dict(constants or {}))
    storage = wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_DST | wgpu.BufferUsage.COPY_SRC
    buffers, entries = {}, []
    for index, value in sorted(bindings.items()):
        if isinstance(value, Uniform):
            data = value.data if isinstance(value.data, bytes) else np.ascontiguousarray(value.data).tobytes()
            usage, data = wgpu.BufferUsage.UNIFORM | wgpu.BufferUsage.COPY_DST, _padded(data, 16)
        elif isinstance(value, Output):
            initial = np.zeros(value.shape, value.dtype)
            if value.fill is not None:
                initial[...] = value.fill
            usage, data = storage, _padded(initial.tobytes(), 4)
        else:
            usage, data = storage, _padded(np.ascontiguousarray(value).tobytes(), 4)
        buffers[index] = device.create_buffer_with_data(data=data, usage=usage)
        entries.append({"binding": index, "resource": {"buffer": buffers[index]}})
    bind_group = device.create_bind_group(layout=pipeline.get_bind_group_layout(0), entries=entries)

    encoder = device.create_command_encoder()
    compute_pass = encoder.begin_compute_pass()
    compute_pass.set_pipeline(pipeline)
    compute_pass.set_bind_group(0, bind_group)
    compute_pass.dispatch_workgroups(*workgroups)
    compute_pass.end()
    device.queue.submit([encoder.finish()])

    # read_buffer maps a copy made after the dispatch, so it also waits for it
    # (queue.on_submitted_work_done_sync raises TypeError in wgpu-py 0.32).
    results = {}
    for index, value in bindings.items():
        if isinstance(value, Output):
            raw = device.queue.read_buffer(buffers[index])  # padded to 4 bytes: cut to the element count
            elements = np.frombuffer(raw, value.dtype, count=int(np.prod(value.shape)))
            results[index] = elements.reshape(value.shape).copy()
    if not results:
        wait_for_gpu()
    return results


def run_kernel(name: str, bindings, workgroups, constants=None, entry: str = "main") -> dict[int, np.ndarray]:
    """run_shader() on kernels/<name>.wgsl."""
    return run_shader(load_kernel_source(name), bindings, workgroups, constants, entry)


def wait_for_gpu() -> None:
    """Block until all submitted work is done (a 4-byte read_buffer: it waits for the queue)."""
    _, device = get_device()
    marker = device.create_buffer(size=4, usage=wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.COPY_DST)
    device.queue.read_buffer(marker)


_INT8_DOT_PROBE = f"""requires {INT8_DOT};
@group(0) @binding(0) var<storage, read_write> out: array<i32>;
@compute @workgroup_size(1) fn main() {{ out[0] = dot4I8Packed(0x01020304u, 0x01010101u); }}"""


@cache
def wgsl_language_features() -> frozenset[str]:
    """The WGSL language features this device's shader compiler accepts (browsers: navigator.gpu.
    wgslLanguageFeatures). wgpu-py 0.32 reports an empty set though Naga accepts packed_4x8_integer_dot_product,
    so that one is probed by compiling a shader that uses it."""
    _, device = get_device()
    found = set(getattr(wgpu.gpu, "wgsl_language_features", ()) or ())
    if INT8_DOT not in found:
        try:
            module = device.create_shader_module(code=_INT8_DOT_PROBE)
            device.create_compute_pipeline(layout="auto", compute={"module": module, "entry_point": "main"})
            found.add(INT8_DOT)
        except Exception:  # noqa: BLE001  (wgpu-py raises its own error types for a shader it rejects)
            pass
    return frozenset(found)


def dispatch_recorder(commands: list[tuple]) -> Callable[..., None]:
    """A function (compute_pass, first=0, end=None) that records dispatches [first, end) of these (pipeline, bind
    group, workgroups [x, y, z]) into a compute pass, bind group 0 each. It calls wgpu-native's C functions directly
    with the objects' handles: wgpu-py's public methods add Python checks, an allocation, and an error-capturing
    wrapper per C call, ~10 us of a dispatch's ~12 us of CPU on the H100 machine (BENCHMARKS.md). A pass's
    validation errors are still raised, by the (wrapped) encoder.finish() (tests/test_gpu.py). The caller keeps
    the pipelines and bind groups alive. Other wgpu-py backends get the public methods."""
    try:
        from wgpu.backends.wgpu_native._ffi import ffi, lib
        handles = [(p._internal, g._internal, *workgroups) for p, g, workgroups in commands]
    except (ImportError, AttributeError):
        handles = None

    def record_public(compute_pass, first: int = 0, end: int | None = None) -> None:
        for pipeline, group, workgroups in commands[first:end]:
            compute_pass.set_pipeline(pipeline)
            compute_pass.set_bind_group(0, group)
            compute_pass.dispatch_workgroups(*workgroups)

    if handles is None:
        return record_public

    set_pipeline, set_bind_group = lib.wgpuComputePassEncoderSetPipeline, lib.wgpuComputePassEncoderSetBindGroup
    dispatch, no_offsets = lib.wgpuComputePassEncoderDispatchWorkgroups, ffi.NULL

    def record_direct(compute_pass, first: int = 0, end: int | None = None) -> None:
        encoder = compute_pass._internal
        for pipeline, group, x, y, z in handles[first:end]:
            set_pipeline(encoder, pipeline)
            set_bind_group(encoder, 0, group, 0, no_offsets)
            dispatch(encoder, x, y, z)

    return record_direct


def submitter(device) -> tuple[Callable[[object], int | None], Callable[[int | None], None]]:
    """(submit, wait_for): submit(command_buffer) submits it and returns its submission index; wait_for(index)
    blocks until that submission is done, and no later one. A frame's readback needs exactly that: wgpu-py's
    map_sync polls until the newest submission is done, so with frame n + 1 already submitted the host would wait
    for it before handing back frame n, then record frame n + 2 while the GPU idles (BENCHMARKS.md: the native
    host's step took its GPU time plus its recording). wgpu-native's C functions with the objects' handles; other
    wgpu-py backends get queue.submit and no wait (map_sync then waits as before)."""
    try:
        from wgpu.backends.wgpu_native._ffi import ffi, lib
        queue, handle = device.queue._internal, device._internal
    except (ImportError, AttributeError):
        def submit_public(command_buffer) -> None:
            device.queue.submit([command_buffer])
        return submit_public, lambda index: None

    submit_for_index, poll = lib.wgpuQueueSubmitForIndex, lib.wgpuDevicePoll

    def submit(command_buffer) -> int:
        buffers = ffi.new("WGPUCommandBuffer[1]", [command_buffer._internal])
        return int(submit_for_index(queue, 1, buffers))

    def wait_for(index: int | None) -> None:
        if index is not None:
            poll(handle, True, ffi.new("uint64_t *", index))

    return submit, wait_for


@cache
def subgroup_size() -> int:
    """The subgroup size compute pipelines get on this device (0 without the subgroup feature)."""
    _, device = get_device()
    if "subgroup" not in device.features:
        return 0
    return int(run_kernel("subgroup_size", {0: Output((1,), np.uint32)}, (1, 1, 1))[0][0])


def binding_limit() -> int:
    """The largest buffer, in bytes, this device can create and bind as storage: what a plan's buffers must fit."""
    _, device = get_device()
    return min(device.limits["max-storage-buffer-binding-size"], device.limits["max-buffer-size"])


def device_traits() -> tuple[str, tuple[str, ...], int, str, tuple[str, ...]]:
    """(adapter type, enabled features, subgroup size, description, WGSL language features): what a plan variant
    is chosen from (models/variants.py)."""
    _, device = get_device()
    summary = adapter_summary()
    return (summary["adapter_type"], tuple(sorted(device.features)), subgroup_size(), summary.get("description", ""),
            tuple(sorted(wgsl_language_features())))
