"""RoPE: the frequency tables are moshi's, bit for bit, and the kernels' angle reduction is exact for long streams.

The tables (kyutai_stt/data/rope_freqs.json) are data written by tools/make_reference.py with torch: checked here
against torch itself. The reduction modulo 2 pi of attention.wgsl and attention_chunk.wgsl (Cody-Waite, seven
parts) is emulated in numpy float32 (IEEE operations, as WGSL's) from the constants parsed out of both kernels,
and compared with an exact reduction of the same f32 angles up to position 2^23. The end-to-end check on the GPU
is tests/models/test_long_positions.py.
"""
from __future__ import annotations

import importlib.util
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from kyutai_stt.models.rope import rope_frequencies
from kyutai_stt.weights.synthetic import MIMIS, SIZES

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "kyutai_stt" / "kernels"
# 2 pi to 60 digits.
TWO_PI = Fraction("6.28318530717958647692528676655900576839433879875021164194988918")
REDUCTION_BOUND = 1.3e-7         # rad: the reduced angle vs the exact (f32 angle) mod 2 pi
LAST_EXACT_POSITION = 2 ** 23    # turns * part stays exact below 2^21 turns


def known_configurations():
    return sorted({(c.head_dim, float(c.max_period)) for c in SIZES.values()}
                  | {(m.dimension // m.num_heads, float(m.max_period)) for m in MIMIS.values()})


def test_tables_equal_torch():
    spec = importlib.util.spec_from_file_location("make_reference", ROOT / "tools" / "make_reference.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)                                        # imports torch and moshi
    for head_dim, period in known_configurations():
        ours = rope_frequencies(head_dim, period)
        official = tool.official_rope_frequencies(head_dim, period)
        assert ours.dtype == np.float32 and ours.shape == (head_dim // 2,)
        np.testing.assert_array_equal(ours.view(np.uint32), official.view(np.uint32),
                                      err_msg=f"head_dim {head_dim}, max_period {period}")


def test_unknown_configuration_gets_correctly_rounded_values():
    freqs = rope_frequencies(8, 1234.0)
    arguments = np.arange(4, dtype=np.float32) * np.float32(-np.log(1234.0) * 2 / 8)
    np.testing.assert_array_equal(freqs, np.exp(arguments.astype(np.float64)).astype(np.float32))


def kernel_parts(name: str) -> tuple[list[np.float32], np.float32]:
    text = (KERNELS / name).read_text()
    parts = [np.float32(v) for _, v in sorted(re.findall(r"const TWO_PI_(\d) = ([-0-9.e]+);", text))]
    inverse = np.float32(re.search(r"const INVERSE_TWO_PI = ([-0-9.e]+);", text).group(1))
    assert len(parts) == 7 and f"turns * TWO_PI_{len(parts) - 1}" in text, name
    return parts, inverse


def reduce_like_the_kernel(angle: np.ndarray, parts, inverse) -> np.ndarray:
    turns = np.rint(angle * inverse).astype(np.float32)                 # WGSL round: half to even, as rint
    reduced = angle
    for part in parts:
        reduced = (reduced - (turns * part).astype(np.float32)).astype(np.float32)
    return reduced


def test_both_kernels_share_the_reduction_constants():
    assert kernel_parts("attention.wgsl") == kernel_parts("attention_chunk.wgsl")
    parts, _ = kernel_parts("attention.wgsl")
    for part in parts[:-1]:                                              # at most 3 significant bits each
        numerator = Fraction(float(part)).numerator
        assert abs(numerator).bit_length() <= 3, part
    total = sum(Fraction(float(p)) for p in parts)
    assert abs(float(total - TWO_PI)) < 1e-15


@pytest.mark.parametrize("head_dim, period", known_configurations())
def test_reduction_is_exact_up_to_2_to_the_23(head_dim, period):
    parts, inverse = kernel_parts("attention.wgsl")
    freqs = rope_frequencies(head_dim, period)
    rng = np.random.default_rng(0)
    positions = np.concatenate([np.arange(0, 4096), rng.integers(0, LAST_EXACT_POSITION, 200_000),
                                np.arange(LAST_EXACT_POSITION - 4096, LAST_EXACT_POSITION)])
    # The 24 h positions of the long-position tests, and their neighbourhoods.
    for frame in (90_000, 450_000, 1_080_000):
        positions = np.concatenate([positions, np.arange(frame - 64, 2 * frame + 64)[::1000], [frame, 2 * frame]])
    angles = (positions.astype(np.float32)[:, None] * freqs[None, :]).astype(np.float32)   # as moshi rounds it
    reduced = reduce_like_the_kernel(angles, parts, inverse).astype(np.float64)
    exact = np.array([[float(_exact_mod(Fraction(float(a)))) for a in row] for row in angles[::97]])
    error = np.abs(_wrap(reduced[::97] - exact))
    assert error.max() <= REDUCTION_BOUND, f"worst {error.max():.2e}"
    # Everywhere: against a float64 reduction (2 pi in two doubles: 2^-100 accurate, far below f32 rounding).
    hi = float(TWO_PI)
    lo = float(TWO_PI - Fraction(hi))
    a = angles.astype(np.float64)
    n = np.rint(a / hi)
    error = np.abs(_wrap(reduced - ((a - n * hi) - n * lo)))
    assert error.max() <= REDUCTION_BOUND, f"worst {error.max():.2e}"


def _exact_mod(a: Fraction) -> Fraction:
    n = round(a / TWO_PI)
    return a - n * TWO_PI


def _wrap(x: np.ndarray) -> np.ndarray:
    return np.remainder(x + np.pi, 2 * np.pi) - np.pi
