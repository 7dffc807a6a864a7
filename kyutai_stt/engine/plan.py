"""The plan: plain, versioned data describing one frame of GPU work. docs/plan.md documents the schema.

A model definition (models/*.py) builds a plan with PlanBuilder; a host (engine/runtime.py natively, web/runtime.js
in the browser) interprets it: create the buffers, fill weight buffers from the package's tensor streams, create the
pipelines and bind groups once, then per frame write the step values, record the dispatches in order into one
compute pass, copy the outputs to a readback buffer and submit. Nothing here depends on wgpu-py.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np

PLAN_FORMAT = "kyutai-stt-plan"
ACTIVE_FIELD = "active"         # the step field of plans of several streams: 1, or 0 for a stream sitting out
PLAN_VERSION = 1
BUFFER_KINDS = ("weight", "const", "state", "scratch", "input", "output", "step")
STEP_FIELD_TYPES = ("u32",)
PORTABLE_MAX_BINDING = 128 << 20     # bytes: WebGPU's default maxStorageBufferBindingSize
# The WGSL language feature of dot4I8Packed (the int8 path of q4 matrices): browsers list it in
# navigator.gpu.wgslLanguageFeatures, natively gpu.wgsl_language_features() probes for it.
INT8_DOT = "packed_4x8_integer_dot_product"
# A kernel constant meaning "no such step field" (e.g. ACTIVE_INDEX in a one-stream plan: every stream takes part).
NO_FIELD = 0xFFFFFFFF


@dataclass
class WeightSource:
    """Bytes of one package tensor stream (e.g. 'layers.0.attn_qkv.qs') placed at `offset` in a weight buffer."""
    stream: str
    offset: int


@dataclass
class Field:
    """A run of `count` words of one type inside a buffer: how a host reads an output (e.g. the LM's results are
    token u32 x 1, then vad f32 x heads)."""
    name: str
    dtype: str           # "u32" or "f32"
    count: int


@dataclass
class Buffer:
    name: str
    kind: str            # weight: from the package; state: kept across frames, zeroed on reset; scratch: per-frame
    size: int            # bytes, a multiple of 4
    sources: list[WeightSource] = field(default_factory=list)     # weight buffers only
    shape: list[int] = field(default_factory=list)                # informative: element shape
    dtype: str = "f32"                                            # informative: element type
    reset_fill: int = 0     # state buffers: the u32 pattern every word holds after reset (e.g. a start token)
    values: list[float] = field(default_factory=list)             # const buffers: contents, in `dtype` (f32/u32)
    fields: list[Field] = field(default_factory=list)             # output buffers: their words, in order


@dataclass
class StepField:
    """One u32 of the step buffer, computed by the host before each frame: (frame * scale + offset) % modulo
    (no modulo when 0). E.g. the LM's position is the frame index, its KV ring slot is frame % 750.
    idle: the value for a stream that sits the frame out (Plan.step_words), e.g. 0 for the "active" flag; None:
    the value at its frame, which does not advance while it sits out."""
    name: str
    scale: int = 1
    offset: int = 0
    modulo: int = 0
    idle: int | None = None

    def value(self, frame: int, active: bool = True) -> int:
        if not active and self.idle is not None:
            return self.idle
        v = frame * self.scale + self.offset
        return v % self.modulo if self.modulo else v


@dataclass
class Pipeline:
    name: str
    kernel: str                          # kernels/<kernel>.wgsl
    constants: dict[str, float | int] = field(default_factory=dict)
    entry: str = "main"


@dataclass
class Dispatch:
    pipeline: str
    bindings: dict[int, str]             # binding index (group 0) -> buffer name
    workgroups: list[int]                # [x, y, z]
    label: str = ""


@dataclass
class Stage:
    """A named run of dispatches, from dispatch `first` to the next stage's first (or the end): what a host may
    time separately (e.g. the LM step and the Mimi encoder, with GPU timestamps)."""
    name: str
    first: int


@dataclass
class Plan:
    name: str
    buffers: list[Buffer]
    pipelines: list[Pipeline]
    dispatches: list[Dispatch]
    step_buffer: str                     # name of the buffer holding the step fields, in order, one u32 each
    step_fields: list[StepField]
    inputs: dict[str, str]               # host-written per frame: role -> buffer name (e.g. "codes")
    outputs: dict[str, str]              # read back per frame: role -> buffer name (e.g. "token", "vad")
    required_features: list[str] = field(default_factory=list)
    stages: list[Stage] = field(default_factory=list)
    required_language_features: list[str] = field(default_factory=list)   # WGSL language features (INT8_DOT)
    # Independent streams computed together (docs/plan.md "Streams"): the step buffer holds field f of stream s at
    # word f * streams + s; every state, input and output buffer is stream-major, stream s owning its
    # size / streams bytes at s * size / streams; an output's fields describe one stream's part.
    streams: int = 1
    format: str = PLAN_FORMAT
    version: int = PLAN_VERSION

    def buffer(self, name: str) -> Buffer:
        return self._buffers()[name]

    def _buffers(self) -> dict[str, Buffer]:
        return {b.name: b for b in self.buffers}

    def decode(self, role: str, words) -> dict[str, list]:
        """An output's raw u32 words (as read back) -> {field name: values}, by the buffer's fields."""
        return decode_fields(self.buffer(self.outputs[role]).fields, words)

    def step_values(self, frame: int) -> list[int]:
        """The step buffer of a one-stream plan at `frame` (or of a plan whose streams are all at `frame`)."""
        return self.step_words([frame] * self.streams)

    def step_words(self, frames, active=None) -> list[int]:
        """The step buffer with stream s at frame frames[s] (frames since its reset): field-major. active[s] False:
        stream s sits this frame out (docs/plan.md "Streams"): needs the plan's "active" field."""
        if len(frames) != self.streams:
            raise ValueError(f"{len(frames)} stream frames for a plan of {self.streams} streams")
        active = [True] * self.streams if active is None else [bool(a) for a in active]
        if len(active) != self.streams:
            raise ValueError(f"{len(active)} active flags for a plan of {self.streams} streams")
        if not all(active) and not any(f.idle is not None for f in self.step_fields):
            raise ValueError(f"plan {self.name} has no {ACTIVE_FIELD!r} step field: its streams cannot sit a frame out")
        return [f.value(frame, a) for f in self.step_fields for frame, a in zip(frames, active)]

    def largest_buffer(self) -> Buffer:
        return max(self.buffers, key=lambda b: b.size)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Plan:
        raw = json.loads(text)
        if raw.get("format") != PLAN_FORMAT or raw.get("version") != PLAN_VERSION:
            raise ValueError(f"not a {PLAN_FORMAT} v{PLAN_VERSION} plan: {raw.get('format')} v{raw.get('version')}")
        return cls(
            name=raw["name"],
            buffers=[Buffer(**{**b, "sources": [WeightSource(**s) for s in b["sources"]],
                               "fields": [Field(**f) for f in b.get("fields", [])]}) for b in raw["buffers"]],
            pipelines=[Pipeline(**p) for p in raw["pipelines"]],
            dispatches=[Dispatch(**{**d, "bindings": {int(k): v for k, v in d["bindings"].items()}})
                        for d in raw["dispatches"]],
            step_buffer=raw["step_buffer"], step_fields=[StepField(**f) for f in raw["step_fields"]],
            inputs=raw["inputs"], outputs=raw["outputs"], required_features=raw["required_features"],
            stages=[Stage(**st) for st in raw.get("stages", [])],
            required_language_features=raw.get("required_language_features", []), streams=raw.get("streams", 1))

    def validate(self, max_binding_size: int | None = PORTABLE_MAX_BINDING) -> None:
        """Structural checks a host relies on: names resolve, sizes are aligned and bindable (within
        max_binding_size; None: the host checks its device's limit, see largest_buffer)."""
        buffers = self._buffers()
        if len(buffers) != len(self.buffers):
            raise ValueError("duplicate buffer names")
        for b in self.buffers:
            if b.kind not in BUFFER_KINDS:
                raise ValueError(f"buffer {b.name}: unknown kind {b.kind}")
            if b.size <= 0 or b.size % 4:
                raise ValueError(f"buffer {b.name}: size {b.size} is not a positive multiple of 4")
            if max_binding_size is not None and b.size > max_binding_size:
                raise ValueError(f"buffer {b.name}: {b.size} bytes exceeds the {max_binding_size}-byte binding limit")
            if (b.kind == "weight") != bool(b.sources):
                raise ValueError(f"buffer {b.name}: weight buffers, and only they, have sources")
            if (b.kind == "const") != bool(b.values) or len(b.values) * 4 > b.size:
                raise ValueError(f"buffer {b.name}: const buffers, and only they, have values that fit")
        pipelines = {p.name for p in self.pipelines}
        for i, d in enumerate(self.dispatches):
            if d.pipeline not in pipelines:
                raise ValueError(f"dispatch {i} ({d.label}): unknown pipeline {d.pipeline}")
            for binding, name in d.bindings.items():
                if name not in buffers:
                    raise ValueError(f"dispatch {i} ({d.label}): binding {binding} names unknown buffer {name}")
            if len(d.workgroups) != 3 or min(d.workgroups) < 1:
                raise ValueError(f"dispatch {i} ({d.label}): bad workgroup count {d.workgroups}")
        for role, name in {**self.inputs, **self.outputs, "step": self.step_buffer}.items():
            if name not in buffers:
                raise ValueError(f"{role}: unknown buffer {name}")
        for role, name in self.outputs.items():
            fields = buffers[name].fields
            if fields and (sum(f.count for f in fields) * 4 > buffers[name].size
                           or any(f.dtype not in ("u32", "f32") or f.count < 0 for f in fields)):
                raise ValueError(f"output {role}: its fields do not describe u32/f32 words inside the buffer")
        if not isinstance(self.streams, int) or isinstance(self.streams, bool) or self.streams < 1:
            raise ValueError(f"streams must be a positive integer, not {self.streams!r}")
        if buffers[self.step_buffer].size < 4 * len(self.step_fields) * self.streams:
            raise ValueError("step buffer smaller than its fields")
        for b in self.buffers:
            if b.kind in ("state", "input", "output") and b.size % (4 * self.streams):
                raise ValueError(f"buffer {b.name}: {b.size} bytes do not split into {self.streams} streams' words")
        for role, name in self.outputs.items():
            if sum(f.count for f in buffers[name].fields) * 4 * self.streams > buffers[name].size:
                raise ValueError(f"output {role}: its fields do not fit one stream's part")
        firsts = [st.first for st in self.stages]
        if firsts and (firsts[0] != 0 or firsts != sorted(set(firsts)) or firsts[-1] >= len(self.dispatches)):
            raise ValueError(f"stages must start at dispatch 0 and at increasing dispatches: {firsts}")


def decode_fields(fields: list[Field], words) -> dict[str, list]:
    """Raw u32 words -> {field name: values}: Plan.decode for a caller that looked the fields up once (per frame,
    the lookup would rebuild the plan's name index)."""
    words, out, at = np.asarray(words, np.uint32), {}, 0
    for f in fields:
        out[f.name] = words[at:at + f.count].view(np.float32 if f.dtype == "f32" else np.uint32).tolist()
        at += f.count
    return out


def decode_streams(fields: list[Field], words, streams: int) -> dict[str, np.ndarray]:
    """An output's raw words for every stream -> {field name: [streams, count] array} (decode_fields for all
    streams at once: no per-stream work on the host)."""
    rows, out, at = np.asarray(words, np.uint32).reshape(streams, -1), {}, 0
    for f in fields:
        out[f.name] = rows[:, at:at + f.count].view(np.float32 if f.dtype == "f32" else np.uint32)
        at += f.count
    return out


class PlanBuilder:
    """Accumulates buffers, deduplicated pipelines and ordered dispatches while a model definition runs."""

    def __init__(self, name: str, streams: int = 1):
        self.name = name
        self.streams = streams
        self.buffers: dict[str, Buffer] = {}
        self.pipelines: dict[tuple, Pipeline] = {}
        self.dispatches: list[Dispatch] = []
        self.step_fields: list[StepField] = []
        self.inputs: dict[str, str] = {}
        self.outputs: dict[str, str] = {}
        self.required_features: set[str] = set()
        self.required_language_features: set[str] = set()
        self.stages: list[Stage] = []

    def stage(self, name: str) -> None:
        """The dispatches appended from now on belong to stage `name` (until the next stage)."""
        self.stages.append(Stage(name, len(self.dispatches)))

    def buffer(self, name: str, kind: str, size: int, shape=(), dtype: str = "f32",
               sources: list[WeightSource] | None = None, reset_fill: int = 0, fields=()) -> str:
        """fields: (name, dtype, count) runs of words, for an output buffer."""
        if name in self.buffers:
            raise ValueError(f"buffer {name} declared twice")
        self.buffers[name] = Buffer(name, kind, _align4(size), list(sources or []), list(shape), dtype, reset_fill,
                                    fields=[Field(*f) for f in fields])
        return name

    def stream_buffer(self, name: str, kind: str, shape, dtype: str = "f32", reset_fill: int = 0, fields=()) -> str:
        """A buffer of `shape` 32-bit words for each of the builder's streams, stream-major (docs/plan.md
        "Streams"): its shape is [S, *shape], or `shape` alone in a one-stream plan."""
        per_stream = (self.streams,) if self.streams > 1 else ()
        return self.buffer(name, kind, 4 * self.streams * math.prod(shape), (*per_stream, *shape), dtype,
                           reset_fill=reset_fill, fields=fields)

    def weight(self, name: str, streams: list[tuple[str, int]], shape=(), dtype: str = "u32") -> str:
        """A weight buffer made of package streams (name, nbytes) laid end to end."""
        sources, offset = [], 0
        for stream, nbytes in streams:
            sources.append(WeightSource(stream, offset))
            offset += _align4(nbytes)
        return self.buffer(name, "weight", offset, shape, dtype, sources)

    def const(self, name: str, values, dtype: str = "f32") -> str:
        """A small buffer computed from the config (e.g. RoPE frequencies), written once at load."""
        values = [float(v) if dtype == "f32" else int(v) for v in values]
        self.buffers[name] = Buffer(name, "const", 4 * len(values), shape=[len(values)], dtype=dtype, values=values)
        return name

    def step_field(self, name: str, scale: int = 1, offset: int = 0, modulo: int = 0) -> int:
        """Declare a per-frame u32; returns its index in the step buffer."""
        self.step_fields.append(StepField(name, scale, offset, modulo))
        return len(self.step_fields) - 1

    def active_index(self) -> int:
        """ACTIVE_INDEX for a kernel that writes state kept across frames outside the rings the step fields index
        (the fed-back token, the codes): where stream 0's "active" flag sits in the step buffer (the field declared
        on first use), or NO_FIELD in a one-stream plan, whose host simply does not submit a frame it sits out."""
        if self.streams == 1:
            return NO_FIELD
        names = [f.name for f in self.step_fields]
        if ACTIVE_FIELD not in names:
            self.step_fields.append(StepField(ACTIVE_FIELD, scale=0, offset=1, idle=0))
            names.append(ACTIVE_FIELD)
        return names.index(ACTIVE_FIELD) * self.streams

    def dispatch(self, kernel: str, bindings: dict[int, str], workgroups, constants=None, label: str = "",
                 features: tuple[str, ...] = (), entry: str = "main", language_features: tuple[str, ...] = ()) -> None:
        constants = dict(constants or {})
        key = (kernel, entry, tuple(sorted(constants.items())))
        if key not in self.pipelines:
            self.pipelines[key] = Pipeline(f"{kernel}#{len(self.pipelines)}", kernel, constants, entry)
        self.required_features.update(features)
        self.required_language_features.update(language_features)
        wg = list(workgroups) + [1] * (3 - len(workgroups))
        self.dispatches.append(Dispatch(self.pipelines[key].name, dict(bindings), wg, label))

    def build(self, step_buffer: str = "step") -> Plan:
        """step_buffer: declared here, sized for the step fields, unless the model declared it."""
        if step_buffer not in self.buffers:
            words = max(4, len(self.step_fields) * self.streams)
            self.buffer(step_buffer, "step", 4 * words, (words,), "u32")
        plan = Plan(self.name, list(self.buffers.values()), list(self.pipelines.values()), self.dispatches,
                    step_buffer, self.step_fields, self.inputs, self.outputs, sorted(self.required_features),
                    self.stages, sorted(self.required_language_features), self.streams)
        # One stream: bindable on any WebGPU device (the browser's plans). Many: rings grow with the streams, and
        # the host checks its device's own limit (Engine).
        plan.validate(PORTABLE_MAX_BINDING if self.streams == 1 else None)
        return plan


def _align4(n: int) -> int:
    return (n + 3) // 4 * 4
