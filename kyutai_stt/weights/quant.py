"""Quantised weight layouts and their numpy reference (quantise / dequantise). docs/weights.md has the math.

Every layout stores a matrix W[N, K] (rows = outputs, K = inputs) as separate, 4-byte aligned streams, so that a
GPU thread reads whole u32 (ideally vec4<u32>) words: no 18-byte Q4_0 blocks straddling word boundaries.

  q4:  qs  u32[N, K/8]   word j of row n: nibble i (bits 4i..4i+3) = q[n, 8j+i] in 0..15
       d   f16[N, K/32]  one scale per block of 32 along K;  W[n, k] = d[n, k/32] * (q[n, k] - 8)
  q8:  qs  u32[N, K/4]   byte i (bits 8i..8i+7) of word j = q[n, 4j+i] as int8 in -127..127
       d   f16[N, K/32]  W[n, k] = d[n, k/32] * q[n, k]
  f16: w   f16[N, K]     (two per u32)
  f32: w   f32[N, K]

A scale stream of K/32 halves packs two per u32, so K must be a multiple of 64 for q4/q8 (all LM matrices are).
"""
from __future__ import annotations

import numpy as np

from kyutai_stt.errors import UserError

BLOCK = 32                  # weights per scale: 0.5 bit of scale per weight in f16
Q4_OFFSET = 8               # stored nibble q means q - 8: symmetric range -8..7
Q8_MAX = 127                # symmetric int8; -128 unused so that -q is representable
QUANT_TYPES = ("q4", "q8", "f16", "f32")
BITS_PER_WEIGHT = {"q4": 4 + 16 / BLOCK, "q8": 8 + 16 / BLOCK, "f16": 16, "f32": 32}
FORMATS = {"f32": 0, "f16": 1, "q8": 2, "q4": 3}   # the kernels' FORMAT override constant per layout


class QuantError(UserError, ValueError):
    pass


def check_shape(quant: str, shape: tuple[int, ...]) -> None:
    if quant not in QUANT_TYPES:
        raise QuantError(f"unknown quant type {quant!r}: one of {', '.join(QUANT_TYPES)}")
    if quant in ("q4", "q8") and (len(shape) != 2 or shape[1] % (2 * BLOCK)):
        raise QuantError(f"{quant} needs a 2-D matrix with K a multiple of {2 * BLOCK}, got {list(shape)}")


# Least-squares block scales: each block tries these candidate scales, d = (block's reference value) / c, rounds
# its weights with each, refits d = sum(w q) / sum(q^2) for those integers (the least-squares scale, then rounded
# to f16) and keeps the candidate of least squared error. The reference value is the signed largest-magnitude
# weight for q4 (c = -8 is llama.cpp's Q4_0 choice; larger |c| clip the extreme weight to win resolution for the
# others) and the absmax for q8. The first candidate rounds exactly as the absmax scale does, and the refit can only
# lower a block's error, so no block is worse than with the absmax scale (measured per tensor by `kyutai-stt
# convert --report`: docs/weights.md). Same layout, same kernels; only conversion takes longer (5 passes).
SCALE_CANDIDATES = {"q4": (-8.0, -9.0, -8.5, -7.5, -7.0), "q8": (127.0, 125.0, 123.0, 121.0, 119.0)}
SCALE_METHODS = ("lsq", "absmax")
# Weights per pass: the candidate loop makes ~8 passes over three 1 MB temporaries, which then stay in cache
# (L2/L3) instead of streaming from memory: 1.6x faster than 16 MB chunks on the 2-core CI machine.
_CHUNK = 1 << 18


def quantize(w: np.ndarray, quant: str, method: str = "lsq") -> dict[str, np.ndarray]:
    """W[N, K] (float) -> the layout's streams, named as in the module docstring. method: "lsq" (least-squares
    block scales, the converter's choice) or "absmax" (the largest weight sets the scale; for comparison)."""
    check_shape(quant, w.shape)
    if method not in SCALE_METHODS:
        raise QuantError(f"unknown scale method {method!r}: one of {', '.join(SCALE_METHODS)}")
    w = np.asarray(w, dtype=np.float32)
    if quant == "f32":
        return {"w": w.copy()}
    if quant == "f16":
        with np.errstate(over="ignore"):                    # checked just below
            half = w.astype(np.float16)
        if not np.isfinite(half).all() and np.isfinite(w).all():
            raise QuantError(f"a value of {np.abs(w).max():.4g} exceeds f16's range (65504)")
        return {"w": half}
    n, k = w.shape
    candidates = SCALE_CANDIDATES[quant][:1 if method == "absmax" else None]
    d = np.empty((n, k // BLOCK), np.float16)
    q = np.empty((n, k), np.int8)
    rows = max(1, _CHUNK // k)
    for first in range(0, n, rows):
        d[first:first + rows], q[first:first + rows] = _block_scales(w[first:first + rows], quant, candidates,
                                                                   refit=method == "lsq")
    if quant == "q4":                                       # little-endian: byte i of a word = nibbles 2i, 2i+1
        nibbles = (q + np.int8(Q4_OFFSET)).view(np.uint8)
        packed = nibbles[:, 0::2] | (nibbles[:, 1::2] << np.uint8(4))
        return {"qs": packed.view(np.uint32).reshape(n, k // 8), "d": d}
    return {"qs": q.view(np.uint8).reshape(n, k // 4, 4).copy().view(np.uint32)[..., 0], "d": d}


def _block_scales(w: np.ndarray, quant: str, candidates, refit: bool) -> tuple[np.ndarray, np.ndarray]:
    """Rows W[n, K] -> (d f16[n, K/32], q int8[n, K]) with W ~ d * q blockwise, q in -8..7 (q4) or -127..127."""
    n, k = w.shape
    blocks = w.reshape(n, k // BLOCK, BLOCK)
    if quant == "q4":
        idx = np.abs(blocks).argmax(axis=2)
        reference = np.take_along_axis(blocks, idx[..., None], axis=2)[..., 0]
        low, high = -Q4_OFFSET, Q4_OFFSET - 1
    else:
        reference = np.abs(blocks).max(axis=2)
        low, high = -Q8_MAX, Q8_MAX
    best_error = np.full(reference.shape, np.inf, np.float32)
    best_d = np.zeros(reference.shape, np.float32)
    best_c = np.zeros(reference.shape, np.float32)
    q, residual = np.empty_like(blocks), np.empty_like(blocks)
    for c in candidates:
        inverse = _inverse(reference, c)
        np.multiply(blocks, inverse[..., None], out=q)
        np.rint(q, out=q)
        np.clip(q, low, high, out=q)
        if not refit:                                   # absmax: the candidate scale itself, one candidate
            return (reference / np.float32(c)).astype(np.float16), q.reshape(n, k).astype(np.int8)
        sum_wq = np.einsum("nbk,nbk->nb", blocks, q)
        sum_q2 = np.einsum("nbk,nbk->nb", q, q)
        d = (sum_wq / np.maximum(sum_q2, 1)).astype(np.float16).astype(np.float32)
        np.multiply(q, d[..., None], out=residual)          # the error itself, not sum_w2 - 2 d sum_wq + ...:
        np.subtract(blocks, residual, out=residual)         # that cancels to ~1 % noise at q8's error level
        error = np.einsum("nbk,nbk->nb", residual, residual)
        better = error < best_error
        best_error[better], best_d[better], best_c[better] = error[better], d[better], c
    np.multiply(blocks, _inverse_per_block(reference, best_c)[..., None], out=q)
    np.rint(q, out=q)
    np.clip(q, low, high, out=q)
    return best_d.astype(np.float16), q.reshape(n, k).astype(np.int8)


def _inverse(reference: np.ndarray, c: float) -> np.ndarray:
    """1 / f16(reference / c) (0 for a zero block): weights are rounded with the f16 scale, as absmax stores it."""
    d = (reference / np.float32(c)).astype(np.float16).astype(np.float32)
    return np.divide(1.0, d, out=np.zeros_like(d), where=d != 0).astype(np.float32)


def _inverse_per_block(reference: np.ndarray, c: np.ndarray) -> np.ndarray:
    d = np.divide(reference, c, out=np.zeros_like(reference), where=c != 0).astype(np.float16).astype(np.float32)
    return np.divide(1.0, d, out=np.zeros_like(d), where=d != 0).astype(np.float32)


def dequantize(streams: dict[str, np.ndarray], quant: str, shape: tuple[int, ...]) -> np.ndarray:
    """The layout's streams -> W[N, K] in float32: the reference every GPU kernel is tested against."""
    check_shape(quant, shape)
    if quant in ("f32", "f16"):
        return np.asarray(streams["w"]).astype(np.float32).reshape(shape)
    n, k = shape
    d = np.asarray(streams["d"]).view(np.float16).astype(np.float32).reshape(n, k // BLOCK)
    words = np.asarray(streams["qs"]).view(np.uint32).reshape(n, -1)
    if quant == "q4":
        packed = words.view(np.uint8).reshape(n, k // 2)       # little-endian, as quantize packs it
        q = np.empty((n, k), np.float32)
        q[:, 0::2], q[:, 1::2] = packed & np.uint8(0xF), packed >> np.uint8(4)
        q -= Q4_OFFSET
    else:
        q = words.view(np.int8).reshape(n, k).astype(np.float32)
    return (q.reshape(n, k // BLOCK, BLOCK) * d[..., None]).reshape(n, k)


def nbytes(quant: str, shape: tuple[int, ...]) -> int:
    """Bytes of all streams of a tensor in this layout."""
    return int(np.prod(shape, dtype=np.int64)) * int(2 * BITS_PER_WEIGHT[quant]) // 16
