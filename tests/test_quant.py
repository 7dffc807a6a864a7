"""quant.py's block scales: absmax (llama.cpp's Q4_0 rule) and least squares (the converter's choice)."""
import numpy as np
import pytest

from kyutai_stt.weights import quant


def weights(kind: str, shape=(256, 1024), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "gaussian":
        return (0.02 * rng.standard_normal(shape)).astype(np.float32)
    return (0.02 * rng.standard_t(3, shape)).astype(np.float32)       # heavy tails, like trained weights


def block_errors(w, streams, q):
    error = quant.dequantize(streams, q, w.shape) - w
    return np.square(error, dtype=np.float64).reshape(w.shape[0], -1, quant.BLOCK).sum(axis=2)


def test_absmax_is_the_q4_0_rule():
    w = weights("gaussian")
    streams = quant.quantize(w, "q4", "absmax")
    blocks = w.reshape(w.shape[0], -1, quant.BLOCK)
    extreme = np.take_along_axis(blocks, np.abs(blocks).argmax(axis=2)[..., None], axis=2)[..., 0]
    d = (extreme / -8).astype(np.float16)
    np.testing.assert_array_equal(streams["d"], d)
    q = np.clip(np.rint(blocks / d.astype(np.float32)[..., None]), -8, 7)
    np.testing.assert_array_equal(quant.dequantize(streams, "q4", w.shape),
                                  (q * d.astype(np.float32)[..., None]).reshape(w.shape))


@pytest.mark.parametrize("q", ["q4", "q8"])
@pytest.mark.parametrize("kind", ["gaussian", "heavy-tailed"])
def test_least_squares_scales_are_never_worse_per_block_and_better_overall(q, kind, capsys):
    w = weights(kind)
    absmax, lsq = quant.quantize(w, q, "absmax"), quant.quantize(w, q)
    assert {k: (v.dtype, v.shape) for k, v in absmax.items()} == {k: (v.dtype, v.shape) for k, v in lsq.items()}
    before, after = block_errors(w, absmax, q), block_errors(w, lsq, q)
    assert (after <= before * (1 + 1e-5)).all(), int((after > before * (1 + 1e-5)).sum())
    norm = np.square(w, dtype=np.float64).sum()
    rel_before, rel_after = np.sqrt(before.sum() / norm), np.sqrt(after.sum() / norm)
    with capsys.disabled():
        print(f"\n[{q}, {kind}] relative RMS error: absmax {rel_before:.4f}, least squares {rel_after:.4f}")
    assert rel_after < 0.98 * rel_before


def test_zero_blocks_and_tiny_values():
    w = weights("gaussian", (4, 128))
    w[0] = 0
    w[1, :32] = 1e-30                                                   # scale underflows f16: stored as 0
    for q in ("q4", "q8"):
        back = quant.dequantize(quant.quantize(w, q), q, w.shape)
        assert (back[0] == 0).all() and np.isfinite(back).all()
        assert (back[1, :32] == 0).all()


def test_unknown_method():
    with pytest.raises(quant.QuantError, match="scale method"):
        quant.quantize(weights("gaussian", (2, 64)), "q4", "minmax")


def test_f16_refuses_values_beyond_its_range():
    w = weights("gaussian", (2, 64))
    w[1, 3] = 70000.0
    with pytest.raises(quant.QuantError, match="exceeds f16's range"):
        quant.quantize(w, "f16")
