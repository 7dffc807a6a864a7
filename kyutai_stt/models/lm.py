"""The STT language model, defined once: one step (one 80 ms frame) as a sequence of kernel dispatches.

Reads like the forward pass of kyutai-stt-1b.md §4; every buffer's shape is in its declaration. Inputs per step:
`codes` u32[n_q] (the Mimi codes of the previous frame; start tokens after reset) and `token` u32[1] (the text
token the previous step's argmax wrote; the start token after reset). Output: `results` = [token (u32),
VAD probabilities (f32 bits) x heads].
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from kyutai_stt.config import LMConfig
from kyutai_stt.engine.plan import INT8_DOT, PORTABLE_MAX_BINDING, Plan, PlanBuilder
from kyutai_stt.models.rope import rope_frequencies
from kyutai_stt.weights.quant import FORMATS

INPUT_PLAIN, INPUT_RMS_NORM, INPUT_SWIGLU = 0, 1, 2
ELEMENTS_PER_WORD = {"q4": 8, "q8": 4, "f16": 2, "f32": 1}   # weights per u32 of a stream
EMBED_WORDS_PER_WORKGROUP = 8        # kernels/embed_sum.wgsl's default: 8 u32 words of a row per workgroup
QUANTIZE_WORKGROUP = 256             # kernels/quantize_input.wgsl: 8 inputs per invocation
MATVEC_MAX_SUMS = 16                 # kernels/matvec*.wgsl: ROWS_PER_THREAD * BATCH (+ BATCH in RMS_NORM mode)
MATVEC_MAX_STREAMS = MATVEC_MAX_SUMS // 2   # one row per invocation in RMS_NORM mode: 8 sums + 8 squares
# Beyond MATVEC_MAX_STREAMS the matrices take kernels/matmul.wgsl. The device's binding limit and memory are the
# real bounds (the engine names them): an H100 holds 1024 streams with int8 rings, 65 GiB (BENCHMARKS.md).
MAX_STREAMS = 1024
MATMUL_COMBINE_WORKGROUP = 64       # kernels/matmul.wgsl's and matmul_int8.wgsl's COMBINE_WORKGROUP
MATMUL_TILE_K_PER_ROW_THREAD = 8     # kernels/matmul.wgsl's INPUT_LOADS (2 of 4 columns): TILE_K <= 8 ROW_THREADS
MATMUL_INT8_TILE_BLOCKS = 2          # kernels/matmul_int8.wgsl: 32-column blocks per step, at most (two tile sets fit)
# Text prompt ids the plan has room for (kernels/argmax.wgsl's PROMPT_CAPACITY): far more than the few words a
# prompt steers; a host reads the room from the plan's "prompt" input ([n, e, ids]), never from here.
PROMPT_CAPACITY = 128
WORD_BOUNDARY_TOKEN = 0              # allowed, with the padding id, while a text prompt is enforced (official rule)


@dataclass(frozen=True)
class MatvecTuning:
    workgroup_size: int = 256
    threads_per_row: int = 64         # a 2048-wide Q4 row is 64 blocks: one 16-byte load per invocation
    rows_per_thread: int = 4          # independent loads in flight per invocation
    subgroup: bool = False            # q4 only: reduce with subgroup shuffles (needs the `subgroup` feature)

    def constants(self) -> dict:
        return {"WORKGROUP_SIZE": self.workgroup_size, "THREADS_PER_ROW": self.threads_per_row,
                "ROWS_PER_THREAD": self.rows_per_thread}

    @property
    def rows_per_workgroup(self) -> int:
        return self.workgroup_size // self.threads_per_row * self.rows_per_thread


@dataclass(frozen=True)
class MatmulTuning:
    """kernels/matmul.wgsl's tile, and matmul_int8.wgsl's: 4 rows x 4 streams per invocation (x 8 on wide grids)."""
    row_threads: int = 16
    stream_threads: int = 16          # 64 x 64 tiles of 32 columns: 16 KiB of workgroup memory, the portable limit
    tile_k: int = 32
    from_streams: int = MATVEC_MAX_STREAMS + 1   # plans of this many streams or more take it for every matrix
    k_splits: int = 8                 # column ranges on separate workgroups, at most (a plan constant: BENCHMARKS.md)
    # Columns are split only until the grid has this many workgroups: each split adds a combine pass and a round
    # trip of partial sums, which cost more than they give once the GPU is full (an H100's 132 SMs twice over;
    # BENCHMARKS.md: ffn_in at 256 streams, 704 workgroups, 0.247 ms unsplit against 0.313 ms in 8 ranges).
    full_grid: int = 256
    # matmul_int8.wgsl: matrices not cut into column ranges whose grid has at least this many workgroups take 8
    # streams an invocation (STREAM_QUADS 2): half the invocations a tile, each row's nibbles split once for 8
    # streams. Smaller grids would leave SMs idle (BENCHMARKS.md "matmul_int8 with 8 streams an invocation": on an
    # H100, grids of 384 to 2816 workgroups 2.5-6 % faster, of 128 and 256 3-10 % slower). The same sums either way.
    wide_grid: int = 384

    def grid(self, rows: int, streams: int) -> tuple[int, int]:
        """Workgroups along rows and along streams (4 x 4 per invocation)."""
        return -(-rows // (4 * self.row_threads)), -(-streams // (4 * self.stream_threads))

    def splits_for(self, rows: int, columns: int, streams: int, tile_k: int | None = None) -> int:
        """Column ranges, at most k_splits, each a whole number of steps (of tile_k columns; default
        matmul.wgsl's): the fewest that fill the grid to full_grid workgroups, else the most there are. A stream's
        sums depend on this, never on the other streams' inputs."""
        tiles = self.grid(rows, streams)
        usable = [s for s in range(1, self.k_splits + 1) if columns % (s * (tile_k or self.tile_k)) == 0]
        return next((s for s in usable if tiles[0] * tiles[1] * s >= self.full_grid), usable[-1])

    def stream_quads(self, rows: int, streams: int, splits: int) -> int:
        """matmul_int8.wgsl's STREAM_QUADS for a matrix of `rows` in `splits` column ranges (wide_grid)."""
        tiles = self.grid(rows, streams)
        return 2 if self.stream_threads % 2 == 0 and splits == 1 and tiles[0] * tiles[1] >= self.wide_grid else 1

    def check(self, max_workgroup_bytes: int = 16384) -> None:
        if (self.row_threads * self.stream_threads > 256 or self.tile_k % 32
                or self.tile_k > MATMUL_TILE_K_PER_ROW_THREAD * self.row_threads
                or 16 * self.tile_k * (self.row_threads + self.stream_threads) > max_workgroup_bytes):
            raise ValueError(f"matmul tile {self}: outside kernels/matmul.wgsl's constraints")


# The most frames of a stream Mimi takes a submission by default (Tuning.mimi_frames): for one stream, 32 was the
# fastest of 1, 4, 8, 16 and 32 on an H100 (a 10-minute file: BENCHMARKS.md); more holds more of Mimi's state.
MIMI_FRAMES_MOST = 32


@dataclass(frozen=True)
class Tuning:
    """Kernel launch shapes: they change speed, never results (the kernel tests cover each)."""
    matvec: dict                      # tensor role ('attn_qkv', ..., 'text_head') -> MatvecTuning
    attention_slots_per_split: int    # the ring is read by ceil(context / this) workgroups per head
    mimi: str = "gpu"                 # models/mimi.py work splits: "gpu" or "cpu"
    # The int8 path of q4 matrices (quantize_input.wgsl, then matvec_int8[_subgroup].wgsl), role -> launch shape;
    # empty: every matrix takes the portable matvec. It rounds the inputs to int8 (docs/validation.md: its error).
    int8_matvec: dict = field(default_factory=dict)
    # The f16 path of q4 matrices (quantize_input.wgsl OUTPUT_F16, then matvec_f16.wgsl; needs `shader-f16`),
    # role -> launch shape, for tunings without the int8 path; plans of many streams keep matmul.wgsl. It rounds
    # the inputs to f16 (docs/validation.md: its error).
    f16_matvec: dict = field(default_factory=dict)
    # Plans of many streams: every matrix takes matmul.wgsl, or matmul_int8.wgsl (its tile) where the int8 path
    # applies (a q4 matrix, a role in int8_matvec).
    matmul: MatmulTuning = MatmulTuning()
    # The KV rings in f16 (attention.wgsl KV_F16): half their memory and reads; keys and values rounded to f16
    # (docs/validation.md: its error).
    kv_f16: bool = False
    # The KV rings in int8, a scale per 32 values (attention_int8.wgsl; needs dot4I8Packed; before kv_f16, and a
    # head size that is not a multiple of 32 keeps kv_f16's rings): 144 bytes a row of 128 instead of f16's 256, the
    # query rounded to int8 too (docs/validation.md: its error). Chosen by the user (variants.with_kv_rings).
    kv_int8: bool = False
    # With the int8 (f16) path: the attention's merge writes attn_out's int8 (f16) input itself (attention.wgsl
    # combine_int8, combine_f16), one dispatch fewer per layer; the same bits as its own quantize_input dispatch
    # (an A/B switch).
    attention_rounds_output: bool = True
    # Plans of many streams (the matmul path) read the ring in ranges of this many slots: the streams fill the GPU,
    # and fewer ranges leave fewer partials to merge (benchmarks/attention_splits.py). None: as for few streams.
    attention_slots_per_split_many: int | None = None
    # The same with int8 rings (kv_int8): a slot's 144 bytes cost less than f16's 256, so longer ranges, fewer
    # partials to merge, pay (BENCHMARKS.md "Longer ranges for int8 rings"). None: attention_slots_per_split_many.
    attention_slots_per_split_many_int8: int | None = None
    # Files (streaming/transcriber.py, batch.py): Mimi encodes frames ahead of the LM, several of each stream a
    # submission, about this many (streams x frames) at once (each of its weights read once for them all:
    # models/mimi.py `frames`); 1: Mimi and the LM step together, a frame a submission. See mimi_frames().
    mimi_rows: int = 1

    def mimi_frames(self, streams: int) -> int:
        """Frames of each stream Mimi encodes a submission for files, for a plan of `streams` streams: mimi_rows
        spread over the streams, at most MIMI_FRAMES_MOST."""
        return max(1, min(MIMI_FRAMES_MOST, -(-self.mimi_rows // max(1, streams))))

    def for_matvec(self, name: str) -> MatvecTuning:
        return self.matvec.get(name.rsplit(".", 1)[-1], self.matvec["default"])

    def for_int8_matvec(self, name: str) -> MatvecTuning | None:
        if not self.int8_matvec:
            return None
        return self.int8_matvec.get(name.rsplit(".", 1)[-1], self.int8_matvec["default"])

    def for_f16_matvec(self, name: str) -> MatvecTuning | None:
        if not self.f16_matvec or self.int8_matvec:
            return None
        return self.f16_matvec.get(name.rsplit(".", 1)[-1], self.f16_matvec["default"])

    @property
    def rounded_inputs(self) -> str | None:
        """What q4 matrices' inputs are rounded to once per step, by quantize_input.wgsl: "int8", "f16" or None."""
        return "int8" if self.int8_matvec else "f16" if self.f16_matvec else None


@dataclass(frozen=True)
class Tensor:
    """What the plan needs to know of a package tensor: its layout and its streams' sizes."""
    quant: str
    shape: tuple[int, ...]
    stream_nbytes: dict[str, int]        # "qs"/"d" or "w" -> bytes


def tensors_of(package) -> dict[str, Tensor]:
    return {name: Tensor(e.quant, tuple(e.shape), {k: s.nbytes for k, s in e.streams.items()})
            for name in package.tensor_names() for e in [package.tensor(name)]}


class _Weights:
    """Package tensors as plan buffers: one buffer per stream, named '<tensor>.<stream>', bound in stream order."""

    def __init__(self, b: PlanBuilder, tensors: dict[str, Tensor]):
        self.b, self.tensors = b, tensors

    def bindings(self, name: str, first: int = 0) -> dict[int, str]:
        t = self.tensors[name]
        out = {}
        for i, kind in enumerate(("qs", "d") if "qs" in t.stream_nbytes else ("w",)):
            buffer = f"{name}.{kind}"
            if buffer not in self.b.buffers:
                self.b.weight(buffer, [(buffer, t.stream_nbytes[kind])])
            out[first + i] = buffer
        return out

    def concatenated(self, label: str, names: list[str], first: int = 0) -> dict[int, str]:
        """Several same-layout tensors back to back in one buffer per stream (the audio embedding tables)."""
        kinds = ("qs", "d") if "qs" in self.tensors[names[0]].stream_nbytes else ("w",)
        out = {}
        for i, kind in enumerate(kinds):
            buffer = f"{label}.{kind}"
            self.b.weight(buffer, [(f"{n}.{kind}", self.tensors[n].stream_nbytes[kind]) for n in names])
            out[first + i] = buffer
        return out


def with_scales_binding(bindings: dict[int, str]) -> dict[int, str]:
    """Bindings 0 and 1 of the FORMAT kernels (matvec, embed_sum): {0: weights or quants[, 1: scales]} ->
    {0: ..., 1: the scales, or the weights again where the format has none (every format declares binding 1)}."""
    return {1: bindings[0], **bindings}


def for_streams(shape: MatvecTuning, streams: int, input_mode: int) -> MatvecTuning:
    """A launch shape whose per-invocation sums fit the matvec kernels' MAX_SUMS for `streams` streams: rows per
    thread lowered as far as needed (it changes speed, never results)."""
    room = MATVEC_MAX_SUMS // streams - (input_mode == INPUT_RMS_NORM)
    if room < 1:
        raise ValueError(f"{streams} streams exceed the matvec kernels' {MATVEC_MAX_SUMS} sums per invocation "
                         f"(at most {MATVEC_MAX_STREAMS} streams; more take kernels/matmul.wgsl)")
    return replace(shape, rows_per_thread=min(shape.rows_per_thread, room))


def _matrices(cfg: LMConfig) -> list[str]:
    """The matrices of an LM step (build_lm's _matvec calls), in order."""
    roles = ("attn_qkv", "attn_out", "ffn_in", "ffn_out")
    return [f"layers.{i}.{role}" for i in range(cfg.num_layers) for role in roles] + ["text_head"]


def _matmul_steps(tile: MatmulTuning, rows: int, columns: int, streams: int, int8: bool) -> tuple[int, int]:
    """(matmul_int8.wgsl's 32-column blocks a step, 0 for matmul.wgsl; column ranges) of a matrix in a plan of
    many streams: int8 steps take as many blocks as divide the columns."""
    if not int8:
        return 0, tile.splits_for(rows, columns, streams)
    blocks = max(n for n in range(1, MATMUL_INT8_TILE_BLOCKS + 1) if columns % (32 * n) == 0)
    return blocks, tile.splits_for(rows, columns, streams, 32 * blocks)


def _batch(streams: int) -> dict:
    """The matvec kernels' BATCH constant: absent for one stream, so that its pipelines stay those of before."""
    return {"BATCH": streams} if streams > 1 else {}


def _matvec(b: PlanBuilder, w: _Weights, tuning: Tuning, name: str, x: str, y: str,
            input_mode: int = INPUT_PLAIN, alpha: str | None = None, accumulate: bool = False,
            rounded_input: tuple[str, str] | None = None, partials: str | None = None, quantized: bool = False):
    """y (+)= W in(x) for each of the builder's streams (x: [streams, X_STRIDE], y: [streams, rows]), each weight
    read once for all of them; rounded_input: the (xq, xs) scratch buffers of the int8 or f16 path, where the
    tuning has one; quantized: x's producer already wrote them (attention's combine_int8 or combine_f16);
    partials: matmul.wgsl's scratch, given in plans of many streams (build_lm decides), which then take it."""
    t = w.tensors[name]
    rows, columns = t.shape
    streams = b.streams
    q4_rounded = t.quant == "q4" and rounded_input
    int8 = tuning.for_int8_matvec(name) if q4_rounded else None
    half = tuning.for_f16_matvec(name) if q4_rounded and partials is None else None
    if (int8 or half) and not quantized:
        xq, xs = rounded_input
        b.dispatch("quantize_input", {0: x, 1: alpha or x, 2: xq, 3: xs},
                   (-(-columns // 8 // QUANTIZE_WORKGROUP), streams),
                   {"COLUMNS": columns, "INPUT_MODE": input_mode, "WORKGROUP_SIZE": QUANTIZE_WORKGROUP,
                    **({"OUTPUT_F16": True} if half else {}), **_batch(streams)},
                   label=f"{name} input to {'int8' if int8 else 'f16'}")
    if partials is not None:
        tile = tuning.matmul
        grid = tile.grid(rows, streams)
        blocks, splits = _matmul_steps(tile, rows, columns, streams, bool(int8))
        if int8:     # q4 weights x int8 inputs (matmul_int8.wgsl); the same tile with 8 streams an invocation
            kernel = "matmul_int8"
            quads = tile.stream_quads(rows, streams, splits)
            constants = {"ROWS": rows, "COLUMNS": columns, "ACCUMULATE": accumulate, "BATCH": streams,
                         "ROW_THREADS": tile.row_threads, "STREAM_THREADS": tile.stream_threads // quads,
                         "TILE_BLOCKS": blocks, "K_SPLITS": splits, **({"STREAM_QUADS": quads} if quads > 1 else {})}
            bindings = {**with_scales_binding(w.bindings(name)), 2: rounded_input[0], 3: y, 4: rounded_input[1],
                        5: partials}
        else:
            kernel = "matmul"
            constants = {"FORMAT": FORMATS[t.quant], "ROWS": rows, "COLUMNS": columns, "INPUT_MODE": input_mode,
                         "ACCUMULATE": accumulate, "BATCH": streams, "ROW_THREADS": tile.row_threads,
                         "STREAM_THREADS": tile.stream_threads, "TILE_K": tile.tile_k, "K_SPLITS": splits}
            bindings = {**with_scales_binding(w.bindings(name)), 2: x, 3: y, 4: alpha or x, 5: partials}
        language = (INT8_DOT,) if int8 else ()
        b.dispatch(kernel, bindings, (*grid, constants["K_SPLITS"]), constants, label=name,
                   language_features=language)
        if constants["K_SPLITS"] > 1:
            b.dispatch(kernel, {3: y, 5: partials}, (-(-rows // MATMUL_COMBINE_WORKGROUP), streams), constants,
                       label=f"{name} combine", entry="combine", language_features=language)
        return
    if half:
        half = for_streams(half, streams, INPUT_PLAIN)
        xq, xs = rounded_input
        b.dispatch("matvec_f16", {**with_scales_binding(w.bindings(name)), 2: xq, 3: y, 4: xs},
                   (-(-rows // half.rows_per_workgroup),),
                   {"ROWS": rows, "COLUMNS": columns, "ACCUMULATE": accumulate, **half.constants(),
                    **_batch(streams)}, label=name, features=("shader-f16",))
        return
    if int8:
        int8 = for_streams(int8, streams, INPUT_PLAIN)
        xq, xs = rounded_input
        b.dispatch("matvec_int8_subgroup" if int8.subgroup else "matvec_int8",
                   {**with_scales_binding(w.bindings(name)), 2: xq, 3: y, 4: xs},
                   (-(-rows // int8.rows_per_workgroup),),
                   {"ROWS": rows, "COLUMNS": columns, "ACCUMULATE": accumulate, **int8.constants(),
                    **_batch(streams)}, label=name,
                   features=("subgroup",) if int8.subgroup else (), language_features=(INT8_DOT,))
        return
    shape = for_streams(tuning.for_matvec(name), streams, input_mode)
    constants = {"FORMAT": FORMATS[t.quant], "ROWS": rows, "COLUMNS": columns, "INPUT_MODE": input_mode,
                 "ACCUMULATE": accumulate, **shape.constants(), **_batch(streams)}
    # Binding 4 (alpha) is read only in RMS_NORM mode but always bound: x stands in for it.
    bindings = {**with_scales_binding(w.bindings(name)), 2: x, 3: y, 4: alpha or x}
    subgroup = shape.subgroup and t.quant == "q4"
    b.dispatch("matvec_subgroup" if subgroup else "matvec", bindings,
               (-(-rows // shape.rows_per_workgroup),), constants, label=name,
               features=("subgroup",) if subgroup else ())


def _embed(b: PlanBuilder, w: _Weights, cfg: LMConfig, x: str, codes: str, token: str) -> None:
    """x = sum_k audio_emb_k[codes[k]] + text_emb[token] (audio in order 0..n_q-1, then text, as PyTorch).
    The audio tables are concatenated into as few buffers as the portable binding limit allows (one in q4)."""
    audio = [f"audio_emb.{k}" for k in range(cfg.n_q)]
    per_group = max(1, PORTABLE_MAX_BINDING // max(w.tensors[audio[0]].stream_nbytes.values()))
    groups = [(audio[i:i + per_group], codes, i, cfg.n_q, cfg.card + 1) for i in range(0, cfg.n_q, per_group)]
    groups.append((["text_emb"], token, 0, 1, cfg.text_card + 1))
    for n, (names, ids, first, ids_stride, rows) in enumerate(groups):
        quant = w.tensors[names[0]].quant
        bindings = w.bindings(names[0]) if len(names) == 1 and names[0] == "text_emb" else \
            w.concatenated(f"audio_emb[{first}:{first + len(names)}]", names)
        b.dispatch("embed_sum", {**with_scales_binding(bindings), 2: ids, 3: x},
                   (-(-cfg.dim // (EMBED_WORDS_PER_WORKGROUP * ELEMENTS_PER_WORD[quant])), b.streams),
                   {"FORMAT": FORMATS[quant], "DIM": cfg.dim, "TABLES": len(names), "TABLE_ROWS": rows,
                    "IDS_OFFSET": first, "IDS_STRIDE": ids_stride, "ACCUMULATE": n > 0},
                   label=f"embeddings {names[0]}..")


def kv_ring_row(head_dim: int, rings: str) -> tuple[int, str]:
    """(elements, dtype) of one KV ring row (a slot of a head) holding `rings` ("f32", "f16" or "int8"): f32 one a
    value; f16 two to a u32 word; int8 four to a word, then a 16-byte unit of f32 scales per 128 values."""
    if rings == "int8":
        return head_dim // 4 + 4 * -(-head_dim // 128), "u32"
    if rings == "f16":
        return head_dim // 2, "u32"
    return head_dim, "f32"


def build_lm(b: PlanBuilder, cfg: LMConfig, tensors: dict[str, Tensor], codes: str, position_field: int,
             tuning: Tuning) -> str:
    """Append one LM step for each of the builder's S streams (b.streams; codes: u32[S, n_q]); returns the name of
    the results buffer [S, token + VAD probabilities]. Shapes below are per buffer; S = 1 for one stream."""
    w = _Weights(b, tensors)
    n = b.streams
    if not 1 <= n <= MAX_STREAMS:
        raise ValueError(f"{n} streams: a plan holds 1 to {MAX_STREAMS}")
    d, f, hd = cfg.dim, cfg.ffn_dim, cfg.head_dim
    heads = cfg.extra_heads_num_heads if "vad_heads" in tensors else 0
    kv_int8 = tuning.kv_int8 and hd % 32 == 0
    kv_f16 = tuning.kv_f16 and not kv_int8
    slots = tuning.attention_slots_per_split
    if n >= tuning.matmul.from_streams:
        many = tuning.attention_slots_per_split_many_int8 if kv_int8 else None
        slots = many or tuning.attention_slots_per_split_many or slots
    splits = -(-cfg.context // slots)
    # Shapes are one stream's: stream_buffer leads them with S when there are several.
    x = b.stream_buffer("lm.x", "scratch", (d,))                                   # residual stream [S, D]
    qkv = b.stream_buffer("lm.qkv", "scratch", (3 * d,))                           # [S, q | k | v], head-major
    attended = b.stream_buffer("lm.attended", "scratch", (d,))                     # attention output [S, D]
    partial_out = b.stream_buffer("lm.attn_partial", "scratch", (splits, d)) if splits > 1 else attended
    partial_stats = b.stream_buffer("lm.attn_stats", "scratch", (splits, cfg.num_heads, 2))
    hidden = b.stream_buffer("lm.hidden", "scratch", (2 * f,))                     # FFN [S, gate | up]
    logits = b.stream_buffer("lm.logits", "scratch", (cfg.text_card,))
    token = b.stream_buffer("lm.token", "state", (1,), "u32", reset_fill=cfg.text_card)   # fed back each step
    results = b.stream_buffer("lm.results", "output", (1 + heads,), "u32",              # [S, token, p..]
                              fields=[("token", "u32", 1), ("vad", "f32", heads)])
    # Per stream [n, e, id_0 .. id_127]: a text prompt of n ids, e emitted (argmax.wgsl); reset (zeros) = no
    # prompt. The host writes it with a stream's first frame; the GPU advances e.
    prompt = b.stream_buffer("lm.prompt", "state", (2 + PROMPT_CAPACITY,), "u32")
    b.inputs["prompt"] = prompt
    freqs = b.const("lm.rope_freqs", rope_frequencies(hd, cfg.max_period))   # [hd / 2]
    rounded_input = partials = None
    if n >= tuning.matmul.from_streams:
        tuning.matmul.check()
        # The column-range sums [splits, S, rows] and sums of squares [splits, S] of the matrix that needs the most;
        # one word where none is split (the more streams, the fewer ranges fill the GPU).
        words = 1
        for name in _matrices(cfg):
            t = tensors[name]
            int8 = tuning.rounded_inputs == "int8" and t.quant == "q4" and bool(tuning.for_int8_matvec(name))
            _, ranges = _matmul_steps(tuning.matmul, *t.shape, n, int8)
            words = max(words, ranges * n * (t.shape[0] + 1) if ranges > 1 else 1)
        partials = b.buffer("lm.matmul_partials", "scratch", 4 * words, (words,))
    # Plans of many streams keep matmul.wgsl where the f16 path would apply (it has no f16 variant).
    rounding = None if partials and tuning.rounded_inputs == "f16" else tuning.rounded_inputs
    if rounding:   # one matrix input at a time, rounded to int8 or f16 (quantize_input.wgsl)
        widest = max(d, f)
        per_word = 4 if rounding == "int8" else 2
        rounded_input = (b.stream_buffer(f"lm.input_{rounding}", "scratch", (widest // per_word,), "u32"),
                         b.stream_buffer(f"lm.input_{rounding}_scales", "scratch", (widest // 32, 2)))
    attention = {"HEADS": cfg.num_heads, "HEAD_DIM": hd, "CONTEXT": cfg.context, "SPLITS": splits,
                 "POSITION_INDEX": position_field * n, "WORKGROUP_SIZE": hd, **({"KV_F16": True} if kv_f16 else {})}
    row, ring_dtype = kv_ring_row(hd, "int8" if kv_int8 else "f16" if kv_f16 else "f32")
    ring = (cfg.num_heads, cfg.context, row)                                        # [S, H, context, row]

    _embed(b, w, cfg, x, codes, token)
    for i in range(cfg.num_layers):
        layer = f"layers.{i}."
        k_cache = b.stream_buffer(f"lm.k_cache.{i}", "state", ring, ring_dtype)
        v_cache = b.stream_buffer(f"lm.v_cache.{i}", "state", ring, ring_dtype)
        _matvec(b, w, tuning, layer + "attn_qkv", x, qkv, INPUT_RMS_NORM, w.bindings(layer + "attn_norm")[0],
                rounded_input=rounded_input, partials=partials)
        b.dispatch("attention_int8" if kv_int8 else "attention",
                   {0: qkv, 1: "step", 2: freqs, 3: k_cache, 4: v_cache, 5: partial_out, 6: partial_stats},
                   (cfg.num_heads, splits, n), attention, label=layer + "attention")
        # Where attn_out takes the int8 or f16 path, the merge can round its input (blocks of 32 within a head):
        # no quantize_input dispatch.
        combine_rounded = bool(rounding and tuning.attention_rounds_output and splits > 1 and hd % 32 == 0
                               and tensors[layer + "attn_out"].quant == "q4")
        if combine_rounded:
            b.dispatch("attention", {5: partial_out, 6: partial_stats, 8: rounded_input[0], 9: rounded_input[1]},
                       (cfg.num_heads, 1, n), attention, label=layer + f"attention combine to {rounding}",
                       entry=f"combine_{rounding}")
        elif splits > 1:
            b.dispatch("attention", {5: partial_out, 6: partial_stats, 7: attended}, (cfg.num_heads, 1, n),
                       attention, label=layer + "attention combine", entry="combine")
        _matvec(b, w, tuning, layer + "attn_out", attended, x, accumulate=True, rounded_input=rounded_input,
                partials=partials, quantized=combine_rounded)
        _matvec(b, w, tuning, layer + "ffn_in", x, hidden, INPUT_RMS_NORM, w.bindings(layer + "ffn_norm")[0],
                rounded_input=rounded_input, partials=partials)
        _matvec(b, w, tuning, layer + "ffn_out", hidden, x, INPUT_SWIGLU, accumulate=True,
                rounded_input=rounded_input, partials=partials)

    out_norm = w.bindings("out_norm")[0]
    _matvec(b, w, tuning, "text_head", x, logits, INPUT_RMS_NORM, out_norm, rounded_input=rounded_input,
            partials=partials)
    b.dispatch("argmax", {0: logits, 1: token, 2: results, 3: prompt, 4: "step"}, (n,),
               {"COUNT": cfg.text_card, "RESULT_STRIDE": 1 + heads, "PROMPT_CAPACITY": PROMPT_CAPACITY,
                **({"ACTIVE_INDEX": b.active_index()} if n > 1 else {}),
                "BOUNDARY_TOKEN": WORD_BOUNDARY_TOKEN, "PADDING_TOKEN": cfg.existing_text_padding_id},
               label="argmax")
    if heads:
        b.dispatch("vad_heads", {0: x, 1: out_norm, **w.bindings("vad_heads", first=2), 3: results}, (heads, n),
                   {"DIM": d, "HEADS": heads, "CLASSES": cfg.extra_heads_dim, "RESULT_STRIDE": 1 + heads,
                    "RESULT_OFFSET": 1}, label="VAD heads")
    return results


def lm_plan(package, tuning: Tuning, streams: int = 1) -> Plan:
    """The LM-alone plan of an opened package."""
    return build_lm_plan(package.config, tensors_of(package), tuning, streams)


def build_lm_plan(cfg: LMConfig, tensors: dict[str, Tensor], tuning: Tuning, streams: int = 1) -> Plan:
    """The LM alone, for `streams` independent streams: the host writes `codes` each step (tests, benchmarks)."""
    b = PlanBuilder("lm", streams)
    position = b.step_field("position")
    codes = b.stream_buffer("lm.codes", "state", (cfg.n_q,), "u32", reset_fill=cfg.card)
    b.inputs["codes"] = codes
    b.outputs["results"] = build_lm(b, cfg, tensors, codes, position, tuning)
    b.inputs["token"] = "lm.token"      # optional: a host may force the fed-back text token (teacher forcing)
    return b.build(step_buffer="step")
