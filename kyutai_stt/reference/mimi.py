"""Numpy reference of the Mimi encode path: each GPU kernel's op in the kernels' layouts, and one streaming frame.

Weights are package tensors (docs/weights.md), dequantised to float32 and named as in the package:
  mimi.conv_in [64, 7] (+ .bias)        mimi.blocks.{s}.res_conv1 [C/2, 3C], .res_conv2 [C, C/2], .down [2C, 2rC]
  mimi.conv_out [512, 3 * 1024] (+ .bias)  convs: [C_out, k * C_in], column = tap * C_in + c_in (k-major)
  mimi.layers.{i}.attn_norm / .attn_norm.bias / .attn_qkv [1536, 512] / .attn_out / .attn_scale
                  .ffn_norm / .ffn_norm.bias / .ffn_in [2048, 512] / .ffn_out [512, 2048] / .ffn_scale
  mimi.downsample [512, 4 * 512]                mimi.rvq_in [512, 512] (rows 0..255 semantic, 256..511 acoustic)
  mimi.codebooks [32 * 2048, 256]               mimi.codebook_sqnorms [32, 2048]

One frame (moshi 0.2.13: SEANetEncoder, ProjectedTransformer, ConvDownsample1d, SplitResidualVectorQuantizer, in
streaming mode; docs/mimi.md):
  pcm [1920] -> conv_in (k 7) -> per stage s (C = 64 * 2^s, r = 4, 5, 6, 8): x += res_conv2(ELU(res_conv1(ELU(x))));
  x = down(ELU(x)) (k 2r, stride r) -> conv_out(ELU(x)) (k 3) -> [2, 512] at 25 Hz -> 8 transformer layers
  (x += scale1 * out(attn(qkv(LN1(x)))); x += scale2 * ffn_out(gelu(ffn_in(LN2(x))))) -> downsample (k 4, stride 2,
  replicate padding on the first frame) -> latent [512] -> proj = rvq_in . latent -> split RVQ -> 32 codes.
Every conv is causal and streaming: it keeps the last k - stride rows of its input (zeros at the start).
The transformer sees its 2 steps at once with a ring of 250 slots (moshi's streaming quirk: docs/reference.md).

Everything computes in float64 by default (`dtype` selects float32).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from kyutai_stt.config import MIMI, MimiConfig
from kyutai_stt.models.rope import rope_frequencies
from kyutai_stt.reference.lm import rope
from kyutai_stt.weights import checkpoint, convert, names, quant, synthetic

LAYER_NORM_EPS = 1e-5
CODEBOOK_USAGE_MIN = 1e-5       # moshi: codebook = embedding_sum / clamp(cluster_usage, min=1e-5)


# ---------------------------------------------------------------------------------------------------- single ops
def elu(x: np.ndarray) -> np.ndarray:
    """ELU with alpha 1: x if x > 0 else expm1(x)."""
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


_erf = np.frompyfunc(math.erf, 1, 1)


def gelu(x: np.ndarray, dtype=np.float64) -> np.ndarray:
    """Exact GELU: 0.5 x (1 + erf(x / sqrt 2)) (torch's F.gelu default), erf from math (double precision)."""
    x = np.asarray(x, np.float64)
    return (0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))).astype(dtype)


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = LAYER_NORM_EPS, dtype=np.float64):
    """LayerNorm over the last axis, biased variance (torch.nn.LayerNorm)."""
    x = np.asarray(x, dtype)
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * np.asarray(w, dtype) + np.asarray(b, dtype)


def conv_stream(history: np.ndarray, x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, stride: int,
                dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """One streaming causal conv step in the package layout: (y [T // stride, C_out], new history).

    history [P, C_in] (P = k - stride rows of earlier input), x [T, C_in] time-major, w [C_out, k * C_in] k-major.
    y[t] = bias + sum_tap w[:, tap*C_in:(tap+1)*C_in] . concat(history, x)[t * stride + tap]; the new history is the
    last P rows of concat(history, x) (conv1d.wgsl's double-buffered regions hold exactly these)."""
    c_out, width = w.shape
    c_in = x.shape[1]
    taps = width // c_in
    full = np.concatenate([np.asarray(history, dtype), np.asarray(x, dtype)])
    steps = x.shape[0] // stride
    y = np.zeros((steps, c_out), dtype)
    wd = np.asarray(w, dtype)
    for tap in range(taps):
        rows = full[tap: tap + stride * (steps - 1) + 1: stride]
        y += rows @ wd[:, tap * c_in:(tap + 1) * c_in].T
    if bias is not None:
        y += np.asarray(bias, dtype)
    keep = taps - stride
    return y, full[full.shape[0] - keep:].copy() if keep else full[:0].copy()


def attention_chunk(qkv: np.ndarray, base: int, k_cache: np.ndarray, v_cache: np.ndarray, freqs: np.ndarray,
                    context: int, dtype=np.float64) -> np.ndarray:
    """attention_chunk.wgsl: a chunk of T steps at positions base .. base + T - 1 over a ring of R slots.

    qkv [T, 3D]; k_cache, v_cache [H, R, hd] updated in place (keys stored rotated). All T keys are
    written first; query t then attends to positions [max(0, p - context + 1, base + T - R), p], p = base + t.
    Returns [T, D]."""
    heads, ring, head_dim = k_cache.shape
    steps, dim = qkv.shape[0], heads * head_dim
    qkv = np.asarray(qkv, dtype)
    queries = []
    for t in range(steps):
        p = base + t
        q = rope(qkv[t, :dim].reshape(heads, head_dim), p, freqs, dtype)
        k = rope(qkv[t, dim:2 * dim].reshape(heads, head_dim), p, freqs, dtype)
        k_cache[:, p % ring, :] = k
        v_cache[:, p % ring, :] = qkv[t, 2 * dim:].reshape(heads, head_dim)
        queries.append(q)
    out = np.zeros((steps, dim), dtype)
    for t in range(steps):
        p = base + t
        lo = max(0, p - context + 1, base + steps - ring)
        slots = np.arange(lo, p + 1) % ring
        keys = np.asarray(k_cache[:, slots, :], dtype)          # [H, n, hd]
        values = np.asarray(v_cache[:, slots, :], dtype)        # [H, n, hd]
        scores = np.einsum("hd,hnd->hn", queries[t], keys) / np.sqrt(head_dim)
        scores -= scores.max(axis=1, keepdims=True)
        weights = np.exp(scores)
        weights /= weights.sum(axis=1, keepdims=True)
        out[t] = np.einsum("hn,hnd->hd", weights, values).reshape(dim)
    return out


def rvq_encode(proj: np.ndarray, codebooks: np.ndarray, sqnorms: np.ndarray, levels: int = 32, bins: int = 2048,
               semantic: int = 1, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """rvq.wgsl: split residual VQ. proj [2 * dim] (group 0 = levels < semantic, group 1 = the rest, each from its
    own half). Per level: code = argmin(|c|^2 - 2 r.c) (ties: lowest index), r -= c[code].

    Returns (codes [levels] int64, margins [levels]: second-smallest minus smallest Euclidean distance |r - c|)."""
    dim = codebooks.shape[1]
    codes = np.zeros(levels, np.int64)
    margins = np.zeros(levels, np.float64)
    books = np.asarray(codebooks, dtype).reshape(levels, bins, dim)
    sq = np.asarray(sqnorms, dtype).reshape(levels, bins)
    for group, (start, end) in enumerate(((0, semantic), (semantic, levels))):
        r = np.asarray(proj[group * dim:(group + 1) * dim], dtype)
        for level in range(start, end):
            scores = sq[level] - 2.0 * (books[level] @ r)
            codes[level] = int(np.argmin(scores))
            distances = np.sqrt(np.maximum(scores + r @ r, 0.0))
            two = np.partition(distances, 1)[:2]
            margins[level] = two[1] - two[0]
            r = r - books[level, codes[level]]
    return codes, margins


# ---------------------------------------------------------------------------------------------------- a frame
def stage_shapes(cfg: MimiConfig = MIMI) -> list[tuple[int, int]]:
    """(channels C, stride r) of the SEANet stages, in encoder order: (64, 4), (128, 5), (256, 6), (512, 8)."""
    return [(cfg.n_filters * 2 ** s, r) for s, r in enumerate(reversed(cfg.ratios))]


@dataclass
class MimiState:
    """Streaming state: each conv's input history, the transformer's KV rings, the 25 Hz step count."""
    histories: dict[str, np.ndarray] = field(default_factory=dict)
    k_cache: list[np.ndarray] = field(default_factory=list)
    v_cache: list[np.ndarray] = field(default_factory=list)
    steps: int = 0            # 25 Hz transformer steps so far (2 per frame)
    frames: int = 0

    @classmethod
    def new(cls, cfg: MimiConfig = MIMI, ring: int | None = None, dtype=np.float64) -> MimiState:
        ring = ring or cfg.context
        hd = cfg.dimension // cfg.num_heads
        state = cls()
        state.histories["conv_in"] = np.zeros((cfg.kernel_size - 1, cfg.channels), dtype)
        for s, (c, r) in enumerate(stage_shapes(cfg)):
            state.histories[f"blocks.{s}.res_conv1"] = np.zeros((cfg.residual_kernel_size - 1, c), dtype)
            state.histories[f"blocks.{s}.down"] = np.zeros((r, c), dtype)
        channels = cfg.n_filters * 2 ** len(cfg.ratios)
        state.histories["conv_out"] = np.zeros((cfg.last_kernel_size - 1, channels), dtype)
        stride = cfg.downsample_stride
        state.histories["downsample"] = np.zeros((stride, cfg.dimension), dtype)
        state.k_cache = [np.zeros((cfg.num_heads, ring, hd), dtype) for _ in range(cfg.num_layers)]
        state.v_cache = [np.zeros((cfg.num_heads, ring, hd), dtype) for _ in range(cfg.num_layers)]
        return state


def _conv(weights, name, state, x, stride, dtype):
    bias = weights.get(f"mimi.{name}.bias")
    y, state.histories[name] = conv_stream(state.histories[name], x, weights[f"mimi.{name}"], bias, stride, dtype)
    return y


def encoder_frame(weights: dict[str, np.ndarray], state: MimiState, pcm: np.ndarray, cfg: MimiConfig = MIMI,
                  dtype=np.float64) -> np.ndarray:
    """SEANet + transformer + downsample of one frame of pcm [1920]: the latent [512] (advances `state`)."""
    x = _conv(weights, "conv_in", state, np.asarray(pcm, dtype).reshape(-1, 1), 1, dtype)
    for s, (c, r) in enumerate(stage_shapes(cfg)):
        h = elu(_conv(weights, f"blocks.{s}.res_conv1", state, elu(x), 1, dtype))
        x = x + conv_stream(np.zeros((0, c // cfg.compress), dtype), h, weights[f"mimi.blocks.{s}.res_conv2"],
                            weights[f"mimi.blocks.{s}.res_conv2.bias"], 1, dtype)[0]
        x = _conv(weights, f"blocks.{s}.down", state, elu(x), r, dtype)
    x = _conv(weights, "conv_out", state, elu(x), 1, dtype)                   # [2, 512] at 25 Hz
    x = transformer_chunk(weights, state, x, cfg, dtype)
    if state.frames == 0:                                                      # replicate padding, first call
        state.histories["downsample"][:] = x[0]
    latent = _conv(weights, "downsample", state, x, cfg.downsample_stride, dtype)
    state.frames += 1
    return latent[0]


def transformer_chunk(weights, state: MimiState, x: np.ndarray, cfg: MimiConfig = MIMI, dtype=np.float64):
    """The 8 encoder-transformer layers over a chunk of steps x [T, 512] at positions state.steps ...; advances."""
    hd = cfg.dimension // cfg.num_heads
    freqs = rope_frequencies(hd, cfg.max_period)
    x = np.asarray(x, dtype)
    for i in range(cfg.num_layers):
        p = f"mimi.layers.{i}."
        h = layer_norm(x, weights[p + "attn_norm"], weights[p + "attn_norm.bias"], cfg.layer_norm_eps, dtype)
        qkv = h @ np.asarray(weights[p + "attn_qkv"], dtype).T
        att = attention_chunk(qkv, state.steps, state.k_cache[i], state.v_cache[i], freqs, cfg.context, dtype)
        x = x + np.asarray(weights[p + "attn_scale"], dtype) * (att @ np.asarray(weights[p + "attn_out"], dtype).T)
        h = layer_norm(x, weights[p + "ffn_norm"], weights[p + "ffn_norm.bias"], cfg.layer_norm_eps, dtype)
        f = gelu(h @ np.asarray(weights[p + "ffn_in"], dtype).T, dtype)
        x = x + np.asarray(weights[p + "ffn_scale"], dtype) * (f @ np.asarray(weights[p + "ffn_out"], dtype).T)
    state.steps += x.shape[0]
    return x


def quantize_latent(weights, latent: np.ndarray, cfg: MimiConfig = MIMI, dtype=np.float64):
    """(codes [32], margins [32]) of a latent [512]: rvq_in projection, then the split RVQ."""
    proj = np.asarray(weights["mimi.rvq_in"], dtype) @ np.asarray(latent, dtype)
    return rvq_encode(proj, weights["mimi.codebooks"], weights["mimi.codebook_sqnorms"], cfg.n_q, cfg.bins,
                      1, dtype)


def encode(weights: dict[str, np.ndarray], pcm: np.ndarray, cfg: MimiConfig = MIMI, frames: int | None = None,
           ring: int | None = None, dtype=np.float64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Streaming encode of whole 1920-sample frames: (latents [F, 512], codes [F, 32], margins [F, 32]).

    ring: KV ring capacity (default the context, 250: moshi's streaming behaviour; context + 1 = offline's true
    sliding window)."""
    size = cfg.frame_size
    frames = len(pcm) // size if frames is None else frames
    weights = {name: np.asarray(w, dtype) for name, w in weights.items()}     # converted once, not per frame
    state = MimiState.new(cfg, ring, dtype)
    latents, codes, margins = [], [], []
    for f in range(frames):
        latent = encoder_frame(weights, state, pcm[f * size:(f + 1) * size], cfg, dtype)
        c, m = quantize_latent(weights, latent, cfg, dtype)
        latents.append(latent)
        codes.append(c)
        margins.append(m)
    return np.array(latents), np.array(codes), np.array(margins)


# ---------------------------------------------------------------------------------------------------- weights
def official_encoder_tensors(seed: int = 0, cfg: MimiConfig = MIMI) -> dict[str, np.ndarray]:
    """The encode path of the synthetic official Mimi checkpoint of `seed` (kyutai_stt.weights.synthetic: the weights of
    every synthetic checkpoint of that seed, tiny or full), as package tensors in float32 before quantisation:
    the name map and value transforms of kyutai_stt.weights.convert (conv matrices k-major, codebooks divided by their
    clamped usage, the two rvq input projections stacked), plus the codebooks' squared norms."""
    layout = checkpoint.mimi_encoder_layout(cfg)
    mapping = names.package_sources(list(layout), names.MIMI_NAMES, names.MIMI_DROPPED)
    out = {}
    for name, sources in mapping.items():
        parts = []
        for official in sources:
            value = synthetic.mimi_tensor(cfg, official, layout[official], seed)
            if official.endswith("._codebook.embedding_sum"):
                usage_name = official.replace("embedding_sum", "cluster_usage")
                usage = synthetic.mimi_tensor(cfg, usage_name, layout[usage_name], seed)
                value = value / np.maximum(usage, CODEBOOK_USAGE_MIN)[:, None]
            elif value.ndim == 3:
                value = convert._conv_matrix(value)
            parts.append(np.asarray(value, np.float32))
        out[name] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
    return out


def package_tensors(values: dict[str, np.ndarray], choice: str | None = None, cfg: MimiConfig = MIMI):
    """Quantise package tensors as `kyutai-stt convert --quant choice` would (choice None: every tensor f32).

    Returns (tensors in manifest form {name: {"quant", "shape", "streams": {key: {"nbytes", "dtype", "shape"}}}},
    streams {"<name>.<key>": array}, dequantised {name: float32 array}), the squared norms recomputed from the
    dequantised codebooks as convert.py does."""
    manifest, streams, dequantised = {}, {}, {}

    def add(name, value, q):
        s = quant.quantize(value, q)
        manifest[name] = {"quant": q, "shape": list(value.shape),
                          "streams": {k: {"nbytes": int(v.nbytes), "dtype": str(v.dtype), "shape": list(v.shape)}
                                      for k, v in s.items()}}
        for k, v in s.items():
            streams[f"{name}.{k}"] = v
        dequantised[name] = quant.dequantize(s, q, value.shape)

    for name, value in values.items():
        if name == names.SQNORMS:
            continue
        add(name, value, "f32" if choice is None else names.precision(name, value.shape, choice))
    books = dequantised["mimi.codebooks"]
    sq = np.einsum("nd,nd->n", books, books).reshape(cfg.n_q, cfg.bins)
    add(names.SQNORMS, sq, "f32")
    return manifest, streams, dequantised
