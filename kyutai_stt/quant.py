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

from .errors import UserError

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


def quantize(w: np.ndarray, quant: str) -> dict[str, np.ndarray]:
    """W[N, K] (float) -> the layout's streams, named as in the module docstring."""
    check_shape(quant, w.shape)
    w = np.asarray(w, dtype=np.float32)
    if quant == "f32":
        return {"w": w.copy()}
    if quant == "f16":
        return {"w": w.astype(np.float16)}
    n, k = w.shape
    blocks = w.reshape(n, k // BLOCK, BLOCK)
    absmax = np.abs(blocks).max(axis=2)
    if quant == "q4":
        # Scale so the largest-magnitude weight maps to -8 exactly (its sign chooses which end), as llama.cpp's
        # Q4_0 does: the full 16 levels are used instead of 15.
        idx = np.abs(blocks).argmax(axis=2)
        signed_max = np.take_along_axis(blocks, idx[..., None], axis=2)[..., 0]
        d = (signed_max / -Q4_OFFSET).astype(np.float16)
        inv = np.where(d != 0, 1.0 / d.astype(np.float32), 0.0)
        q = np.clip(np.rint(blocks * inv[..., None]) + Q4_OFFSET, 0, 15).astype(np.uint32).reshape(n, k)
        words = np.zeros((n, k // 8), np.uint32)
        for i in range(8):
            words |= q[:, i::8] << np.uint32(4 * i)
        return {"qs": words, "d": d}
    d = (absmax / Q8_MAX).astype(np.float16)
    inv = np.where(d != 0, 1.0 / d.astype(np.float32), 0.0)
    q = np.clip(np.rint(blocks * inv[..., None]), -Q8_MAX, Q8_MAX).astype(np.int8).reshape(n, k)
    return {"qs": q.view(np.uint8).reshape(n, k // 4, 4).copy().view(np.uint32)[..., 0], "d": d}


def dequantize(streams: dict[str, np.ndarray], quant: str, shape: tuple[int, ...]) -> np.ndarray:
    """The layout's streams -> W[N, K] in float32: the reference every GPU kernel is tested against."""
    check_shape(quant, shape)
    if quant in ("f32", "f16"):
        return np.asarray(streams["w"]).astype(np.float32).reshape(shape)
    n, k = shape
    d = np.asarray(streams["d"]).view(np.float16).astype(np.float32).reshape(n, k // BLOCK)
    words = np.asarray(streams["qs"]).view(np.uint32).reshape(n, -1)
    if quant == "q4":
        q = np.empty((n, k), np.float32)
        for i in range(8):
            q[:, i::8] = ((words >> np.uint32(4 * i)) & np.uint32(0xF)).astype(np.float32) - Q4_OFFSET
    else:
        q = words.view(np.int8).reshape(n, k).astype(np.float32)
    return (q.reshape(n, k // BLOCK, BLOCK) * d[..., None]).reshape(n, k)


def nbytes(quant: str, shape: tuple[int, ...]) -> int:
    """Bytes of all streams of a tensor in this layout."""
    return int(np.prod(shape, dtype=np.int64)) * int(2 * BITS_PER_WEIGHT[quant]) // 16
