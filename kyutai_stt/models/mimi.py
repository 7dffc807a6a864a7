"""The Mimi encode path, defined once: 1920 samples of 24 kHz PCM in, 32 codes out, as plan dispatches.

The network is moshi 0.2.13's streaming MimiModel encode (docs/mimi.md; numpy twin: kyutai_stt/reference/mimi.py):
SEANet (conv_in, 4 stages of residual block + strided conv, conv_out) at 24 kHz -> 25 Hz, the 8-layer transformer
on the frame's 2 steps, the 25 -> 12.5 Hz downsample, the rvq_in projection and the split RVQ.

How it maps to kernels (all buffers are named `mimi.*`):
- Activations are time-major ([T, C], channels contiguous). Every conv and linear layer is one conv1d.wgsl
  dispatch: the window of output step t is one contiguous run of k * C_in floats, and the package stores convs as
  [C_out, k * C_in] k-major matrices (docs/weights.md), so a conv is a matrix times a strided set of windows.
- Conv histories (the last k - stride input rows, zero at reset) cost no dispatch: an activation that a conv reads
  with history P lives in a state buffer of two regions of (P + T) rows; at frame n the producer writes its T rows
  after the P history rows of region n % 2, and also its last P rows to the front of region (n + 1) % 2, which is
  what frame n + 1 reads. The frame's parity is a step field.
- ELU is fused into the consumer (res_conv1 reads ELU(x)) or the producer (values only ever read through an ELU
  are stored ELU'd); LayerNorm + the QKV projection are fused into the attention kernel (attention_chunk.wgsl:
  each workgroup projects its own head), LayerNorm into FFN-in, GELU into FFN-in's output, LayerScale and the
  residual adds into the output projections: 4 dispatches per layer.
- Transformer: the frame's 2 steps run together (batch of 2: each weight is read once per frame), attention over a
  ring KV cache of 250 slots written for both steps before either attends (moshi's streaming semantics).
- RVQ: one dispatch per level (the two groups' first levels share one), each rebuilding its residual from the
  chosen codes, then a resolve; codes land as u32 in the `codes` buffer the LM step reads.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from kyutai_stt.config import MIMI, MimiConfig
from kyutai_stt.engine.plan import Plan, PlanBuilder
from kyutai_stt.models.rope import rope_frequencies
from kyutai_stt.weights.quant import FORMATS

INPUT_PLAIN, INPUT_ELU, INPUT_LAYER_NORM = 0, 1, 2
OUTPUT_PLAIN, OUTPUT_ELU, OUTPUT_GELU = 0, 1, 2
PCM_HISTORY_REGION = 8         # floats per region of the PCM history (kernel_size - 1 = 6 used)
CONV_PCM_MAX_TAPS = 8          # conv1d_pcm.wgsl MAX_TAPS
STEPS_PER_FRAME = 2            # transformer steps per 80 ms frame (25 Hz)
TUNINGS = ("gpu", "gpu-many", "cpu")   # work splits: see _tiling
# Plans of this many streams or more take the "gpu-many" split in place of "gpu" (split_for_streams): conv1d.wgsl's
# `tiled` entry point for every layer (the LayerNorm one computes its statistics per tile). The split is the same
# for every such plan, so a stream's results do not depend on how many streams there are past it. On an H100 it is
# 2.0x faster at 64 streams, 2.9x at 256 (BENCHMARKS.md).
MANY_STREAMS = 16
# The "cpu" work splits' sizes (software adapters: lavapipe, SwiftShader; measured in docs/testing.md):
CPU_CONV_WORKGROUP = 64        # conv1d invocations per workgroup
CPU_ATTENTION_WORKGROUP = 64   # attention_chunk invocations per workgroup
CPU_RVQ = (64, 1, 4)           # rvq: workgroup size, threads per entry, entries per thread
RVQ_TILE = 64                  # rvq.wgsl `tiled` ("gpu-many"): entries and streams per workgroup
# "gpu-many": the layers of at most SPLIT_STEPS steps a frame (the last downsampling conv, conv_out, the transformer,
# the downsample) have few columns (streams x 1-2), so few workgroups, each summing all of K in slices of 32: they
# cut K into ranges summed apart and added by conv1d.wgsl `tiled_combine`. As many ranges of at least SPLIT_COLUMNS
# columns as K holds (at most MAX_K_SPLITS), and at least enough (of at least MIN_SPLIT_COLUMNS) for SPLIT_ROW_TILES
# workgroups per 64 columns. A rule on the layer's shape alone: a stream's results never depend on how many streams
# or frames run beside it (BENCHMARKS.md: the measurement).
SPLIT_STEPS = 2
SPLIT_COLUMNS = 512
MIN_SPLIT_COLUMNS = 256
SPLIT_ROW_TILES = 16
MAX_K_SPLITS = 16
CONV_COMBINE_WORKGROUP = 64    # conv1d.wgsl COMBINE_WORKGROUP
# "gpu-many": grids of at least this many workgroups take slices of 16 columns (conv1d.wgsl TILE_K; 32 below): half
# the workgroup memory lets more workgroups share an SM, and on long grids that pays for twice the barriers; short
# ones lose more to the barriers (BENCHMARKS.md: 256 streams 8.62 -> 8.38 ms with 16 everywhere, 64 streams 4.17 ->
# 4.36). Slices never change the order of the sums: the same bits either way, whatever the streams.
SHORT_SLICE_WORKGROUPS = 1024
# The splits whose attention takes q, k, v from a LayerNorm + QKV product of its own (conv1d.wgsl) instead of
# computing each head's in attention_chunk.wgsl `main`.
QKV_APART = ("gpu-many",)


@dataclass
class MimiFragment:
    """What build_mimi added to the builder: the names a caller wires, and the step-field indices."""
    pcm: str
    codes: str
    latent: str
    position_field: int
    parity_field: int
    dispatches: int = 0
    buffers: list[str] = field(default_factory=list)


@dataclass
class _Act:
    """An activation buffer region: rows of `channels` floats; `history` rows precede the frame's `steps` rows
    in each of the 2 regions (or a single region without history)."""
    name: str
    channels: int
    steps: int
    history: int = 0

    @property
    def region(self) -> int:
        return (self.history + self.steps) * self.channels if self.history else 0


class _MimiBuilder:
    def __init__(self, b: PlanBuilder, tensors: Mapping[str, Mapping], cfg: MimiConfig, step_buffer: str,
                 ring: int | None, codes_offset: int, tuning: str, frames: int = 1):
        if tuning not in TUNINGS:
            raise ValueError(f"unknown tuning {tuning!r}: one of {', '.join(TUNINGS)}")
        if not isinstance(frames, int) or frames < 1:
            raise ValueError(f"frames must be a positive integer, not {frames!r}")
        self.b, self.tensors, self.cfg, self.step, self.tuning = b, tensors, cfg, step_buffer, tuning
        self.frames = frames
        self.ring = ring or cfg.context
        self.codes_offset = codes_offset
        self.streams = b.streams
        self.floats: dict[str, int] = {}     # a state or scratch buffer's floats per stream (its stream stride)
        self.weights: dict[str, str] = {}
        self.start = len(b.dispatches)
        self.names: list[str] = []

    # ---- buffers -------------------------------------------------------------------------------------------
    def buffer(self, name, kind, floats, shape=(), dtype="f32", reset_fill=0) -> str:
        """A buffer of `floats` words per stream (shape: one stream's), stream-major for several streams."""
        self.names.append(name)
        self.floats[name] = int(floats)
        n = self.streams
        return self.b.buffer(name, kind, 4 * n * int(floats), (n, *shape) if n > 1 else shape, dtype,
                             reset_fill=reset_fill)

    def per_stream(self, **strides: int) -> dict[str, int]:
        """Kernel constants locating each stream's part of its buffers: none for one stream (same pipelines)."""
        return strides if self.streams > 1 else {}

    def act(self, name: str, channels: int, steps: int, history: int = 0, kind: str | None = None) -> _Act:
        a = _Act(f"mimi.{name}", channels, steps, history)
        size = 2 * a.region if history else steps * channels
        self.buffer(a.name, kind or ("state" if history else "scratch"), size,
                    (2, history + steps, channels) if history else (steps, channels))
        return a

    def weight(self, *tensor_names: str) -> str:
        """One weight buffer holding the given tensors' streams back to back (e.g. a LayerNorm's weight + bias),
        or, for one quantised matrix, its `qs` (or `w`) stream. Returns the buffer name."""
        key = "+".join(tensor_names)
        if key in self.weights:
            return self.weights[key]
        streams = []
        for t in tensor_names:
            entry = self.tensors[t]
            for stream_key in (("qs",) if "qs" in entry["streams"] else ("w",)):
                streams.append((f"{t}.{stream_key}", int(entry["streams"][stream_key]["nbytes"])))
        name = streams[0][0] if len(streams) == 1 else key
        self.names.append(name)
        self.weights[key] = self.b.weight(name, streams, tuple(self.tensors[tensor_names[0]]["shape"]), "u32")
        return self.weights[key]

    def scales(self, tensor: str) -> str:
        """The `d` stream of a q4/q8 matrix as a buffer, or (f32/f16: unused by the kernel) its weight buffer."""
        entry = self.tensors[tensor]
        if "d" not in entry["streams"]:
            return self.weight(tensor)
        key = f"{tensor}.d"
        if key not in self.weights:
            self.names.append(key)
            self.weights[key] = self.b.weight(key, [(key, int(entry["streams"]["d"]["nbytes"]))],
                                              tuple(entry["streams"]["d"]["shape"]), "f16")
        return self.weights[key]

    def fmt(self, tensor: str) -> int:
        return FORMATS[self.tensors[tensor]["quant"]]

    # ---- dispatches ----------------------------------------------------------------------------------------
    def conv(self, label: str, tensor: str, x: _Act, y: _Act, stride: int = 1, *, input_mode=INPUT_PLAIN,
             output_mode=OUTPUT_PLAIN, bias: str | None = None, scale: str | None = None, norm: tuple | None = None,
             residual: _Act | None = None, accumulate=False, replicate=False) -> None:
        c_out, k = (int(v) for v in self.tensors[tensor]["shape"])
        c_in = x.channels
        assert k % c_in == 0 and k % 32 == 0 and c_in % 4 == 0, (label, k, c_in)
        assert y.channels == c_out and x.steps == y.steps * stride, (label, x, y, stride)
        t_out = y.steps
        tiling = _tiling(t_out, c_out, k, self.tuning, self.streams, input_mode, self.frames)
        constants = {"FORMAT": self.fmt(tensor), "C_OUT": c_out, "K": k, "C_IN": c_in, "T_OUT": t_out,
                     "STRIDE": stride, "X_REGION": x.region, "X_HISTORY": x.history, "REPLICATE": replicate,
                     "Y_REGION": y.region, "Y_HISTORY": y.history, "INPUT_MODE": input_mode,
                     "OUTPUT_MODE": output_mode, "HAS_BIAS": bias is not None, "HAS_SCALE": scale is not None,
                     "HAS_RESIDUAL": residual is not None, "ACCUMULATE": accumulate,
                     "EPS": self.cfg.layer_norm_eps, "PARITY_INDEX": self.parity * self.streams,
                     "POSITION_INDEX": self.position * self.streams, **tiling["constants"],
                     **self.per_stream(X_STREAM=self.floats[x.name], Y_STREAM=self.floats[y.name])}
        if residual is not None:
            assert residual.channels == c_out
            constants |= {"R_REGION": residual.region, "R_ROW": residual.history,
                          **self.per_stream(R_STREAM=self.floats[residual.name])}
        constants = {k_: v for k_, v in constants.items() if v not in (0, False) or k_ in ("FORMAT",)}
        # One params buffer per dispatch, at offset 0 (so layers share pipelines): the LayerNorm's weight + bias,
        # the conv's bias or the LayerScale; unused: bind x (read-only here too).
        assert sum(v is not None for v in (bias, scale, norm)) <= 1, label
        params = self.weight(*(norm or [t for t in (bias, scale) if t])) if (norm or bias or scale) else x.name
        bindings = {0: self.weight(tensor), 1: self.scales(tensor), 2: x.name, 3: y.name, 4: params,
                    5: residual.name if residual is not None else x.name, 6: self.step}
        splits = constants.get("K_SPLITS", 1)
        if tiling["entry"] == "tiled":
            bindings[7] = self.conv_partials(splits * self.streams * t_out * c_out if splits > 1 else 1)
        self.b.dispatch("conv1d", bindings, tiling["workgroups"], constants, label=f"mimi.{label}",
                        entry=tiling["entry"])
        if splits > 1:
            self.b.dispatch("conv1d", {i: bindings[i] for i in (3, 4, 5, 6, 7)},
                            (math.ceil(c_out / CONV_COMBINE_WORKGROUP), self.streams * t_out, 1), constants,
                            label=f"mimi.{label}", entry="tiled_combine")

    def conv_partials(self, floats: int) -> str:
        """conv1d.wgsl `tiled`'s partial sums (f32[K_SPLITS, streams * steps, C_OUT]): one scratch buffer for every
        layer, as large as the largest needs (at least a word: layers without ranges bind it unused)."""
        name = "mimi.conv_partials"
        if name not in self.b.buffers:
            self.names.append(name)
            self.b.buffer(name, "scratch", 4 * floats, (floats,))
        buffer = self.b.buffers[name]
        buffer.size = max(buffer.size, 4 * floats)
        buffer.shape = [buffer.size // 4]
        return name

    # ---- the network ---------------------------------------------------------------------------------------
    def build(self, pcm: str, codes: str) -> MimiFragment:
        cfg, b = self.cfg, self.b
        frames = self.frames
        self.position = b.step_field("mimi.position", scale=STEPS_PER_FRAME * frames)
        self.parity = b.step_field("mimi.parity", modulo=2)
        frame = cfg.frame_size * frames     # the samples of one submission
        stages = [(cfg.n_filters * 2 ** s, r) for s, r in enumerate(reversed(cfg.ratios))]
        res_history = cfg.residual_kernel_size - 1

        # conv_in on raw PCM with its own 6-sample history.
        assert b.buffers[pcm].size == 4 * self.streams * frame, "pcm: frames * frame_size floats per stream"
        pcm_history = self.buffer("mimi.pcm_history", "state", 2 * PCM_HISTORY_REGION, (2, PCM_HISTORY_REGION))
        steps = frame
        x = self.act("stage0.in", stages[0][0], steps, res_history)
        c_out, taps = (int(v) for v in self.tensors["mimi.conv_in"]["shape"])
        steps_per_workgroup = 16
        assert self.tensors["mimi.conv_in"]["quant"] == "f32" and taps - 1 <= PCM_HISTORY_REGION
        assert taps <= CONV_PCM_MAX_TAPS, "conv1d_pcm.wgsl's constraint"
        b.dispatch("conv1d_pcm", {0: self.weight("mimi.conv_in"), 1: self.weight("mimi.conv_in.bias"), 2: pcm,
                                  3: pcm_history, 4: x.name, 5: self.step},
                   (math.ceil(frame / steps_per_workgroup), 1, self.streams),
                   {"C_OUT": c_out, "TAPS": taps, "FRAME": frame, "HISTORY_REGION": PCM_HISTORY_REGION,
                    "Y_REGION": x.region, "Y_HISTORY": x.history, "PARITY_INDEX": self.parity * self.streams,
                    "STEPS_PER_WORKGROUP": steps_per_workgroup, "WORKGROUP_SIZE": 64,
                    **self.per_stream(PCM_STREAM=frame, HISTORY_STREAM=2 * PCM_HISTORY_REGION,
                                      Y_STREAM=self.floats[x.name])}, label="mimi.conv_in")

        for s, (c, r) in enumerate(stages):
            p = f"mimi.blocks.{s}."
            hidden = self.act(f"stage{s}.hidden", c // self.cfg.compress, steps)    # ELU(res_conv1(ELU(x)))
            self.conv(f"blocks.{s}.res_conv1", p + "res_conv1", x, hidden, input_mode=INPUT_ELU,
                      output_mode=OUTPUT_ELU, bias=p + "res_conv1.bias")
            block_out = self.act(f"stage{s}.out", c, steps, r)                      # ELU(x + res_conv2(hidden))
            self.conv(f"blocks.{s}.res_conv2", p + "res_conv2", hidden, block_out, output_mode=OUTPUT_ELU,
                      bias=p + "res_conv2.bias", residual=x)
            steps //= r
            last = s == len(stages) - 1
            nxt = self.act("conv_out.in" if last else f"stage{s + 1}.in", 2 * c, steps,
                           cfg.last_kernel_size - 1 if last else res_history)
            self.conv(f"blocks.{s}.down", p + "down", block_out, nxt, r,
                      output_mode=OUTPUT_ELU if last else OUTPUT_PLAIN, bias=p + "down.bias")
            x = nxt

        d = cfg.dimension
        assert steps == STEPS_PER_FRAME * frames, steps
        h = self.act("x", d, steps)                                                 # the residual stream
        self.conv("conv_out", "mimi.conv_out", x, h, bias="mimi.conv_out.bias")

        att = self.act("attention", d, steps)
        projected = self.act("qkv", 3 * d, steps) if self.tuning in QKV_APART else None    # [steps, q | k | v]
        ffn = self.act("ffn", cfg.dim_feedforward, steps)
        stride = cfg.downsample_stride
        ds_in = self.act("downsample.in", d, steps, int(self.tensors["mimi.downsample"]["shape"][1]) // d - stride)
        hd = d // cfg.num_heads
        freqs = b.const("mimi.rope_freqs", rope_frequencies(hd, cfg.max_period))
        self.names.append(freqs)
        for i in range(cfg.num_layers):
            p = f"mimi.layers.{i}."
            kv = self.buffer(f"mimi.layers.{i}.kv_cache", "state", 2 * cfg.num_heads * self.ring * hd,
                             (2, cfg.num_heads, self.ring, hd))
            qkv = p + "attn_qkv"
            constants = {"FORMAT": self.fmt(qkv), "HEADS": cfg.num_heads, "HEAD_DIM": hd, "STEPS": STEPS_PER_FRAME,
                         "RING": self.ring, "CONTEXT": cfg.context, "POSITION_INDEX": self.position * self.streams,
                         "EPS": cfg.layer_norm_eps,
                         "WORKGROUP_SIZE": CPU_ATTENTION_WORKGROUP if self.tuning == "cpu" else 256}
            if self.tuning in QKV_APART:   # LayerNorm + QKV as one product for every stream, then attention
                self.conv(f"layers.{i}.attn_qkv", qkv, h, projected, input_mode=INPUT_LAYER_NORM,
                          norm=(p + "attn_norm", p + "attn_norm.bias"))
                entry, inputs = "given_qkv", {8: projected.name}
            else:
                entry, inputs = "main", {0: self.weight(qkv), 1: self.scales(qkv), 2: h.name,
                                         3: self.weight(p + "attn_norm", p + "attn_norm.bias")}
            for f in range(frames):     # one frame's chunk of steps a dispatch, in order (attention_chunk.wgsl)
                rows = {"ROWS": steps, "FIRST_ROW": STEPS_PER_FRAME * f} if frames > 1 else {}
                b.dispatch("attention_chunk", {**inputs, 4: self.step, 5: freqs, 6: kv, 7: att.name},
                           (cfg.num_heads, STEPS_PER_FRAME, self.streams), {**constants, **rows},
                           label=f"mimi.layers.{i}.attention", entry=entry)
            self.conv(f"layers.{i}.attn_out", p + "attn_out", att, h, scale=p + "attn_scale", accumulate=True)
            self.conv(f"layers.{i}.ffn_in", p + "ffn_in", h, ffn, input_mode=INPUT_LAYER_NORM,
                      output_mode=OUTPUT_GELU, norm=(p + "ffn_norm", p + "ffn_norm.bias"))
            if i < cfg.num_layers - 1:
                self.conv(f"layers.{i}.ffn_out", p + "ffn_out", ffn, h, scale=p + "ffn_scale", accumulate=True)
            else:   # the last layer writes the downsample's input (with its history) instead
                self.conv(f"layers.{i}.ffn_out", p + "ffn_out", ffn, ds_in, scale=p + "ffn_scale", residual=h)

        latent = self.act("latent", d, frames)
        self.conv("downsample", "mimi.downsample", ds_in, latent, stride, replicate=True)
        proj = self.act("rvq_proj", int(self.tensors["mimi.rvq_in"]["shape"][0]), frames)
        self.conv("rvq_in", "mimi.rvq_in", latent, proj)
        self.rvq(proj, codes)
        return MimiFragment(pcm, codes, latent.name, self.position, self.parity,
                            len(b.dispatches) - self.start, self.names)

    def rvq(self, proj: _Act, codes: str) -> None:
        """rvq.wgsl: one dispatch per level (the two groups' first levels together), then a resolve. (One
        workgroup per group running all its levels in one dispatch was measured 4.7x slower on an H100 and 1.3x
        on lavapipe: a level's 2048 x 256 scores need more than one workgroup.) "gpu-many": the levels take the
        `tiled` entry point, every codebook entry decoded once per 64 streams. Several frames a submission: each
        (stream, frame) is one row, quantised as a stream of its own (rows = streams * frames)."""
        cfg, rows = self.cfg, self.streams * self.frames
        books = "mimi.codebooks"
        dim = int(self.tensors[books]["shape"][1])
        # gpu: teams of 8 split each entry's 256 dims (32 workgroups); cpu: whole dot products (8 workgroups).
        workgroup, threads_per_entry, entries_per_thread = CPU_RVQ if self.tuning == "cpu" else (256, 8, 2)
        entries = workgroup // threads_per_entry * entries_per_thread
        blocks = cfg.bins // entries
        assert cfg.bins % entries == 0
        self.codes_stride = self.b.buffers[codes].size // (4 * rows)     # the caller's codes per row
        partials = self.buffer("mimi.rvq_partials", "scratch", 2 * cfg.n_q * blocks * self.frames,
                               (self.frames, cfg.n_q, blocks, 2), "u32")
        residuals = self.buffer("mimi.rvq_residuals", "scratch", cfg.n_q * dim * self.frames,
                                (self.frames, cfg.n_q, dim))
        # A stream sitting a frame out keeps its codes (ACTIVE_INDEX); plans of several frames have no such field.
        rows_of = {"CODES_STRIDE": self.codes_stride} if rows > 1 else {}
        if self.streams > 1 and self.frames == 1:
            rows_of["ACTIVE_INDEX"] = self.b.active_index()
        common = {"FORMAT": self.fmt(books), "DIM": dim, "BINS": cfg.bins, "LEVELS": cfg.n_q, "SEMANTIC": 1,
                  "CODES_OFFSET": self.codes_offset, "WORKGROUP_SIZE": workgroup,
                  "THREADS_PER_ENTRY": threads_per_entry, "ENTRIES_PER_THREAD": entries_per_thread, **rows_of}
        bindings = {0: self.weight(books), 1: self.scales(books), 2: self.weight("mimi.codebook_sqnorms"),
                    3: proj.name, 4: partials, 5: codes, 6: residuals, 7: self.step}
        tiled = self.tuning == "gpu-many"       # 64 entries x 64 streams a workgroup (rvq.wgsl `tiled`)
        assert not tiled or entries == RVQ_TILE
        for level in range(1, cfg.n_q):
            label = f"mimi.rvq.level{level}" + ("+0" if level == 1 else "")
            if tiled:
                self.b.dispatch("rvq", bindings, (blocks, math.ceil(rows / RVQ_TILE), 2 if level == 1 else 1),
                                {**common, "LEVEL": level, "STREAMS": rows}, label=label, entry="tiled")
            else:
                self.b.dispatch("rvq", bindings, (blocks, 2 if level == 1 else 1, rows),
                                {**common, "LEVEL": level}, label=label)
        self.b.dispatch("rvq", bindings, (1, 2, rows), {**common, "LEVEL": cfg.n_q}, label="mimi.rvq.resolve")


# "gpu" work splits aim at this many invocations per dispatch (an H100 holds 270k resident; most of a frame's
# layers have far fewer outputs, so K is split across team members until the dispatch is this wide).
GPU_TARGET_INVOCATIONS = 1 << 16


def split_for_streams(tuning: str, streams: int) -> str:
    """The work split a plan of `streams` streams takes for a device whose split is `tuning`."""
    return "gpu-many" if tuning == "gpu" and streams >= MANY_STREAMS else tuning


# conv1d.wgsl's `tiled` entry: 64 channels x 64 stream-steps per workgroup of 16 x 16 invocations (32 channels, 8 x 16
# invocations, for layers of at most 32 channels).
TILE_THREADS = 16


def k_splits(k: int, row_tiles: int, frame_steps: int) -> int:
    """Column ranges of a "gpu-many" layer of K columns, row_tiles tiles of output channels and frame_steps output
    steps a frame (see SPLIT_STEPS)."""
    usable = [s for s in range(1, MAX_K_SPLITS + 1) if k % (32 * s) == 0 and k // s >= MIN_SPLIT_COLUMNS]
    if frame_steps > SPLIT_STEPS or not usable:
        return 1
    long = max(s for s in usable if k // s >= SPLIT_COLUMNS or s == 1)
    wide = next((s for s in usable if row_tiles * s >= SPLIT_ROW_TILES), usable[-1])
    return max(long, wide)


def _tiling(t_out: int, c_out: int, k: int, tuning: str = "gpu", streams: int = 1,
            input_mode: int = INPUT_PLAIN, frames: int = 1) -> dict:
    """conv1d.wgsl's work split for one layer (see the kernel's header).

    "cpu" (a software rasteriser such as lavapipe: few fat invocations; barriers are expensive): each invocation
    owns whole dot products (no split of K, no reduction), a 4 x 4 block of (rows x steps), or 4 rows x all steps.
    "gpu": teams split K (up to 32 members) until the dispatch has ~GPU_TARGET_INVOCATIONS invocations, with
    1 (few steps) or 2 rows x up to 4 steps per invocation and up to 4 teams along time in a workgroup.
    "gpu-many" (plans of MANY_STREAMS or more): the `tiled` entry point (64 channels x 64 stream-steps per
    workgroup, all streams in one dispatch), the LayerNorm layers too (their statistics computed per tile), K cut
    into ranges where the layer has few steps a frame (k_splits; t_out counts the steps of `frames` frames), slices
    of 16 columns on grids of SHORT_SLICE_WORKGROUPS or more.
    Returns the constants, the workgroups (x, y, z: the streams for `main`, the column ranges for `tiled`) and the
    entry point."""
    if tuning == "gpu-many":
        # Layers of at most 32 channels (the first residual block's inner conv) take tiles of 32 channels: a
        # 64-channel tile would compute as many rows again for nothing. (The LayerNorm layers need 4 invocations
        # per column: tile_norm_stats.)
        row_threads = TILE_THREADS // 2 if c_out <= 2 * TILE_THREADS and input_mode != INPUT_LAYER_NORM \
            else TILE_THREADS
        row_tiles = math.ceil(c_out / (4 * row_threads))
        splits = k_splits(k, row_tiles, t_out // frames)
        workgroups = (row_tiles, math.ceil(streams * t_out / (4 * TILE_THREADS)), splits)
        slice_columns = 16 if math.prod(workgroups) >= SHORT_SLICE_WORKGROUPS else 32
        return {"constants": {"WORKGROUP_SIZE": row_threads * TILE_THREADS, "ROW_THREADS": row_threads,
                              "COL_THREADS": TILE_THREADS, "STREAMS": streams, "K_SPLITS": splits,
                              "TILE_K": slice_columns},
                "workgroups": workgroups, "entry": "tiled"}
    units = k // 32
    steps_per_thread = min(t_out, 4)
    step_groups = math.ceil(t_out / steps_per_thread)
    if tuning == "cpu":
        rows_per_thread, threads_per_row, size = 4, 1, CPU_CONV_WORKGROUP
        teams_o = 1 << (min(16, size, max(1, c_out // rows_per_thread)).bit_length() - 1)   # a power of two
        teams_t = size // teams_o
        if t_out < 16:
            teams_t, teams_o = 1, size
    else:
        rows_per_thread = 1 if t_out <= 4 else 2
        base = step_groups * math.ceil(c_out / rows_per_thread)
        threads_per_row = 1
        while threads_per_row * 2 <= min(32, units) and base * threads_per_row * 2 <= GPU_TARGET_INVOCATIONS:
            threads_per_row *= 2
        size = 128
        teams = size // threads_per_row
        teams_t = 1
        while teams_t * 2 <= min(teams, 4, step_groups):
            teams_t *= 2
        teams_o = teams // teams_t
    rows = teams_o * rows_per_thread
    steps = teams_t * steps_per_thread
    return {"constants": {"WORKGROUP_SIZE": size, "THREADS_PER_ROW": threads_per_row, "TEAMS_T": teams_t,
                          "ROWS_PER_THREAD": rows_per_thread, "STEPS_PER_THREAD": steps_per_thread},
            "workgroups": (math.ceil(c_out / rows), math.ceil(t_out / steps), streams), "entry": "main"}


# ---------------------------------------------------------------------------------------------------- public API
def build_mimi(b: PlanBuilder, tensors: Mapping[str, Mapping], pcm: str, codes: str, step_buffer: str = "step",
               cfg: MimiConfig = MIMI, codes_offset: int = 0, ring: int | None = None,
               tuning: str = "gpu", frames: int = 1) -> MimiFragment:
    """Append the Mimi encoder's buffers and dispatches to `b`.

    tensors: the package manifest's "tensors" (name -> {"quant", "shape", "streams": {key: {"nbytes", ...}}}),
    e.g. Package.manifest["tensors"]; weight buffers are filled from streams "<tensor>.<qs|d|w>".
    pcm: an existing buffer of cfg.frame_size f32 samples (written before the frame); codes: an existing u32 buffer
    receiving the 32 codes at codes_offset (e.g. the LM's ids row [codes | text token] with offset 0).
    step_buffer: the plan's step buffer (declared by the caller, sized for all step fields, before build()).
    ring: KV ring slots (default cfg.context = moshi's streaming behaviour; cfg.context + 1: offline's window).
    tuning: "gpu", "gpu-many" or "cpu" work splits (same results up to float summation order; see _tiling).
    frames: frames encoded per submission (files: every layer sees frames x more steps, each weight read once for
    them all; pcm then holds frames * frame_size samples per stream, codes frames rows per stream). The codes and
    latents are frame by frame streaming's: the convs' histories and the transformer's ring are carried the same
    way, and attention runs frame by frame (attention_chunk.wgsl FIRST_ROW).
    Adds the step fields mimi.position (= 2 * frames * submission) and mimi.parity (= submission % 2)."""
    return _MimiBuilder(b, tensors, cfg, step_buffer, ring, codes_offset, tuning, frames).build(pcm, codes)


def mimi_plan(package, tuning: str, streams: int = 1, frames: int = 1) -> Plan:
    """The Mimi-alone plan of an opened package (weights/package.Package) for a device whose work split is
    `tuning` (Tuning.mimi): the split its rows per dispatch (streams x frames) take."""
    return build_mimi_plan(package.manifest["tensors"], package.mimi_config,
                           tuning=split_for_streams(tuning, streams * frames), streams=streams, frames=frames)


def build_mimi_plan(tensors: Mapping[str, Mapping], cfg: MimiConfig = MIMI, ring: int | None = None,
                    tuning: str = "gpu", name: str = "mimi", streams: int = 1, frames: int = 1) -> Plan:
    """A standalone plan: input "pcm" (f32[1920]); outputs "codes" (u32[32]) and "latent" (f32[512]); each per
    stream for `streams` streams, and per frame for `frames` frames a submission (f32[frames, 1920] in,
    u32[frames, 32] and f32[frames, 512] out)."""
    b = PlanBuilder(name, streams)
    rows = (frames,) if frames > 1 else ()
    pcm = b.stream_buffer("pcm", "input", (*rows, cfg.frame_size))
    codes = b.stream_buffer("codes", "state", (*rows, cfg.n_q), "u32")
    fragment = build_mimi(b, tensors, pcm, codes, "step", cfg, ring=ring, tuning=tuning, frames=frames)
    b.inputs["pcm"] = pcm
    b.outputs["codes"] = codes
    b.outputs["latent"] = fragment.latent
    return b.build(step_buffer="step")
