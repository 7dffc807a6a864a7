"""Helpers shared by the kernel tests: weight streams as the package stores them, in/out buffers, error bounds."""

from dataclasses import dataclass

import numpy as np

from kyutai_stt.engine import device as gpu
from kyutai_stt.reference import lm as ref
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


@dataclass
class ProductCase:
    """One y (+)= W in(x) problem for the matrix kernels (matvec*.wgsl, matmul.wgsl): random weights in a package
    layout, inputs for `batch` streams, an output buffer [batch, y_stride] poisoned outside rows y_offset.. (and,
    with accumulate, random values inside)."""
    streams: dict
    w: np.ndarray
    x: np.ndarray
    alpha: np.ndarray | None
    y_initial: np.ndarray
    input_mode: int
    accumulate: bool
    y_offset: int

    @property
    def bindings(self) -> dict:
        """Bindings 0-4 of the matrix kernels (alpha bound, zeros, when unused)."""
        alpha = self.alpha if self.alpha is not None else np.zeros(4, np.float32)
        return {**weight_bindings(self.streams), 2: self.x, 3: in_out(self.y_initial), 4: alpha}

    def check(self, y: np.ndarray, roundings: float, what: str) -> None:
        """y against the float64 reference, within `roundings` f32 roundings of sum |W in(x)| (and one more of the
        result with accumulate); nothing written outside the output rows."""
        rows = self.w.shape[0]
        inside = slice(self.y_offset, self.y_offset + rows)
        residual = self.y_initial[:, inside] if self.accumulate else None
        expected = ref.matvec(self.w, self.x, self.input_mode, self.alpha, accumulate_into=residual)
        transformed = {ref.INPUT_PLAIN: self.x, ref.INPUT_SWIGLU: ref.swiglu(self.x),
                       ref.INPUT_RMS_NORM: ref.rms_norm(self.x, self.alpha) if self.alpha is not None else self.x,
                       }[self.input_mode]
        bound = roundings * U32 * (np.abs(transformed) @ np.abs(self.w).T)
        if self.accumulate:
            bound = bound + U32 * np.abs(expected)
        assert_within(y[:, inside], expected, bound, what)
        assert np.isnan(y[:, :self.y_offset]).all() and np.isnan(y[:, self.y_offset + rows:]).all()


def product_case(rng, quant_type: str, rows: int, columns: int, batch: int = 1, input_mode: int = 0,
                 accumulate: bool = False, y_offset: int = 0, y_padding: int = 0) -> ProductCase:
    streams, w = random_weights(rng, (rows, columns), quant_type)
    width = 2 * columns if input_mode == ref.INPUT_SWIGLU else columns
    x = rng.standard_normal((batch, width)).astype(np.float32)
    alpha = rng.standard_normal(columns).astype(np.float32) if input_mode == ref.INPUT_RMS_NORM else None
    y_initial = np.full((batch, rows + y_offset + y_padding), np.nan, np.float32)
    if accumulate:
        y_initial[:, y_offset:y_offset + rows] = rng.standard_normal((batch, rows))
    return ProductCase(streams, w, x, alpha, y_initial, input_mode, accumulate, y_offset)
