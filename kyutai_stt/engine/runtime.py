"""The native host: interprets a plan on wgpu-py. It knows nothing of the model; the plan says everything.

Per frame: write the step values and the inputs, record every dispatch of the plan into one compute pass, copy
the outputs into a staging buffer, submit. Readback is pipelined: frame n's staging buffer is mapped only after
frame n+1 is submitted (READBACK_DEPTH frames in flight), once frame n's own submission is done (not the newer
ones: device.submitter), so the GPU never waits for the CPU between frames.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import wgpu

from kyutai_stt.engine import device as gpu
from kyutai_stt.engine.host import READBACK_DEPTH, VARIANT_ENV
from kyutai_stt.engine.plan import Plan
from kyutai_stt.errors import UserError

# Uniform bindings need 16-byte multiples.
UNIFORM_ALIGN = 16

_NUMPY = {"f32": np.float32, "u32": np.uint32}
_PIPELINES: dict[tuple, wgpu.GPUComputePipeline] = {}     # see Engine._create_pipeline
StreamReader = Callable[[str], "np.ndarray | memoryview | bytes"]


@dataclass
class FrameResult:
    frame: int                           # submissions since reset()
    outputs: dict[str, np.ndarray]       # role -> raw u32/f32 words as stored (the caller views them), all streams
    stream_frames: tuple[int, ...] = ()  # each stream's frame index in this submission (since its own reset)
    active: tuple[bool, ...] = ()        # each stream: whether it took this frame (its outputs mean nothing if not)


class KernelCompileError(UserError, RuntimeError):
    """A kernel this device's driver (or wgpu) rejects: the message names it and the way around it."""


class DeviceLimitError(UserError, ValueError):
    """A plan this device cannot hold (a buffer past its binding limit): the message says what to change."""


class Engine:
    def __init__(self, plan: Plan, read_stream: StreamReader, readback_depth: int = READBACK_DEPTH,
                 batch_readback: bool = False):
        """read_stream(name) returns the bytes of a package tensor stream (e.g. Package.stream_bytes).

        batch_readback: once readback_depth frames are in flight, read the older half back at once (one wait per
        readback_depth / 2 frames instead of one per frame, while the GPU runs the newer half: for files, where
        results may come in bursts)."""
        _, self.device = gpu.get_device()
        missing = set(plan.required_features) - set(self.device.features)
        if missing:
            raise gpu.NoAdapterError(f"the plan needs GPU features {sorted(missing)} this adapter lacks")
        missing = set(plan.required_language_features) - gpu.wgsl_language_features()
        if missing:
            raise gpu.NoAdapterError(f"the plan needs WGSL language features {sorted(missing)} this device lacks")
        largest = plan.largest_buffer()
        limit = gpu.binding_limit()
        if largest.size > limit:
            raise DeviceLimitError(
                f"the plan's buffer {largest.name} needs {largest.size / 2**20:.0f} MiB, more than this device binds "
                f"({limit / 2**20:.0f} MiB): build it for fewer streams (files: or fewer Mimi frames a submission, "
                f"--mimi-frames)")
        self.plan = plan
        self.buffers = self._create_buffers(plan)
        for b in plan.buffers:
            if b.kind == "const":
                self.device.queue.write_buffer(self.buffers[b.name], 0, np.array(b.values, _NUMPY[b.dtype]))
            for source in b.sources:
                data = np.frombuffer(memoryview(read_stream(source.stream)).cast("B"), np.uint8)
                self.device.queue.write_buffer(self.buffers[b.name], source.offset, _pad4(data))
        pipelines = {p.name: self._create_pipeline(p) for p in plan.pipelines}
        self.commands = []    # (pipeline, bind group, workgroups) per dispatch, in order: what record() replays
        for d in plan.dispatches:
            pipeline = pipelines[d.pipeline]
            entries = [{"binding": i, "resource": {"buffer": self.buffers[name]}} for i, name in d.bindings.items()]
            group = self.device.create_bind_group(layout=pipeline.get_bind_group_layout(0), entries=entries)
            self.commands.append((pipeline, group, d.workgroups))
        self._record = gpu.dispatch_recorder(self.commands)   # wgpu-native's C calls: less Python per dispatch
        self._staging = [{role: self.device.create_buffer(size=self.buffers[name].size,
                                                          usage=wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.COPY_DST)
                          for role, name in plan.outputs.items()} for _ in range(readback_depth)]
        # Frames in flight, oldest first: (frame, stream frames, active flags, submission index)
        self._pending: deque[tuple[int, tuple[int, ...], tuple[bool, ...], int | None]] = deque()
        self._batch_readback = batch_readback
        self.frame = 0
        self.stream_frames = [0] * plan.streams
        self._submit, self._wait_for = gpu.submitter(self.device)
        self.reset()

    def _create_buffers(self, plan: Plan) -> dict[str, wgpu.GPUBuffer]:
        """Every buffer of the plan, or none: a GPU short of memory (many streams' KV rings) gets the plan's total
        and what to change, and what was allocated goes back at once."""
        buffers = {}
        try:
            for b in plan.buffers:
                buffers[b.name] = self._create_buffer(b)
        except wgpu.GPUError as error:
            for buffer in buffers.values():
                buffer.destroy()
            total = sum(b.size for b in plan.buffers)
            raise DeviceLimitError(
                f"the plan's buffers take {total / 2**30:.1f} GiB, more than this GPU could allocate (at "
                f"{b.name}: {_gpu_error_line(error)}): build it for fewer streams (f16 KV rings: or --kv-rings int8, "
                f"56 % of their memory; files: or fewer Mimi frames a submission, --mimi-frames)") from None
        return buffers

    def _create_buffer(self, b) -> wgpu.GPUBuffer:
        usage = wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_DST | wgpu.BufferUsage.COPY_SRC
        size = b.size
        if b.kind == "step":
            usage |= wgpu.BufferUsage.UNIFORM
            size = -(-size // UNIFORM_ALIGN) * UNIFORM_ALIGN
        return self.device.create_buffer(size=size, usage=usage, label=b.name)

    def _create_pipeline(self, p) -> wgpu.GPUComputePipeline:
        """Compiled once per process for each (kernel, entry, constants): the device is the process's one device,
        and a second engine (another stream, a reloaded model) then starts without recompiling (seconds per
        pipeline on CPU adapters)."""
        key = (id(self.device), p.kernel, p.entry, tuple(sorted(p.constants.items())))
        if key not in _PIPELINES:
            try:
                module = self.device.create_shader_module(code=gpu.load_kernel_source(p.kernel), label=p.kernel)
                _PIPELINES[key] = self.device.create_compute_pipeline(
                    layout="auto", label=p.name,
                    compute={"module": module, "entry_point": p.entry, "constants": dict(p.constants)})
            except wgpu.GPUError as error:
                raise KernelCompileError(
                    f"kernel {p.kernel} ({p.name}) does not compile on this GPU ({_gpu_error_line(error)}). Run with "
                    f"{VARIANT_ENV}=gpu (the portable kernels; cpu on a CPU adapter) to do without this "
                    f"device's fast paths, and please report the adapter `kyutai-stt doctor` names") from None
        return _PIPELINES[key]

    def reset(self, first_frame: int = 0) -> None:
        """Start a new stream: drop frames in flight, refill state buffers, frame index back to first_frame
        (benchmarks start at a full KV ring this way)."""
        self.drain()
        self._refill_state(None)
        self.frame = first_frame
        self.stream_frames = [first_frame] * self.plan.streams

    def reset_stream(self, stream: int, first_frame: int = 0) -> None:
        """Start stream `stream` anew while the others go on: its part of every state buffer refilled (queued
        after the frames already submitted, before the next), its frame index back to first_frame. Results of its
        frames still in flight belong to its previous run (FrameResult.stream_frames tells them apart)."""
        self._check_stream(stream)
        self._refill_state(stream)
        self.stream_frames[stream] = first_frame

    def _refill_state(self, stream: int | None) -> None:
        """Every state buffer (or stream `stream`'s part of it) back to its reset_fill, queued in submission order.
        Zero fills are cleared on the GPU (a stream's KV rings are ~100 MB for the 1B: no host copy of them);
        the others (a few words: start tokens) are written."""
        encoder = self.device.create_command_encoder()
        for b in self.plan.buffers:
            if b.kind != "state":
                continue
            part = b.size if stream is None else b.size // self.plan.streams
            offset = 0 if stream is None else stream * part
            if b.reset_fill == 0:
                encoder.clear_buffer(self.buffers[b.name], offset, part)
            else:
                self.device.queue.write_buffer(self.buffers[b.name], offset,
                                               np.full(part // 4, b.reset_fill, np.uint32))
        self.device.queue.submit([encoder.finish()])

    def write_input(self, role: str, value: np.ndarray, stream: int | None = None) -> None:
        """Write an input now, queued before the next frame: the whole buffer, or stream `stream`'s part (e.g. one
        stream's text prompt at its first frame while the others go on)."""
        buffer = self.buffers[self.plan.inputs[role]]        # inputs keep the plan's size (only `step` grows)
        data = _pad4(np.ascontiguousarray(value))
        offset, room = 0, buffer.size
        if stream is not None:
            self._check_stream(stream)
            room = buffer.size // self.plan.streams
            offset = stream * room
        if data.size > room:
            raise ValueError(f"input {role}: {data.size} bytes for {room}")
        self.device.queue.write_buffer(buffer, offset, data)

    def _check_stream(self, stream: int) -> None:
        if not 0 <= stream < self.plan.streams:
            raise ValueError(f"stream {stream} of a plan of {self.plan.streams} streams")

    def submit(self, inputs: dict[str, np.ndarray] | None = None, active=None) -> list[FrameResult]:
        """Run one frame. Returns the results that became ready (at most one frame late; empty at first).

        active: per stream, whether it takes this frame (default: all). A stream sitting it out (a live caller
        whose audio has not come) keeps its state and frame index, as if the frame had not happened for it; its
        inputs are ignored and its outputs in this frame's result mean nothing. A frame no stream takes is not
        submitted at all (returns [])."""
        active = tuple(True for _ in self.stream_frames) if active is None else tuple(bool(a) for a in active)
        step = np.array(self.plan.step_words(self.stream_frames, active), np.uint32)   # checks active's length
        if not any(active):
            return []
        queue = self.device.queue
        queue.write_buffer(self.buffers[self.plan.step_buffer], 0, step)
        for role, value in (inputs or {}).items():
            self.write_input(role, value)
        encoder = self.device.create_command_encoder()
        self.record(encoder)
        staging = self._staging[self.frame % len(self._staging)]
        for role, name in self.plan.outputs.items():
            encoder.copy_buffer_to_buffer(self.buffers[name], 0, staging[role], 0, staging[role].size)
        self._pending.append((self.frame, tuple(self.stream_frames), active, self._submit(encoder.finish())))
        self.frame += 1
        self.stream_frames = [f + a for f, a in zip(self.stream_frames, active)]
        if len(self._pending) < len(self._staging):
            return []
        if self._batch_readback:
            return [self._collect() for _ in range(max(1, len(self._pending) // 2))]
        return [self._collect()]

    def record(self, encoder, first: int = 0, end: int | None = None, timestamps=None) -> None:
        """Record dispatches [first, end) of the frame (all by default) into one compute pass of `encoder`, as
        submit() does; timestamps: (query set, index): the pass writes its begin and end at index, index + 1."""
        writes = None if timestamps is None else {"query_set": timestamps[0], "beginning_of_pass_write_index":
                                                  timestamps[1], "end_of_pass_write_index": timestamps[1] + 1}
        compute = encoder.begin_compute_pass(timestamp_writes=writes) if writes else encoder.begin_compute_pass()
        self._record(compute, first, end)
        compute.end()

    def gpu_times(self, frames: int = 1, spans: list[tuple[int, int | None]] | None = None) -> list[list[float]]:
        """GPU milliseconds of each span of dispatches (default: the whole frame) for each of `frames` frames at
        the current step values, from timestamp queries (needs the timestamp-query feature). The frames are timed,
        not submitted as a stream: state buffers advance, the frame index does not."""
        if "timestamp-query" not in self.device.features:
            raise gpu.NoAdapterError("GPU timing needs the timestamp-query feature, which this device lacks")
        spans = spans or [(0, None)]
        count = 2 * frames * len(spans)
        queries = self.device.create_query_set(type="timestamp", count=count)
        encoder = self.device.create_command_encoder()
        for f in range(frames):
            for s, (first, end) in enumerate(spans):
                self.record(encoder, first, end, (queries, 2 * (f * len(spans) + s)))
        resolved = self.device.create_buffer(size=8 * count, usage=wgpu.BufferUsage.QUERY_RESOLVE
                                             | wgpu.BufferUsage.COPY_SRC)
        encoder.resolve_query_set(queries, 0, count, resolved, 0)
        self.device.queue.write_buffer(self.buffers[self.plan.step_buffer], 0,
                                       np.array(self.plan.step_words(self.stream_frames), np.uint32))
        self.device.queue.submit([encoder.finish()])
        stamps = np.frombuffer(self.device.queue.read_buffer(resolved), np.uint64).reshape(frames, len(spans), 2)
        return ((stamps[..., 1] - stamps[..., 0]).astype(np.float64) / 1e6).tolist()

    def dispatch_times(self, repeats: int = 3) -> list[float]:
        """GPU milliseconds of each of the plan's dispatches, in plan order: the mean of `repeats` timed frames, each
        dispatch in a pass of its own (so the sum exceeds the frame's time by a pass's overhead per dispatch)."""
        count = len(self.plan.dispatches)
        times = np.array(self.gpu_times(repeats, [(i, i + 1) for i in range(count)]))
        return times.mean(axis=0).tolist()

    def dispatch_profile(self, group) -> dict[str, float]:
        """dispatch_times summed by group(label) of each dispatch, slowest group first."""
        return grouped_times(self.plan, self.dispatch_times(), group)

    def stage_times(self, frames: int = 1) -> dict[str, float]:
        """Mean GPU milliseconds per plan stage (e.g. {"lm": ..., "mimi": ...}) over `frames` timed frames."""
        stages = self.plan.stages or []
        if not stages:
            return {"frame": float(np.mean(self.gpu_times(frames)))}
        spans = [(st.first, nxt.first if nxt else None) for st, nxt in zip(stages, [*stages[1:], None])]
        times = np.array(self.gpu_times(frames, spans))
        return {st.name: float(times[:, i].mean()) for i, st in enumerate(stages)}

    def drain(self) -> list[FrameResult]:
        """Wait for every frame in flight."""
        return [self._collect() for _ in range(len(self._pending))]

    def _collect(self) -> FrameResult:
        frame, stream_frames, active, index = self._pending.popleft()
        self._wait_for(index)     # this frame's submission only, not the newer ones
        outputs = {}
        for role, buffer in self._staging[frame % len(self._staging)].items():
            buffer.map_sync(wgpu.MapMode.READ)
            outputs[role] = np.frombuffer(buffer.read_mapped(), np.uint32).copy()
            buffer.unmap()
        return FrameResult(frame, outputs, stream_frames, active)

    def read(self, name: str) -> np.ndarray:
        """Debugging/tests: a buffer's current contents as u32 words (waits for the GPU)."""
        return np.frombuffer(self.device.queue.read_buffer(self.buffers[name]), np.uint32).copy()


def grouped_times(plan: Plan, times: list[float], group) -> dict[str, float]:
    """Per-dispatch times (plan order; this engine's or another host's) summed by group(label), slowest first."""
    totals: dict[str, float] = {}
    for d, ms in zip(plan.dispatches, times, strict=True):
        totals[group(d.label)] = totals.get(group(d.label), 0.0) + ms
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def _gpu_error_line(error: Exception) -> str:
    """The informative line of a wgpu error ("Shader '' parsing error: ..." rather than "Validation Error")."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return next((line for line in lines if "error:" in line.lower()), lines[-1] if lines else type(error).__name__)


def _pad4(data: np.ndarray) -> np.ndarray:
    raw = np.frombuffer(memoryview(data).cast("B"), np.uint8) if not isinstance(data, np.ndarray) else \
        data.reshape(-1).view(np.uint8)
    return raw if raw.size % 4 == 0 else np.concatenate([raw, np.zeros(-raw.size % 4, np.uint8)])
