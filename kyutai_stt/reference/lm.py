"""Numpy reference of the language-model step: each GPU kernel's op, in the kernels' own layouts, and one whole step.

Everything computes in float64 by default (`dtype` selects float32 where a caller wants fp32 rounding); weights are
the package's dequantised fp32 tensors (kyutai_stt.weights.quant.dequantize), named as in the package:

  text_emb [text_card + 1, D]        audio_emb.{k} [card + 1, D]        (last row of each = start token)
  layers.{i}.attn_norm [D]           layers.{i}.attn_qkv [3D, D] (rows q, k, v; head-major inside each)
  layers.{i}.attn_out [D, D]         layers.{i}.ffn_norm [D]
  layers.{i}.ffn_in [2F, D] (gate rows first, then up)               layers.{i}.ffn_out [D, F]
  out_norm [D]    text_head [text_card, D]    vad_heads [heads * classes, D] (head h = rows classes*h ...)

One step (moshi 0.2.13 LMModel.forward_text + StreamingTransformer, docs: shared/reference/kyutai-stt-1b.md §4):
  x = sum_{k=0..31} audio_emb.k[codes[k]] + text_emb[token]
  per layer:  x += attn_out . Attention(RoPE(q), RoPE(k), v over the ring)   with q, k, v = attn_qkv . RMSNorm(x)
              x += ffn_out . (silu(g) * u)                                   with [g | u] = ffn_in . RMSNorm(x)
  out = RMSNorm(x, out_norm);  logits = text_head . out;  token = argmax(logits) (ties: lowest index)
  vad[h] = softmax(vad_heads[h] . out)[0]

KV ring layout (as the attention kernel keeps it, per layer): k_cache and v_cache [H, context, head_dim]. The
key/value of absolute position p lives in slot p % context; at position p the valid slots are
[0, min(p + 1, context)): the current step and the previous min(p, context - 1) ones (moshi's RingKVCache and its
`delta < context` mask).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kyutai_stt.config import LMConfig
from kyutai_stt.models.rope import rope_frequencies  # noqa: F401 - the references' RoPE is the models'

RMS_EPS = 1e-8            # the LM's RMSNorm epsilon (moshi: norm "rms_norm_f32", eps 1e-8 for the LM)

# INPUT_MODE of matvec.wgsl.
INPUT_PLAIN, INPUT_RMS_NORM, INPUT_SWIGLU = 0, 1, 2


# ---------------------------------------------------------------------------------------------------- single ops
def rms_norm(x: np.ndarray, alpha: np.ndarray, eps: float = RMS_EPS, dtype=np.float64) -> np.ndarray:
    """y = x * alpha * rsqrt(mean(x^2, last axis) + eps) (INPUT_MODE 1 of matvec.wgsl, and vad_heads.wgsl)."""
    x = np.asarray(x, dtype)
    return x * np.asarray(alpha, dtype) / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)


def silu(v: np.ndarray) -> np.ndarray:
    return v / (1.0 + np.exp(-v))


def swiglu(h: np.ndarray, dtype=np.float64) -> np.ndarray:
    """[..., 2F] (gate | up) -> [..., F] = silu(gate) * up (INPUT_MODE 2 of matvec.wgsl)."""
    h = np.asarray(h, dtype)
    width = h.shape[-1] // 2
    return silu(h[..., :width]) * h[..., width:]


def matvec(w: np.ndarray, x: np.ndarray, input_mode: int = INPUT_PLAIN, alpha: np.ndarray | None = None,
           eps: float = RMS_EPS, accumulate_into: np.ndarray | None = None, dtype=np.float64) -> np.ndarray:
    """matvec.wgsl: y[s] = (accumulate_into[s] or 0) + W . in(x[s]) for x of shape [K] or [B, K].

    w: [N, K] dequantised. in(x) = x (PLAIN), rms_norm(x, alpha) (RMS_NORM) or swiglu(x) of x [.., 2K] (SWIGLU).
    """
    x = np.asarray(x, dtype)
    if input_mode == INPUT_RMS_NORM:
        x = rms_norm(x, alpha, eps, dtype)
    elif input_mode == INPUT_SWIGLU:
        x = swiglu(x, dtype)
    y = x @ np.asarray(w, dtype).T
    if accumulate_into is not None:
        y = y + np.asarray(accumulate_into, dtype)
    return y


INT8_BLOCK = 32   # inputs per scale of the int8 path (quantize_input.wgsl), one q4 scale block


def quantize_int8(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """quantize_input.wgsl's rounding of in(x) [..., K] (K % 32 == 0): (q int8-valued [..., K], scale [..., K/32])
    with q = round(v * 127 / amax) per 32-block (amax = max |v| of the block; q = 0 if 0), v ~= scale * q,
    scale = amax / 127. Ties round to even, as WGSL's round()."""
    v = np.asarray(v, np.float64)
    blocks = v.reshape(*v.shape[:-1], -1, INT8_BLOCK)
    amax = np.abs(blocks).max(axis=-1, keepdims=True)
    q = np.rint(blocks * np.divide(127.0, amax, out=np.zeros_like(amax), where=amax > 0))
    return q.reshape(v.shape).astype(np.int32), amax[..., 0] / 127.0


def matvec_int8(w: np.ndarray, x: np.ndarray, input_mode: int = INPUT_PLAIN, alpha: np.ndarray | None = None,
                eps: float = RMS_EPS, accumulate_into: np.ndarray | None = None) -> np.ndarray:
    """The int8 path (quantize_input.wgsl, then matvec_int8.wgsl): matvec() with in(x) replaced by its int8
    rounding scale * q (float64)."""
    x = np.asarray(x, np.float64)
    if input_mode == INPUT_RMS_NORM:
        x = rms_norm(x, alpha, eps)
    elif input_mode == INPUT_SWIGLU:
        x = swiglu(x)
    q, scale = quantize_int8(x)
    rounded = (q.reshape(*q.shape[:-1], -1, INT8_BLOCK) * scale[..., None]).reshape(q.shape)
    return matvec(w, rounded, accumulate_into=accumulate_into)


def quantize_f16(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """quantize_input.wgsl's OUTPUT_F16 rounding of in(x) [..., K] (K % 32 == 0): (h [..., K] float16, scale
    [..., K/32]) with scale = the least power of two above the block's max |v| (0 if it is 0) and h = f16(v / scale),
    |h| <= 1 (round to nearest even: |v / scale| < 1 may round up to 1), v ~= scale * h."""
    v = np.asarray(v, np.float64)
    blocks = v.reshape(*v.shape[:-1], -1, INT8_BLOCK)
    amax = np.abs(blocks).max(axis=-1, keepdims=True)
    scale = np.where(amax > 0, np.ldexp(1.0, np.frexp(amax)[1]), 0.0)
    h = np.divide(blocks, scale, out=np.zeros_like(blocks), where=scale > 0).astype(np.float16)
    return h.reshape(v.shape), scale[..., 0]


def embed_sum(table: np.ndarray, ids: np.ndarray, table_rows: int, accumulate_into: np.ndarray | None = None,
              dtype=np.float64) -> np.ndarray:
    """embed_sum.wgsl: x = (accumulate_into or 0) + sum_t table[t * table_rows + ids[t]], in order t = 0, 1...

    table: [tables * table_rows, D] dequantised (the host concatenates per-codebook tables); ids: [T] or [B, T].
    """
    ids = np.asarray(ids, np.int64)
    rows = np.arange(ids.shape[-1]) * table_rows + ids
    x = np.zeros(ids.shape[:-1] + (table.shape[1],), dtype)
    for t in range(ids.shape[-1]):  # in order, as PyTorch adds the streams
        x += np.asarray(table, dtype)[rows[..., t]]
    if accumulate_into is not None:
        x = np.asarray(accumulate_into, dtype) + x
    return x


def rope_angles(position: int, freqs: np.ndarray) -> np.ndarray:
    """angle_i = float32(position) * freq_i, rounded to float32 as moshi (and the kernel) do."""
    return (np.float32(position) * freqs.astype(np.float32)).astype(np.float32)


def rope(v: np.ndarray, position: int, freqs: np.ndarray, dtype=np.float64) -> np.ndarray:
    """Interleaved RoPE of v [..., head_dim]: pairs (2i, 2i+1) rotated by angle_i (cos/sin of the float32 angle)."""
    angles = rope_angles(position, freqs).astype(np.float64)
    cos, sin = np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)
    v = np.asarray(v, dtype)
    real, imag = v[..., 0::2], v[..., 1::2]
    out = np.empty_like(v)
    out[..., 0::2] = real * cos - imag * sin
    out[..., 1::2] = real * sin + imag * cos
    return out


def ring_valid_slots(position: int, context: int) -> int:
    """Slots [0, n) of the ring hold the current step and the previous min(position, context - 1) ones."""
    return min(position + 1, context)


def attention(qkv: np.ndarray, position: int, k_cache: np.ndarray, v_cache: np.ndarray, freqs: np.ndarray,
              dtype=np.float64) -> np.ndarray:
    """The attention kernel: RoPE on q and k, write k, v into the ring at slot position % context, attend.

    qkv: [3 * H * hd] (the QKV matvec output). k_cache, v_cache [H, context, hd] are updated in place (the new key
    is stored rotated, as moshi caches it). Returns the attention output [H * hd].
    """
    heads, context, head_dim = k_cache.shape
    dim = heads * head_dim
    qkv = np.asarray(qkv, dtype)
    q = rope(qkv[:dim].reshape(heads, head_dim), position, freqs, dtype)
    k = rope(qkv[dim:2 * dim].reshape(heads, head_dim), position, freqs, dtype)
    v = qkv[2 * dim:].reshape(heads, head_dim)
    slot = position % context
    k_cache[:, slot, :] = k
    v_cache[:, slot, :] = v
    return attend(q, k_cache, v_cache, ring_valid_slots(position, context), dtype)


def attend(q: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray, valid: int, dtype=np.float64) -> np.ndarray:
    """Softmax attention of the rotated queries q [H, hd] over slots [0, valid) of the rings [H, context, hd]
    (this step's key and value already written); returns [H * hd]."""
    head_dim = q.shape[1]
    keys = np.asarray(k_cache[:, :valid, :], dtype)        # [H, n, hd]
    values = np.asarray(v_cache[:, :valid, :], dtype)      # [H, n, hd]
    scores = np.einsum("hd,hnd->hn", q, keys) / np.sqrt(head_dim)
    scores -= scores.max(axis=1, keepdims=True)
    weights = np.exp(scores)
    weights /= weights.sum(axis=1, keepdims=True)
    return np.einsum("hn,hnd->hd", weights, values).reshape(q.size)


def argmax(logits: np.ndarray) -> int:
    """Greedy token: the index of the largest logit, the lowest index on ties (np.argmax's rule too)."""
    return int(np.argmax(logits))


def prompted_argmax(logits: np.ndarray, ids, emitted: int, boundary: int = 0, padding: int = 3) -> tuple[int, int]:
    """The official prompting rule (kernels/argmax.wgsl): while emitted < len(ids), only `boundary`, `padding` and
    ids[emitted] may win; returns (token, emitted after this step: + 1 when the token is ids[emitted] and not one
    of the two)."""
    if emitted >= len(ids):
        return argmax(logits), emitted
    allowed = np.full(len(logits), -np.inf, np.float64)
    for i in (boundary, padding, ids[emitted]):
        allowed[i] = logits[i]
    allowed[np.isnan(allowed)] = -np.inf
    token = int(np.argmax(allowed)) if np.isfinite(allowed).any() else 0
    return token, emitted + (token == ids[emitted] and token not in (boundary, padding))


def vad_probabilities(out: np.ndarray, w: np.ndarray, heads: int, classes: int, dtype=np.float64) -> np.ndarray:
    """p_h = softmax(w[classes*h : classes*(h+1)] . out)[0] for h < heads; out is the *normalised* output."""
    logits = (np.asarray(w, dtype) @ np.asarray(out, dtype)).reshape(heads, classes)
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e[:, 0] / e.sum(axis=1)


# ---------------------------------------------------------------------------------------------------- whole step
@dataclass
class LMState:
    """Streaming state of one stream: the step index since reset and the per-layer KV rings (kernel layout)."""
    position: int
    k_cache: list[np.ndarray] = field(default_factory=list)   # per layer [H, context, hd]
    v_cache: list[np.ndarray] = field(default_factory=list)   # per layer [H, context, hd]

    @classmethod
    def new(cls, cfg: LMConfig, dtype=np.float64) -> LMState:
        shape = (cfg.num_heads, cfg.context, cfg.head_dim)
        return cls(0, [np.zeros(shape, dtype) for _ in range(cfg.num_layers)],
                   [np.zeros(shape, dtype) for _ in range(cfg.num_layers)])


def initial_inputs(cfg: LMConfig) -> tuple[np.ndarray, int]:
    """Step 0's inputs: every audio stream = card (start token), text = text_card (start token)."""
    return np.full(cfg.n_q, cfg.card, np.int64), cfg.text_card


def lm_step_reference(weights: dict[str, np.ndarray], cfg: LMConfig, state: LMState, codes: np.ndarray,
                      text_token: int, dtype=np.float64) -> tuple[np.ndarray, np.ndarray, int]:
    """One LM step of one stream: (text logits [text_card], VAD probabilities [heads] (empty without heads), token).

    codes: the n_q audio codes fed at this step; text_token: the token fed (the previous step's output, or the start
    token). Advances `state` (its ring and position) in place.
    """
    d = cfg.dim
    freqs = rope_frequencies(cfg.head_dim, cfg.max_period)
    x = np.zeros(d, dtype)
    for k in range(cfg.n_q):  # audio streams 0..n_q-1, then text, as moshi sums them
        x += np.asarray(weights[f"audio_emb.{k}"][int(codes[k])], dtype)
    x += np.asarray(weights["text_emb"][int(text_token)], dtype)

    for i in range(cfg.num_layers):
        prefix = f"layers.{i}."
        qkv = matvec(weights[prefix + "attn_qkv"], x, INPUT_RMS_NORM, weights[prefix + "attn_norm"], dtype=dtype)
        attended = attention(qkv, state.position, state.k_cache[i], state.v_cache[i], freqs, dtype)
        x = matvec(weights[prefix + "attn_out"], attended, accumulate_into=x, dtype=dtype)
        hidden = matvec(weights[prefix + "ffn_in"], x, INPUT_RMS_NORM, weights[prefix + "ffn_norm"], dtype=dtype)
        x = matvec(weights[prefix + "ffn_out"], hidden, INPUT_SWIGLU, accumulate_into=x, dtype=dtype)

    out = rms_norm(x, weights["out_norm"], RMS_EPS, dtype)
    logits = matvec(weights["text_head"], out, dtype=dtype)
    if cfg.has_vad_heads and "vad_heads" in weights:
        vad = vad_probabilities(out, weights["vad_heads"], cfg.extra_heads_num_heads, cfg.extra_heads_dim, dtype)
    else:
        vad = np.zeros(0, dtype)
    state.position += 1
    return logits, vad, argmax(logits)
