"""The native host: interprets a plan on wgpu-py. It knows nothing of the model; the plan says everything.

Per frame: write the step values and the inputs, record every dispatch of the plan into one compute pass, copy
the outputs into a staging buffer, submit. Readback is pipelined: frame n's staging buffer is mapped only after
frame n+1 is submitted (READBACK_DEPTH frames in flight), so the GPU never waits for the CPU between frames.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import wgpu

from . import gpu
from .plan import Plan

# Frames in flight before the host blocks on the oldest readback: 2 keeps the GPU busy while the CPU reads
# the previous frame's token, without letting latency grow.
READBACK_DEPTH = 2
# Uniform bindings need 16-byte multiples.
UNIFORM_ALIGN = 16

_NUMPY = {"f32": np.float32, "u32": np.uint32}
StreamReader = Callable[[str], "np.ndarray | memoryview | bytes"]


@dataclass
class FrameResult:
    frame: int
    outputs: dict[str, np.ndarray]       # role -> raw u32/f32 words as stored (the caller views them)


class Engine:
    def __init__(self, plan: Plan, read_stream: StreamReader, readback_depth: int = READBACK_DEPTH,
                 batch_readback: bool = False):
        """read_stream(name) returns the bytes of a package tensor stream (e.g. Package.stream_bytes).

        batch_readback: once readback_depth frames are in flight, read them all back at once (one wait per
        batch instead of one per frame: for files, where results may come in bursts)."""
        _, self.device = gpu.get_device()
        missing = set(plan.required_features) - set(self.device.features)
        if missing:
            raise gpu.NoAdapterError(f"the plan needs GPU features {sorted(missing)} this adapter lacks")
        missing = set(plan.required_language_features) - gpu.wgsl_language_features()
        if missing:
            raise gpu.NoAdapterError(f"the plan needs WGSL language features {sorted(missing)} this device lacks")
        self.plan = plan
        self.buffers = {b.name: self._create_buffer(b) for b in plan.buffers}
        for b in plan.buffers:
            if b.kind == "const":
                self.device.queue.write_buffer(self.buffers[b.name], 0, np.array(b.values, _NUMPY[b.dtype]))
            for source in b.sources:
                data = np.frombuffer(memoryview(read_stream(source.stream)).cast("B"), np.uint8)
                self.device.queue.write_buffer(self.buffers[b.name], source.offset, _pad4(data))
        pipelines = {p.name: self._create_pipeline(p) for p in plan.pipelines}
        self._commands = []   # (pipeline, bind group, workgroups) in dispatch order
        for d in plan.dispatches:
            pipeline = pipelines[d.pipeline]
            entries = [{"binding": i, "resource": {"buffer": self.buffers[name]}} for i, name in d.bindings.items()]
            group = self.device.create_bind_group(layout=pipeline.get_bind_group_layout(0), entries=entries)
            self._commands.append((pipeline, group, d.workgroups))
        self._record = gpu.dispatch_recorder(self._commands)
        self._staging = [{role: self.device.create_buffer(size=self.buffers[name].size,
                                                          usage=wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.COPY_DST)
                          for role, name in plan.outputs.items()} for _ in range(readback_depth)]
        self._pending: deque[int] = deque()
        self._batch_readback = batch_readback
        self.frame = 0
        self.reset()

    def _create_buffer(self, b) -> wgpu.GPUBuffer:
        usage = wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_DST | wgpu.BufferUsage.COPY_SRC
        size = b.size
        if b.kind == "step":
            usage |= wgpu.BufferUsage.UNIFORM
            size = -(-size // UNIFORM_ALIGN) * UNIFORM_ALIGN
        return self.device.create_buffer(size=size, usage=usage, label=b.name)

    def _create_pipeline(self, p) -> wgpu.GPUComputePipeline:
        module = self.device.create_shader_module(code=gpu.load_kernel_source(p.kernel), label=p.kernel)
        return self.device.create_compute_pipeline(
            layout="auto", label=p.name,
            compute={"module": module, "entry_point": p.entry, "constants": dict(p.constants)})

    def reset(self, first_frame: int = 0) -> None:
        """Start a new stream: drop frames in flight, refill state buffers, frame index back to first_frame
        (benchmarks start at a full KV ring this way)."""
        self.drain()
        for b in self.plan.buffers:
            if b.kind == "state":
                fill = np.full(b.size // 4, b.reset_fill, np.uint32)
                self.device.queue.write_buffer(self.buffers[b.name], 0, fill)
        self.frame = first_frame

    def submit(self, inputs: dict[str, np.ndarray] | None = None) -> list[FrameResult]:
        """Run one frame. Returns the results that became ready (at most one frame late; empty at first)."""
        queue = self.device.queue
        queue.write_buffer(self.buffers[self.plan.step_buffer], 0,
                           np.array(self.plan.step_values(self.frame), np.uint32))
        for role, value in (inputs or {}).items():
            queue.write_buffer(self.buffers[self.plan.inputs[role]], 0, _pad4(np.ascontiguousarray(value)))
        encoder = self.device.create_command_encoder()
        compute = encoder.begin_compute_pass()
        self._record(compute)
        compute.end()
        staging = self._staging[self.frame % len(self._staging)]
        for role, name in self.plan.outputs.items():
            encoder.copy_buffer_to_buffer(self.buffers[name], 0, staging[role], 0, staging[role].size)
        queue.submit([encoder.finish()])
        self._pending.append(self.frame)
        self.frame += 1
        if len(self._pending) < len(self._staging):
            return []
        if self._batch_readback:
            return self.drain()
        return [self._collect()]

    def drain(self) -> list[FrameResult]:
        """Wait for every frame in flight."""
        return [self._collect() for _ in range(len(self._pending))]

    def _collect(self) -> FrameResult:
        frame = self._pending.popleft()
        outputs = {}
        for role, buffer in self._staging[frame % len(self._staging)].items():
            buffer.map_sync(wgpu.MapMode.READ)
            outputs[role] = np.frombuffer(buffer.read_mapped(), np.uint32).copy()
            buffer.unmap()
        return FrameResult(frame, outputs)

    def read(self, name: str) -> np.ndarray:
        """Debugging/tests: a buffer's current contents as u32 words (waits for the GPU)."""
        return np.frombuffer(self.device.queue.read_buffer(self.buffers[name]), np.uint32).copy()


def _pad4(data: np.ndarray) -> np.ndarray:
    raw = np.frombuffer(memoryview(data).cast("B"), np.uint8) if not isinstance(data, np.ndarray) else \
        data.reshape(-1).view(np.uint8)
    return raw if raw.size % 4 == 0 else np.concatenate([raw, np.zeros(-raw.size % 4, np.uint8)])
