"""attention.wgsl (RoPE + ring write + attention, split or not) vs lm_reference.attention in float64.

The ring's slots that are not valid yet hold huge keys and values: attending to one of them would be obvious.

Tolerance. A score q.k / sqrt(hd) sums hd products: error <= (hd + 32) u sum_d |q_d k_d| / sqrt(hd), the 32 covering
the rotation (cos/sin after an accurate reduction modulo 2 pi: a few u; the angle itself is the same f32 product as
the reference's) and the scale. A softmax weight p_j then has relative error <= 2 max|score error| + exp's
3 + 2|x| ULP (|x| = max - score < 20 here: 43 u); the output sum_j p_j v_j adds one rounding per slot on the
serial chain. So |error_d| <= (2 max score error + (43 + slots + 16) u) sum_j p_j |v_jd|. For hd = 128 and unit
normal inputs that is ~1e-5 relative: a wrong slot, a missing rotation or a wrong scale are all > 1e-2.
"""

import numpy as np
import pytest
from kernel_helpers import U32, assert_within, in_out, poisoned

from kyutai_stt.engine import device as gpu
from kyutai_stt.reference import lm as ref

GARBAGE = 1.0e4  # what invalid ring slots hold


def make_ring(rng, heads, head_dim, context, position):
    """A ring as it is before step `position`: random valid history, GARBAGE in slots never written."""
    k_cache = rng.standard_normal((heads, context, head_dim)).astype(np.float32)
    v_cache = rng.standard_normal((heads, context, head_dim)).astype(np.float32)
    written = min(position, context)  # slots [0, written) hold earlier steps
    k_cache[:, written:, :] = GARBAGE
    v_cache[:, written:, :] = GARBAGE
    return k_cache, v_cache


def run_attention(qkv, positions, k_cache, v_cache, freqs, *, heads, head_dim, context, splits=1, **tuning):
    """Dispatch main (+ combine when split); returns (out [streams, D], k_cache, v_cache) as the GPU left them."""
    streams, dim = len(positions), heads * head_dim
    constants = {"HEADS": heads, "HEAD_DIM": head_dim, "CONTEXT": context, "SPLITS": splits, **tuning}
    # The positions sit at POSITION_INDEX of a step buffer whose other fields must not matter.
    position_index = tuning.get("POSITION_INDEX", 0)
    step = np.full(position_index + streams + 1, 12345, np.uint32)
    step[position_index:position_index + streams] = positions
    main = gpu.run_kernel("attention", {
        0: qkv.astype(np.float32),                          # [streams, 3D]
        1: step,                                            # [POSITION_INDEX + streams + 1]
        2: freqs,                                           # [hd / 2]
        3: in_out(k_cache),                                 # [streams, H, C, hd]
        4: in_out(v_cache),                                 # [streams, H, C, hd]
        5: poisoned(streams * splits * dim),                # [streams, splits, H, hd]
        6: poisoned(max(1, streams * splits * heads) * 2),  # [streams, splits, H, 2]
    }, (heads, splits, streams), constants)
    out = main[5]
    if splits > 1:
        out = gpu.run_kernel("attention", {5: main[5], 6: main[6], 7: poisoned(streams * dim)},
                             (heads, 1, streams), constants, entry="combine")[7]
    return out.reshape(streams, dim), main[3], main[4]


def expected_and_bound(qkv, position, k_cache, v_cache, freqs):
    """The reference output and caches (float64) and the output's error bound (see the module docstring)."""
    heads, context, head_dim = k_cache.shape
    dim = heads * head_dim
    k_ref, v_ref = k_cache.astype(np.float64), v_cache.astype(np.float64)
    out = ref.attention(qkv, position, k_ref, v_ref, freqs)
    valid = ref.ring_valid_slots(position, context)
    q = ref.rope(qkv[:dim].reshape(heads, head_dim), position, freqs)
    keys, values = k_ref[:, :valid, :], v_ref[:, :valid, :]
    abs_products = np.einsum("hd,hnd->hn", np.abs(q), np.abs(keys)) / np.sqrt(head_dim)
    score_error = (head_dim + 32) * U32 * abs_products.max(axis=1, keepdims=True)
    scores = np.einsum("hd,hnd->hn", q, keys) / np.sqrt(head_dim)
    p = np.exp(scores - scores.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    weight_error = 2 * score_error + (43 + valid + 16) * U32  # relative, per head
    bound = weight_error * np.einsum("hn,hnd->hd", p, np.abs(values))
    return out, k_ref, v_ref, bound.reshape(dim)


def check(rng, positions, heads=2, head_dim=8, context=8, splits=1, **tuning):
    freqs = ref.rope_frequencies(head_dim, 100_000.0)
    streams, dim = len(positions), heads * head_dim
    rings = [make_ring(rng, heads, head_dim, context, p) for p in positions]
    qkv = rng.standard_normal((streams, 3 * dim)).astype(np.float32)
    out, k_gpu, v_gpu = run_attention(
        qkv, positions, np.stack([k for k, _ in rings]), np.stack([v for _, v in rings]), freqs,
        heads=heads, head_dim=head_dim, context=context, splits=splits, **tuning)
    k_gpu = k_gpu.reshape(streams, heads, context, head_dim)
    v_gpu = v_gpu.reshape(streams, heads, context, head_dim)
    for s, position in enumerate(positions):
        expected, k_ref, v_ref, bound = expected_and_bound(qkv[s].astype(np.float64), position, *rings[s], freqs)
        assert_within(out[s], expected, bound, f"attention output, stream {s}, position {position}")
        # The new key (rotated) and value land in slot position % context; every other slot is untouched.
        slot = position % context
        k_bound = 8 * U32 * np.abs(qkv[s, dim:2 * dim]).reshape(heads, head_dim).max() + 1e-6
        assert_within(k_gpu[s][:, slot, :], k_ref[:, slot, :], k_bound, "new key")
        np.testing.assert_array_equal(v_gpu[s][:, slot, :], v_ref[:, slot, :])
        others = np.arange(context) != slot
        np.testing.assert_array_equal(k_gpu[s][:, others, :], rings[s][0][:, others, :])
        np.testing.assert_array_equal(v_gpu[s][:, others, :], rings[s][1][:, others, :])


def test_first_step_attends_only_to_itself(rng):
    check(rng, [0])


@pytest.mark.parametrize("position", [1, 5, 7, 8, 9, 2 * 8 + 3])
def test_ring_before_at_and_after_the_wrap(rng, position):
    # context 8: 7 is the last step before the ring is full of distinct steps; 8 overwrites slot 0 (the step at
    # position 0 leaves the window); 19 is deep into the third lap.
    check(rng, [position])


@pytest.mark.parametrize("positions", [[1], [4], [30]])
def test_split_with_empty_partial_and_full_splits(rng, positions):
    # 3 splits of ceil(8 / 3) = 3 slots: at position 1 splits 1 and 2 are empty, at 4 split 2 is, at 30 none.
    check(rng, positions, splits=3)


def test_streams_have_their_own_positions_and_rings(rng):
    check(rng, [0, 13, 6], splits=2)


def test_position_read_from_a_step_buffer_field(rng):
    check(rng, [3, 9], POSITION_INDEX=2)


def test_large_position_rope(rng):
    # Angles up to ~1e5 rad: accurate only with the reduction modulo 2 pi before cos/sin.
    check(rng, [100_003], head_dim=16)


@pytest.mark.parametrize("positions", [[1_080_000, 2_160_000], [8_388_607, 4_194_301]])
def test_positions_of_24_hours_and_beyond(rng, positions):
    # 24 h of audio: LM position 1,080,000 (12.5 Hz), Mimi transformer 2,160,000 (25 Hz); 2^23 - 1 is the last
    # position whose reduction modulo 2 pi is exact (tests/test_rope.py). Angles up to 8.4e6 rad.
    check(rng, positions, head_dim=16)


@pytest.mark.parametrize("workgroup_size, score_team", [(1, 8), (48, 5), (16, 1), (128, 32)])
def test_other_workgroup_sizes_and_score_teams(rng, workgroup_size, score_team):
    # Fewer invocations than output vectors (1, 16 < 64 / 4), teams that do not divide the workgroup (48 / 5) or
    # the key (16 vectors / 5), one invocation per slot, a team wider than the key.
    check(rng, [11], head_dim=64, context=10, splits=2, WORKGROUP_SIZE=workgroup_size, SCORE_TEAM=score_team)


@pytest.mark.parametrize("splits", [1, 8])
def test_realistic_lm_shape(rng, splits):
    # The LM: 16 heads of 128, a 750-slot ring, past its first wrap.
    check(rng, [1000], heads=16, head_dim=128, context=750, splits=splits)
