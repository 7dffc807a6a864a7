"""attention.wgsl (RoPE + ring write + attention, split or not) vs lm_reference.attention in float64.

The ring's slots that are not valid yet hold huge keys and values: attending to one of them would be obvious.

Tolerance. A score q.k / sqrt(hd) sums hd products: error <= (hd + 32) u sum_d |q_d k_d| / sqrt(hd), the 32 covering
the rotation (cos/sin after an accurate reduction modulo 2 pi: a few u; the angle itself is the same f32 product as
the reference's) and the scale. A softmax weight p_j then has relative error <= 2 max|score error| + exp's
3 + 2|x| ULP (|x| = max - score < 20 here: 43 u); the output sum_j p_j v_j adds one rounding per slot on the
serial chain. So |error_d| <= (2 max score error + (43 + slots + 16) u) sum_j p_j |v_jd|. For hd = 128 and unit
normal inputs that is ~1e-5 relative: a wrong slot, a missing rotation or a wrong scale are all > 1e-2.

KV_F16 (rings of f16 pairs): the kernel attends to the f16 values it stored, in f32 arithmetic, so the reference
is run on those very values (the new slot as the GPU stored it) with the same bound; the stored key and value
are checked against the f32 ones within one f16 step (2^-10 relative).
"""

import numpy as np
import pytest
from kernel_helpers import U32, assert_within, in_out, poisoned

from kyutai_stt.engine import device as gpu
from kyutai_stt.reference import lm as ref

GARBAGE = 1.0e4  # what invalid ring slots hold (an f16 too)
F16_STEP = 2.0**-10  # one f16 step, relative (normal values)
F16_SUBNORMAL_STEP = 2.0**-24  # one f16 step below 2^-14, absolute: the relative bound alone fails there


def make_ring(rng, heads, head_dim, context, position, kv_f16=False):
    """A ring as it is before step `position`: random valid history, GARBAGE in slots never written; values that
    f16 holds exactly when kv_f16."""
    dtype = np.float16 if kv_f16 else np.float32
    k_cache = rng.standard_normal((heads, context, head_dim)).astype(dtype).astype(np.float32)
    v_cache = rng.standard_normal((heads, context, head_dim)).astype(dtype).astype(np.float32)
    written = min(position, context)  # slots [0, written) hold earlier steps
    k_cache[:, written:, :] = GARBAGE
    v_cache[:, written:, :] = GARBAGE
    return k_cache, v_cache


def packed(ring: np.ndarray, kv_f16: bool) -> np.ndarray:
    """A ring as the kernel binds it: f32, or f16 two to a u32 word (the even element in the low half)."""
    return ring.astype(np.float16).view(np.uint32) if kv_f16 else ring


def unpacked(words: np.ndarray, kv_f16: bool) -> np.ndarray:
    return words.view(np.float16).astype(np.float32) if kv_f16 else words


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
    kv_f16 = tuning.get("KV_F16", False)
    return out.reshape(streams, dim), unpacked(main[3], kv_f16), unpacked(main[4], kv_f16)


def expected_and_bound(qkv, position, k_cache, v_cache, freqs, stored=None):
    """The reference output and caches (float64) and the output's error bound (see the module docstring).
    stored: the new slot's key and value as the kernel stored them (f16 rings), attended to instead of the exact
    ones."""
    heads, context, head_dim = k_cache.shape
    dim = heads * head_dim
    k_ref, v_ref = k_cache.astype(np.float64), v_cache.astype(np.float64)
    out = ref.attention(qkv, position, k_ref, v_ref, freqs)
    valid = ref.ring_valid_slots(position, context)
    if stored is not None:
        k_attended, v_attended = k_ref.copy(), v_ref.copy()
        k_attended[:, position % context], v_attended[:, position % context] = stored
        out = ref.attend(ref.rope(qkv[:dim].reshape(heads, head_dim), position, freqs), k_attended, v_attended,
                         valid)
        k_ref_attended = k_attended
    else:
        k_ref_attended, v_attended = k_ref, v_ref
    q = ref.rope(qkv[:dim].reshape(heads, head_dim), position, freqs)
    keys, values = k_ref_attended[:, :valid, :], v_attended[:, :valid, :]
    abs_products = np.einsum("hd,hnd->hn", np.abs(q), np.abs(keys)) / np.sqrt(head_dim)
    score_error = (head_dim + 32) * U32 * abs_products.max(axis=1, keepdims=True)
    scores = np.einsum("hd,hnd->hn", q, keys) / np.sqrt(head_dim)
    p = np.exp(scores - scores.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    weight_error = 2 * score_error + (43 + valid + 16) * U32  # relative, per head
    bound = weight_error * np.einsum("hn,hnd->hd", p, np.abs(values))
    return out, k_ref, v_ref, bound.reshape(dim)


def trig_score_error(q_norm, k_norm, head_dim, trig_error):
    """Bound on |score error| from cos/sin errors <= trig_error: each rotated pair (a, b) moves by at most
    e (|a| + |b|) <= sqrt(2) e |(a, b)| per component, so a rotated vector moves by at most sqrt(2) e |v| (2-norm);
    q.k / sqrt(hd) then moves by at most (|dq| |k| + |q| |dk|) / sqrt(hd) = 2 sqrt(2) e |q| |k| / sqrt(hd)."""
    return 2 * np.sqrt(2) * trig_error * q_norm * k_norm / np.sqrt(head_dim)


def check(rng, positions, heads=2, head_dim=8, context=8, splits=1, trig_error=0.0, **tuning):
    """trig_error: the adapter's absolute error of cos and sin, when not negligible (WGSL allows 2^-11): a softmax
    weight then moves by at most 2 max|score error| relative, an output element by that times max_j |v_jd|."""
    freqs = ref.rope_frequencies(head_dim, 100_000.0)
    streams, dim = len(positions), heads * head_dim
    kv_f16 = tuning.get("KV_F16", False)
    rings = [make_ring(rng, heads, head_dim, context, p, kv_f16) for p in positions]
    qkv = rng.standard_normal((streams, 3 * dim)).astype(np.float32)
    out, k_gpu, v_gpu = run_attention(
        qkv, positions, packed(np.stack([k for k, _ in rings]), kv_f16),
        packed(np.stack([v for _, v in rings]), kv_f16), freqs,
        heads=heads, head_dim=head_dim, context=context, splits=splits, **tuning)
    k_gpu = k_gpu.reshape(streams, heads, context, head_dim)
    v_gpu = v_gpu.reshape(streams, heads, context, head_dim)
    for s, position in enumerate(positions):
        slot = position % context
        stored = (k_gpu[s][:, slot, :], v_gpu[s][:, slot, :]) if kv_f16 else None
        expected, k_ref, v_ref, bound = expected_and_bound(qkv[s].astype(np.float64), position, *rings[s], freqs,
                                                           stored)
        valid = ref.ring_valid_slots(position, context)
        q_norm = np.linalg.norm(qkv[s, :dim].reshape(heads, head_dim), axis=1)           # rotation keeps norms
        k_norm = np.linalg.norm(k_ref[:, :valid, :], axis=2).max(axis=1)
        v_max = np.abs(v_ref[:, :valid, :]).max(axis=1)                                  # [H, hd]
        trig = 2 * trig_score_error(q_norm, k_norm, head_dim, trig_error)[:, None] * v_max
        assert_within(out[s], expected, bound + trig.reshape(dim), f"attention output, stream {s}, position {position}")
        # The new key (rotated) and value land in slot position % context; every other slot is untouched.
        new_k = np.abs(qkv[s, dim:2 * dim]).reshape(heads, head_dim).max()
        k_bound = 8 * U32 * new_k + 1e-6 + 2 * trig_error * new_k      # e (|a| + |b|) per element
        if kv_f16:
            assert_within(k_gpu[s][:, slot, :], k_ref[:, slot, :], F16_STEP * np.abs(k_ref[:, slot, :]) + k_bound,
                          "new key (f16)")
            assert_within(v_gpu[s][:, slot, :], v_ref[:, slot, :],
                          F16_STEP * np.abs(v_ref[:, slot, :]) + F16_SUBNORMAL_STEP, "new value (f16)")
        else:
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


@pytest.mark.parametrize("positions, splits, tuning", [
    ([0], 1, {}), ([5, 19], 3, {}), ([1000], 8, {"heads": 16, "head_dim": 128, "context": 750}),
    ([11], 2, {"head_dim": 64, "context": 10, "WORKGROUP_SIZE": 1, "SCORE_TEAM": 8}),
    ([11], 2, {"head_dim": 64, "context": 10, "WORKGROUP_SIZE": 48, "SCORE_TEAM": 5})],
    ids=["first-step", "streams-split", "lm-shape", "one-invocation", "odd-team"])
def test_f16_rings(rng, positions, splits, tuning):
    # Rings of f16 pairs: the first step, two streams past the wrap in 3 splits, the LM's shape, and workgroups
    # smaller than a row's units or not dividing it.
    check(rng, positions, splits=splits, KV_F16=True, **tuning)


def test_f16_ring_clamps_to_the_f16_range(rng):
    """A key or value beyond f16's range is stored as +-65504 (the largest f16), never inf."""
    heads, head_dim, context = 1, 8, 4
    qkv = np.zeros((1, 3 * heads * head_dim), np.float32)
    qkv[0, 2 * head_dim:] = [1e6, -1e6, 7e4, -7e4, 1.0, 2.0, 65504.0, 0.0]    # the value
    ring = packed(np.zeros((1, heads, context, head_dim), np.float32), True)
    _, _, v_gpu = run_attention(qkv, [0], ring, ring.copy(), ref.rope_frequencies(head_dim, 100_000.0),
                                heads=heads, head_dim=head_dim, context=context, KV_F16=True)
    np.testing.assert_array_equal(v_gpu.reshape(context, head_dim)[0],
                                  [65504, -65504, 65504, -65504, 1, 2, 65504, 0])


@pytest.mark.parametrize("rounding", ["int8", "f16"])
@pytest.mark.parametrize("heads, head_dim, splits, workgroup_size", [(4, 32, 3, 32), (16, 128, 8, 128), (2, 64, 2, 4)])
def test_combine_rounded_equals_combine_then_quantize_input(rng, heads, head_dim, splits, workgroup_size, rounding):
    """combine_int8 (combine_f16) writes, bit for bit, what combine then quantize_input.wgsl (PLAIN mode, OUTPUT_F16
    for f16) write: the int8 (f16) path's input to the attention's output matrix, one dispatch fewer (a workgroup
    smaller than a head's vec4s too)."""
    context, positions = 10, [3, 17]
    streams, dim = len(positions), heads * head_dim
    constants = {"HEADS": heads, "HEAD_DIM": head_dim, "CONTEXT": context, "SPLITS": splits,
                 "WORKGROUP_SIZE": workgroup_size}
    rings = [make_ring(rng, heads, head_dim, context, p) for p in positions]
    main = gpu.run_kernel("attention", {
        0: rng.standard_normal((streams, 3 * dim)).astype(np.float32), 1: np.array(positions, np.uint32),
        2: ref.rope_frequencies(head_dim, 100_000.0), 3: in_out(np.stack([k for k, _ in rings])),
        4: in_out(np.stack([v for _, v in rings])), 5: poisoned(streams * splits * dim),
        6: poisoned(streams * splits * heads * 2)}, (heads, splits, streams), constants)
    out = gpu.run_kernel("attention", {5: main[5], 6: main[6], 7: poisoned(streams * dim)}, (heads, 1, streams),
                         constants, entry="combine")[7]
    words = streams * dim // (4 if rounding == "int8" else 2)
    separate = gpu.run_kernel("quantize_input", {0: out, 1: out, 2: poisoned(words, np.uint32),
                                                 3: poisoned(streams * dim // 32 * 2)},
                              (1, streams), {"COLUMNS": dim, "BATCH": streams, "WORKGROUP_SIZE": 256,
                                             "OUTPUT_F16": rounding == "f16"})
    fused = gpu.run_kernel("attention", {5: main[5], 6: main[6], 8: poisoned(words, np.uint32),
                                         9: poisoned(streams * dim // 32 * 2)}, (heads, 1, streams), constants,
                           entry=f"combine_{rounding}")
    assert len(set(separate[2].tolist())) > streams * dim // 8, "the rounded inputs barely vary"
    np.testing.assert_array_equal(fused[8], separate[2], "rounded inputs")
    np.testing.assert_array_equal(fused[9], separate[3], "scales and sums")
