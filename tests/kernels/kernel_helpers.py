"""Helpers shared by the kernel tests: weight streams as the package stores them, in/out buffers, error bounds."""

import numpy as np

from kyutai_stt.engine import device as gpu
from kyutai_stt.weights import quant

# Unit roundoff of f32: every error bound below counts roundings of this size.
U32 = 2.0**-24


def weight_bindings(streams: dict[str, np.ndarray], first_binding: int = 0) -> dict[int, np.ndarray]:
    """A tensor's quant streams as the FORMAT kernels bind them: weights (or qs) first, then the f16 scales as u32
    words, or the weights again for f32/f16 (every format declares the scales binding)."""
    main = streams["qs"] if "qs" in streams else streams["w"]
    scales = np.ascontiguousarray(streams["d"]).view(np.uint32) if "d" in streams else main
    return {first_binding: main, first_binding + 1: scales}


def random_weights(rng: np.random.Generator, shape: tuple[int, int], quant_type: str, scale: float = 1.0):
    """(streams, dequantised float32 W): a random matrix stored in a package layout, and what it decodes to."""
    w = (scale * rng.standard_normal(shape)).astype(np.float32)
    streams = quant.quantize(w, quant_type)
    return streams, quant.dequantize(streams, quant_type, shape)


def in_out(initial: np.ndarray) -> gpu.Output:
    """A read-write buffer that starts with `initial` and is read back (accumulating kernels)."""
    return gpu.Output(initial.shape, initial.dtype, fill=initial)


def poisoned(shape, dtype=np.float32) -> gpu.Output:
    """An output that starts as NaN (float) or all ones (u32), so that unwritten elements show."""
    fill = np.nan if np.dtype(dtype).kind == "f" else np.iinfo(dtype).max
    return gpu.Output(tuple(np.atleast_1d(shape)), dtype, fill=fill)


def assert_within(actual: np.ndarray, expected: np.ndarray, bound: np.ndarray | float, what: str = "") -> None:
    """|actual - expected| <= bound elementwise, and nothing NaN (an unwritten poisoned element)."""
    actual = np.asarray(actual, np.float64)
    assert not np.isnan(actual).any(), f"{what}: {np.isnan(actual).sum()} elements unwritten (NaN)"
    error = np.abs(actual - expected)
    bound = np.broadcast_to(np.asarray(bound, np.float64), error.shape)
    worst = np.unravel_index(np.argmax(error / np.maximum(bound, 1e-300)), error.shape)
    assert (error <= bound).all(), (
        f"{what}: {(error > bound).sum()} of {error.size} elements beyond the bound; worst at {worst}: "
        f"got {actual[worst]!r}, expected {expected[worst]!r}, error {error[worst]:.3g} > bound {bound[worst]:.3g}")
