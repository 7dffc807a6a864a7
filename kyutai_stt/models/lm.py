"""The STT language model, defined once: one step (one 80 ms frame) as a sequence of kernel dispatches.

Reads like the forward pass of kyutai-stt-1b.md §4; every buffer's shape is in its declaration. Inputs per step:
`codes` u32[n_q] (the Mimi codes of the previous frame; start tokens after reset) and `token` u32[1] (the text
token the previous step's argmax wrote; the start token after reset). Output: `results` = [token (u32),
VAD probabilities (f32 bits) x heads].
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import lm_reference
from ..config import LMConfig
from ..plan import Plan, PlanBuilder

PORTABLE_MAX_BINDING = 128 << 20     # bytes: WebGPU's default maxStorageBufferBindingSize
# matvec tuning (kernels/matvec_*.wgsl): 64 invocations share a row so a 2048-wide Q4 row (64 blocks) is one
# 16-byte load each; 4 rows per team keep 4 independent loads in flight. benchmarks/kernels.py sweeps these.
MATVEC_WORKGROUP_SIZE = 256
MATVEC_THREADS_PER_ROW = 64
MATVEC_ROWS_PER_THREAD = 4
# attention: one invocation per output element of a 128-wide head; one split (no combine pass) until a
# benchmark shows the ring reads need more workgroups.
ATTENTION_WORKGROUP_SIZE = 128
ATTENTION_SPLITS = 1
EMBED_WORKGROUP_SIZE = 64
INPUT_PLAIN, INPUT_RMS_NORM, INPUT_SWIGLU = 0, 1, 2
ELEMENTS_PER_WORD = {"q4": 8, "q8": 4, "f16": 2, "f32": 1}   # weights per u32 of a stream


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


def _matvec(b: PlanBuilder, w: _Weights, name: str, x: str, y: str, input_mode: int = INPUT_PLAIN,
            alpha: str | None = None, accumulate: bool = False, y_offset: int = 0, y_stride: int | None = None):
    t = w.tensors[name]
    rows, columns = t.shape
    rows_per_workgroup = MATVEC_WORKGROUP_SIZE // MATVEC_THREADS_PER_ROW * MATVEC_ROWS_PER_THREAD
    constants = {"ROWS": rows, "COLUMNS": columns, "INPUT_MODE": input_mode, "ACCUMULATE": accumulate,
                 "WORKGROUP_SIZE": MATVEC_WORKGROUP_SIZE, "THREADS_PER_ROW": MATVEC_THREADS_PER_ROW,
                 "ROWS_PER_THREAD": MATVEC_ROWS_PER_THREAD, "Y_OFFSET": y_offset}
    if y_stride is not None:
        constants["Y_STRIDE"] = y_stride
    # Binding 4 (alpha) is read only in RMS_NORM mode but always bound: x stands in for it.
    bindings = {**w.bindings(name), 2: x, 3: y, 4: alpha or x}
    b.dispatch(f"matvec_{t.quant}", bindings, (-(-rows // rows_per_workgroup),), constants, label=name)


def _embed(b: PlanBuilder, w: _Weights, cfg: LMConfig, x: str, codes: str, token: str) -> None:
    """x = sum_k audio_emb_k[codes[k]] + text_emb[token] (audio in order 0..n_q-1, then text, as PyTorch)."""
    audio = [f"audio_emb.{k}" for k in range(cfg.n_q)]
    quant = w.tensors[audio[0]].quant
    table_bytes = max(w.tensors[audio[0]].stream_nbytes.values()) * cfg.n_q
    if table_bytes > PORTABLE_MAX_BINDING:
        raise ValueError(f"the {cfg.n_q} audio embedding tables in {quant} take {table_bytes} bytes, over one "
                         f"{PORTABLE_MAX_BINDING}-byte binding: convert the package with --quant q4")
    for label, bindings, ids, tables, rows, accumulate in (
            ("audio embeddings", w.concatenated("audio_emb", audio), codes, cfg.n_q, cfg.card + 1, False),
            ("text embedding", w.bindings("text_emb"), token, 1, cfg.text_card + 1, True)):
        t_quant = w.tensors["text_emb" if tables == 1 else audio[0]].quant
        words_per_workgroup = EMBED_WORKGROUP_SIZE * ELEMENTS_PER_WORD[t_quant]
        b.dispatch(f"embed_sum_{t_quant}", {**bindings, 2: ids, 3: x}, (-(-cfg.dim // words_per_workgroup),),
                   {"DIM": cfg.dim, "TABLES": tables, "TABLE_ROWS": rows, "ACCUMULATE": accumulate,
                    "WORKGROUP_SIZE": EMBED_WORKGROUP_SIZE}, label=label)


def build_lm(b: PlanBuilder, cfg: LMConfig, tensors: dict[str, Tensor], codes: str, position_field: int) -> str:
    """Append one LM step to the builder; returns the name of the results buffer [token, VAD probabilities]."""
    w = _Weights(b, tensors)
    d, f, heads = cfg.dim, cfg.ffn_dim, cfg.extra_heads_num_heads if "vad_heads" in tensors else 0
    x = b.buffer("lm.x", "scratch", 4 * d, (d,))                         # residual stream [D]
    qkv = b.buffer("lm.qkv", "scratch", 4 * 3 * d, (3 * d,))             # [q | k | v], head-major inside
    attended = b.buffer("lm.attended", "scratch", 4 * d, (d,))           # attention output [D]
    attn_stats = b.buffer("lm.attn_stats", "scratch", 8, (2,))           # unused with one split
    hidden = b.buffer("lm.hidden", "scratch", 4 * 2 * f, (2 * f,))       # FFN [gate | up]
    logits = b.buffer("lm.logits", "scratch", 4 * cfg.text_card, (cfg.text_card,))
    token = b.buffer("lm.token", "state", 4, (1,), "u32", reset_fill=cfg.text_card)    # fed back each step
    results = b.buffer("lm.results", "output", 4 * (1 + heads), (1 + heads,), "u32")
    freqs = b.const("lm.rope_freqs", lm_reference.rope_frequencies(cfg.head_dim, cfg.max_period))
    step = "step"

    _embed(b, w, cfg, x, codes, token)
    for i in range(cfg.num_layers):
        layer = f"layers.{i}."
        k_cache = b.buffer(f"lm.k_cache.{i}", "state", 4 * d * cfg.context, (cfg.num_heads, cfg.head_dim, cfg.context))
        v_cache = b.buffer(f"lm.v_cache.{i}", "state", 4 * d * cfg.context, (cfg.num_heads, cfg.context, cfg.head_dim))
        _matvec(b, w, layer + "attn_qkv", x, qkv, INPUT_RMS_NORM, w.bindings(layer + "attn_norm")[0])
        b.dispatch("attention", {0: qkv, 1: step, 2: freqs, 3: k_cache, 4: v_cache, 5: attended, 6: attn_stats},
                   (cfg.num_heads, ATTENTION_SPLITS, 1),
                   {"HEADS": cfg.num_heads, "HEAD_DIM": cfg.head_dim, "CONTEXT": cfg.context,
                    "SPLITS": ATTENTION_SPLITS, "POSITION_INDEX": position_field,
                    "WORKGROUP_SIZE": min(ATTENTION_WORKGROUP_SIZE, cfg.head_dim)}, label=f"{layer}attention")
        _matvec(b, w, layer + "attn_out", attended, x, accumulate=True)
        _matvec(b, w, layer + "ffn_in", x, hidden, INPUT_RMS_NORM, w.bindings(layer + "ffn_norm")[0])
        _matvec(b, w, layer + "ffn_out", hidden, x, INPUT_SWIGLU, accumulate=True)

    out_norm = w.bindings("out_norm")[0]
    _matvec(b, w, "text_head", x, logits, INPUT_RMS_NORM, out_norm)
    b.dispatch("argmax", {0: logits, 1: token, 2: results}, (1,),
               {"COUNT": cfg.text_card, "RESULT_STRIDE": 1 + heads}, label="argmax")
    if heads:
        b.dispatch("vad_heads", {0: x, 1: out_norm, **w.bindings("vad_heads", first=2), 3: results}, (1,),
                   {"DIM": d, "HEADS": heads, "CLASSES": cfg.extra_heads_dim, "RESULT_STRIDE": 1 + heads,
                    "RESULT_OFFSET": 1}, label="VAD heads")
    return results


def build_lm_plan(cfg: LMConfig, tensors: dict[str, Tensor]) -> Plan:
    """The LM alone: the host writes `codes` each step (tests, and until Mimi runs in the same plan)."""
    b = PlanBuilder("lm")
    b.buffer("step", "step", 16, (4,), "u32")
    position = b.step_field("position")
    codes = b.buffer("lm.codes", "state", 4 * cfg.n_q, (cfg.n_q,), "u32", reset_fill=cfg.card)
    b.inputs["codes"] = codes
    b.outputs["results"] = build_lm(b, cfg, tensors, codes, position)
    b.inputs["token"] = "lm.token"      # optional: a host may force the fed-back text token (teacher forcing)
    return b.build(step_buffer="step")
