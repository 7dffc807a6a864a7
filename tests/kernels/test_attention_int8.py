"""attention_int8.wgsl (RoPE + ring write + attention over int8 KV rings) against a numpy emulation of its rounding.

The ring is checked word for word: the new key's integers within one of numpy's rounding of the float64 rotation
(cos/sin differ by ulps), its value's and every scale exactly or to an ulp, every other row untouched. The output
is checked against float64 attention over the integers the ring holds, with the query rounded as the kernel rounds
it: the score of each slot is then exact but for f32 arithmetic (test_attention.py's bound) and for query integers
that sit within 1e-4 of a rounding boundary (either side allowed: one step of that block's scale each). A wrong
scale, unit, slot or byte order moves the output by far more. trig_error (the browser's cos/sin: see
tests/web/test_kernels_browser.py) widens that window by what it moves a rotated element, and adds
test_attention.trig_score_error to each score.
"""

import numpy as np
import pytest
from kernel_helpers import U32, assert_within, in_out, poisoned
from test_attention import trig_score_error

from kyutai_stt.engine import device as gpu
from kyutai_stt.reference import lm as ref

GARBAGE = 1.0e4  # what invalid ring slots hold
BLOCK = 32


def rounded(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows [..., hd] as the kernel rounds them, in f32: (integers [..., hd], scales [..., hd / 32])."""
    blocks = np.asarray(x, np.float32).reshape(*x.shape[:-1], -1, BLOCK)
    amax = np.abs(blocks).max(axis=-1)
    inverse = np.where(amax > 0, np.float32(127) / np.where(amax > 0, amax, 1), 0).astype(np.float32)
    integers = np.rint(blocks * inverse[..., None]).astype(np.int8)
    return integers.reshape(x.shape), (amax / np.float32(127)).astype(np.float32)


def scale_words(head_dim: int) -> int:
    return 4 * -(-head_dim // 128)


def packed(integers: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Rows as the kernel binds them: hd / 4 words of integers, then the scales padded to whole 16-byte units."""
    head_dim = integers.shape[-1]
    pad = np.zeros((*scales.shape[:-1], scale_words(head_dim) - scales.shape[-1]), np.float32)
    return np.concatenate([integers.view(np.uint32), np.concatenate([scales, pad], axis=-1).view(np.uint32)],
                          axis=-1)


def unpacked(words: np.ndarray, head_dim: int) -> tuple[np.ndarray, np.ndarray]:
    integers = np.ascontiguousarray(words[..., :head_dim // 4]).view(np.int8)
    scales = np.ascontiguousarray(words[..., head_dim // 4:]).view(np.float32)[..., :head_dim // BLOCK]
    return integers, scales


def dequantized(integers: np.ndarray, scales: np.ndarray) -> np.ndarray:
    blocks = integers.astype(np.float64).reshape(*integers.shape[:-1], -1, BLOCK)
    return (blocks * scales[..., None].astype(np.float64)).reshape(integers.shape)


def make_ring(rng, heads, head_dim, context, position):
    """A ring's words before step `position`: random rounded history, GARBAGE in slots never written."""
    rows = rng.standard_normal((heads, context, head_dim)).astype(np.float32)
    rows[:, min(position, context):, :] = GARBAGE
    return packed(*rounded(rows))


def check(rng, positions, heads=2, head_dim=32, context=8, splits=1, trig_error=0.0, **constants):
    freqs = ref.rope_frequencies(head_dim, 100_000.0)
    streams, dim = len(positions), heads * head_dim
    k_rings = np.stack([make_ring(rng, heads, head_dim, context, p) for p in positions])
    v_rings = np.stack([make_ring(rng, heads, head_dim, context, p) for p in positions])
    qkv = rng.standard_normal((streams, 3 * dim)).astype(np.float32)
    constants = {"HEADS": heads, "HEAD_DIM": head_dim, "CONTEXT": context, "SPLITS": splits, **constants}
    position_index = constants.get("POSITION_INDEX", 0)
    step = np.full(position_index + streams + 1, 12345, np.uint32)
    step[position_index:position_index + streams] = positions
    main = gpu.run_kernel("attention_int8", {
        0: qkv,                                             # [streams, 3D]
        1: step,                                            # [POSITION_INDEX + streams + 1]
        2: freqs,                                           # [hd / 2]
        3: in_out(k_rings),                                 # [streams, H, C, hd / 4 + scale words] u32
        4: in_out(v_rings),
        5: poisoned(streams * splits * dim),                # [streams, splits, H, hd]
        6: poisoned(max(1, streams * splits * heads) * 2),  # [streams, splits, H, 2]
    }, (heads, splits, streams), constants)
    out = main[5]
    if splits > 1:
        out = gpu.run_kernel("attention", {5: main[5], 6: main[6], 7: poisoned(streams * dim)},
                             (heads, 1, streams), constants, entry="combine")[7]
    out = out.reshape(streams, dim)
    k_gpu, v_gpu = main[3].reshape(k_rings.shape), main[4].reshape(v_rings.shape)
    for s, position in enumerate(positions):
        slot, valid = position % context, ref.ring_valid_slots(position, context)
        q, k, v = (qkv[s, i * dim:(i + 1) * dim].reshape(heads, head_dim) for i in range(3))
        # The new rows, against numpy's rounding: the key's rotation uses other cos/sin, and WGSL's division may be
        # an ulp off (NVIDIA's is), so an integer at a rounding boundary may come out either side.
        for what, ring, row in (("key", k_gpu, ref.rope(k, position, freqs)), ("value", v_gpu, v)):
            integers, scales = unpacked(ring[s][:, slot], head_dim)
            want_integers, want_scales = rounded(row)
            assert np.abs(integers.astype(int) - want_integers).max() <= 1, f"new {what}'s integers"
            if trig_error == 0:
                assert (integers == want_integers).mean() > 0.99, f"new {what}'s integers"
            # The largest |key| moves as a rotated element does (test_attention's bound for a new key).
            pair = np.hypot(row[..., 0::2], row[..., 1::2]).max()
            moved = 8 * U32 * pair + 1e-6 + np.sqrt(2) * trig_error * pair if what == "key" else 0
            assert_within(scales, want_scales, 4 * U32 * want_scales + moved / 127, f"new {what}'s scales")
        others = np.arange(context) != slot
        np.testing.assert_array_equal(k_gpu[s][:, others], k_rings[s][:, others], "other key rows")
        np.testing.assert_array_equal(v_gpu[s][:, others], v_rings[s][:, others], "other value rows")
        # The output: float64 attention over the stored integers, the query rounded as the kernel rounds it.
        keys = dequantized(*unpacked(k_gpu[s], head_dim))[:, :valid]       # [H, valid, hd]
        values = dequantized(*unpacked(v_gpu[s], head_dim))[:, :valid]
        q_rotated = (ref.rope(q, position, freqs) / np.sqrt(head_dim)).astype(np.float32)
        q_integers, q_scales = rounded(q_rotated)
        q_steps = np.repeat(q_scales.astype(np.float64), BLOCK, axis=-1)   # [H, hd]
        q_values = q_integers * q_steps
        blocks = q_rotated.reshape(heads, -1, BLOCK)
        amax = np.abs(blocks).max(axis=-1, keepdims=True)
        exact = (blocks * (127 / amax)).reshape(heads, head_dim)
        # A rotated element moves by at most sqrt(2) trig_error times its pair's norm (test_attention).
        pairs = np.repeat(np.hypot(q_rotated[:, 0::2], q_rotated[:, 1::2]), 2, axis=1)
        window = 1e-4 + np.sqrt(2) * trig_error * pairs / q_steps
        ambiguous = np.abs(np.abs(exact - np.floor(exact)) - 0.5) < window    # either rounding may come out
        scores = np.einsum("hd,hnd->hn", q_values, keys)
        trig = trig_score_error(np.linalg.norm(q_rotated, axis=1) * np.sqrt(head_dim),
                                np.linalg.norm(keys, axis=2).max(axis=1), head_dim, trig_error)
        score_error = ((head_dim + 32) * U32 * np.einsum("hd,hnd->hn", np.abs(q_values), np.abs(keys))
                       + np.einsum("hd,hnd->hn", ambiguous * q_steps, np.abs(keys))).max(axis=1, keepdims=True)
        score_error += trig[:, None]
        p = np.exp(scores - scores.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        expected = np.einsum("hn,hnd->hd", p, values).reshape(dim)
        bound = (2 * score_error + (43 + valid + 16) * U32) * np.einsum("hn,hnd->hd", p, np.abs(values))
        assert_within(out[s], expected, bound.reshape(dim), f"attention output, stream {s}, position {position}")


def test_first_step_attends_only_to_itself(rng):
    check(rng, [0])


@pytest.mark.parametrize("position", [1, 7, 8, 19])
def test_ring_before_at_and_after_the_wrap(rng, position):
    check(rng, [position])


@pytest.mark.parametrize("positions", [[1], [4], [30]])
def test_split_with_empty_partial_and_full_splits(rng, positions):
    check(rng, positions, splits=3)


def test_streams_have_their_own_positions_and_rings(rng):
    check(rng, [0, 13, 6], splits=2, POSITION_INDEX=2)


def test_rows_of_several_scale_units(rng):
    # 256 values a row: 8 blocks, two 16-byte units of scales.
    check(rng, [21], heads=1, head_dim=256, context=12, splits=2, WORKGROUP_SIZE=64)


@pytest.mark.parametrize("splits", [1, 4])
def test_realistic_lm_shape(rng, splits):
    # The LM: 16 heads of 128, a 750-slot ring, past its first wrap; 4 ranges of 188 slots (plans of many streams).
    check(rng, [1000], heads=16, head_dim=128, context=750, splits=splits, WORKGROUP_SIZE=128)


def test_an_all_zero_block_stores_zeros(rng):
    """A block whose values are all 0 stores integers 0 and scale 0, never NaN."""
    heads, head_dim, context = 1, 32, 4
    qkv = rng.standard_normal((1, 3 * head_dim)).astype(np.float32)
    qkv[0, 2 * head_dim:] = 0.0                               # the value
    ring = make_ring(rng, heads, head_dim, context, 0)[None]
    main = gpu.run_kernel("attention_int8", {0: qkv, 1: np.zeros(2, np.uint32),
                                             2: ref.rope_frequencies(head_dim, 100_000.0), 3: in_out(ring),
                                             4: in_out(ring.copy()), 5: poisoned(head_dim), 6: poisoned(2)},
                          (1, 1, 1), {"HEADS": 1, "HEAD_DIM": head_dim, "CONTEXT": context})
    np.testing.assert_array_equal(main[4].reshape(context, -1)[0], 0)
    np.testing.assert_array_equal(main[5], 0.0)
