"""argmax.wgsl (greedy token, ties to the lowest index) and vad_heads.wgsl (the semantic-VAD probabilities)."""

import numpy as np
import pytest
from kernel_helpers import U32, assert_within, in_out, poisoned

from kyutai_stt.engine import device as gpu
from kyutai_stt.reference import lm as ref

UNWRITTEN = np.iinfo(np.uint32).max  # what poisoned u32 outputs hold


def run_argmax(logits, count, *, token_stride=1, token_index=0, result_stride=1, result_index=0, prompt=None,
               active=None, **constants):
    """logits: [streams, stride]; prompt: [streams, 2 + PROMPT_CAPACITY] u32 (all zeros, no prompt, when None);
    active: each stream's "active" step flag (placed after 2 other words of the step buffer), None: no flags.
    Returns (tokens buffer, results buffer), or with a prompt (tokens, results, prompt buffer after the step)."""
    streams = logits.shape[0]
    state = np.zeros((streams, 2), np.uint32) if prompt is None else prompt
    step = np.array([7, 7, *(active if active is not None else [])], np.uint32)
    if active is not None:
        constants["ACTIVE_INDEX"] = 2
    outputs = gpu.run_kernel("argmax", {
        0: logits.astype(np.float32),
        1: poisoned(streams * token_stride, np.uint32),
        2: poisoned(streams * result_stride, np.uint32),
        3: in_out(state.reshape(-1).astype(np.uint32)),
        4: step,
    }, (streams, 1, 1), {"COUNT": count, "LOGITS_STRIDE": logits.shape[1], "TOKEN_STRIDE": token_stride,
                         "TOKEN_INDEX": token_index, "RESULT_STRIDE": result_stride, "RESULT_INDEX": result_index,
                         "PROMPT_CAPACITY": state.shape[1] - 2, **constants})
    if prompt is None:
        assert (outputs[3] == 0).all(), "no prompt: the prompt buffer stays untouched"
        return outputs[1], outputs[2]
    return outputs[1], outputs[2], outputs[3].reshape(state.shape)


def argmax_of(logits, **constants):
    tokens, results = run_argmax(logits[None, :], logits.shape[0], **constants)
    assert tokens[0] == results[0]
    return int(tokens[0])


def test_argmax_realistic_vocabulary(rng):
    logits = rng.standard_normal(8000).astype(np.float32)
    assert argmax_of(logits) == ref.argmax(logits)


@pytest.mark.parametrize("where", [0, 1, 255, 256, 7999])
def test_argmax_at_the_edges_of_invocation_ranges(where):
    logits = np.zeros(8000, np.float32)
    logits[where] = 1.0
    assert argmax_of(logits) == where


@pytest.mark.parametrize("tied", [[3, 4], [700, 444], [7999, 256, 512], [5, 5 + 256], [6000, 1000 + 256 * 3]])
def test_argmax_ties_go_to_the_lowest_index(rng, tied):
    # Ties within one invocation's strided range (i, i + 256) and across invocations.
    logits = rng.uniform(-1, 1, 8000).astype(np.float32)
    logits[tied] = 2.5
    assert argmax_of(logits) == min(tied)


def test_argmax_all_equal_and_tiny_counts():
    assert argmax_of(np.full(8000, -7.0, np.float32)) == 0
    assert argmax_of(np.array([1.5], np.float32)) == 0
    assert argmax_of(np.array([0.5, 2.0, 2.0, -1.0, 2.0], np.float32), WORKGROUP_SIZE=3) == 1


def test_argmax_skips_nan(rng):
    logits = rng.standard_normal(300).astype(np.float32)
    logits[[0, 17, 299]] = np.nan
    finite = np.where(np.isnan(logits), -np.inf, logits)
    assert argmax_of(logits, WORKGROUP_SIZE=100) == int(np.argmax(finite))


def test_argmax_streams_offsets_and_destinations(rng):
    # Two streams whose 50 logits sit at offset 3 of 60-wide rows; tokens go to index 4 of 5-wide id rows, results
    # to index 0 of [token, 4 VAD] rows. Nothing else is written.
    logits = rng.standard_normal((2, 60)).astype(np.float32)
    logits[:, :3] = 100.0  # outside the logits: must be ignored
    tokens, results = run_argmax(logits, 50, LOGITS_OFFSET=3, token_stride=5, token_index=4, result_stride=5,
                                 result_index=0, WORKGROUP_SIZE=32)
    expected = [int(np.argmax(logits[s, 3:53])) for s in range(2)]
    assert list(tokens.reshape(2, 5)[:, 4]) == expected
    assert list(results.reshape(2, 5)[:, 0]) == expected
    assert (tokens.reshape(2, 5)[:, :4] == UNWRITTEN).all() and (results.reshape(2, 5)[:, 1:] == UNWRITTEN).all()


def test_argmax_streams_sitting_out_keep_token_and_prompt(rng):
    """A stream whose "active" flag is 0 writes nothing: its fed-back token, result and prompt position stay as
    they were; the others run as without flags."""
    logits = rng.standard_normal((3, 40)).astype(np.float32)
    logits[:, [0, 3]] = -10.0       # the boundary and padding ids (argmax.wgsl defaults) never win: each prompt id
    # below (its stream's argmax) is then one the rule advances on
    prompt = prompt_rows([[int(np.argmax(logits[s]))] for s in range(3)], [0, 0, 0], 2)
    tokens, results, after = run_argmax(logits, 40, prompt=prompt, active=[1, 0, 1])
    expected = [int(np.argmax(logits[s])) for s in range(3)]
    assert tokens[[0, 2]].tolist() == results[[0, 2]].tolist() == [expected[0], expected[2]]
    assert tokens[1] == results[1] == UNWRITTEN
    assert after[:, 1].tolist() == [1, 0, 1], "only the streams taking the frame advance their prompt"


def prompt_rows(prompts: list[list[int]], emitted: list[int], capacity: int) -> np.ndarray:
    """[streams, 2 + capacity] u32: [n, e, ids, then garbage the kernel must never read as an id]."""
    rows = np.full((len(prompts), 2 + capacity), 7777, np.uint32)
    for s, (ids, e) in enumerate(zip(prompts, emitted)):
        rows[s, :2 + len(ids)] = [len(ids), e, *ids]
    return rows


def test_prompt_allows_only_padding_and_the_next_id_then_advances(rng):
    """Many random steps of 3 streams against reference/lm.py prompted_argmax: the token, and the position the GPU
    keeps. Logits are drawn so that each of the allowed ids (0, 3, next) wins, and the global argmax is usually
    elsewhere (a kernel ignoring the prompt fails at once): every third step one allowed id, in turn, is lifted above
    the other two (so each wins whatever the seed), the other steps are left to chance."""
    count, capacity = 1000, 9
    prompts = [[17, 999, 256, 17, 40, 41, 42, 43], [5], []]
    emitted = [0, 0, 0]
    seen = {0: 0, 3: 0, "next": 0}
    for step in range(40):
        logits = rng.standard_normal((3, count)).astype(np.float32)
        for s, ids in enumerate(prompts):
            if emitted[s] < len(ids):
                allowed = [0, 3, ids[emitted[s]]]
                logits[s, allowed] += rng.uniform(-1, 1, 3).astype(np.float32)
                if step % 3 == 0:
                    lifted = allowed[(step // 3) % 3]
                    logits[s, lifted] = logits[s, allowed].max() + 1.0
        state = prompt_rows(prompts, emitted, capacity)
        tokens, results, after = run_argmax(logits, count, prompt=state, WORKGROUP_SIZE=64)
        for s, ids in enumerate(prompts):
            token, e = ref.prompted_argmax(logits[s], ids, emitted[s])
            assert (int(tokens[s]), int(results[s])) == (token, token), f"step {step}, stream {s}"
            assert list(after[s]) == [len(ids), e] + list(state[s, 2:]), f"step {step}, stream {s}: prompt state"
            if emitted[s] < len(ids):
                seen["next" if token == ids[emitted[s]] else token] += 1
            emitted[s] = e
    assert all(v > 0 for v in seen.values()), seen
    assert emitted[1] == 1 and emitted[0] > 0


def test_prompt_edge_cases():
    """Ties among the allowed ids go to the lowest index; an id that is a padding token never advances (the
    official rule: it then stays stuck); an exhausted prompt is plain argmax; an all -inf allowed set gives 0."""
    logits = np.zeros((1, 300), np.float32)
    logits[0, [0, 3, 200]] = 1.0
    logits[0, 100] = 5.0
    assert run_argmax(logits, 300, prompt=prompt_rows([[200]], [0], 2))[0][0] == 0
    logits[0, 0] = 0.5
    token, _, after = run_argmax(logits, 300, prompt=prompt_rows([[3, 200]], [0], 2))
    assert token[0] == 3 and after[0, 1] == 0
    assert run_argmax(logits, 300, prompt=prompt_rows([[200]], [1], 2))[0][0] == 100
    logits[0, [0, 3, 200]] = -np.inf
    token, _, after = run_argmax(logits, 300, prompt=prompt_rows([[200]], [0], 1))
    assert token[0] == 0 and after[0, 1] == 0
    # A length beyond the capacity reads no further than the capacity.
    logits[0, 250] = 9.0
    state = prompt_rows([[250]], [0], 1)
    state[0, 0] = 50
    token, _, after = run_argmax(logits, 300, prompt=state)
    assert token[0] == 250 and after[0, 1] == 1
    assert run_argmax(logits, 300, prompt=after)[0][0] == 250        # e = capacity: no prompt left


# VAD: tolerance. A head logit is a dot product over DIM with its norm: error <= n u sum_k |w_k out_k| with
# n = DIM / team_size (a member's serial chain, 4-wide dots) + log2(team) + 16 (the norm: inverseSqrt's 2 ULP and
# the sum of squares' chain, relative, so covered by the same sum). p = 1 / sum_c exp(l_c - l_0) then moves by at
# most p * (2 max|dl| + 64 u) (exp's ULPs for arguments of a few units, the sum and the division).
def run_vad(x, alpha, w, heads, classes, result_stride=None, result_offset=0, **constants):
    streams, dim = x.shape
    result_stride = result_stride or heads
    return gpu.run_kernel("vad_heads", {
        0: x, 1: alpha, 2: w, 3: poisoned(streams * result_stride),
    }, (heads, streams, 1), {"DIM": dim, "HEADS": heads, "CLASSES": classes, "RESULT_STRIDE": result_stride,
                         "RESULT_OFFSET": result_offset, **constants})[3].reshape(streams, result_stride)


def check_vad(rng, streams, dim, heads, classes, workgroup_size=256, result_stride=None, result_offset=0):
    x = rng.standard_normal((streams, dim)).astype(np.float32)
    alpha = rng.standard_normal(dim).astype(np.float32)
    w = (rng.standard_normal((heads * classes, dim)) / np.sqrt(dim)).astype(np.float32)
    got = run_vad(x, alpha, w, heads, classes, result_stride, result_offset, WORKGROUP_SIZE=workgroup_size)
    team = workgroup_size // classes
    roundings = dim / team + np.log2(max(team, 1)) + 16
    for s in range(streams):
        out = ref.rms_norm(x[s], alpha)
        expected = ref.vad_probabilities(out, w, heads, classes)
        logit_error = roundings * U32 * (np.abs(w) @ np.abs(out)).reshape(heads, classes).max(axis=1)
        bound = expected * (2 * logit_error + 64 * U32)
        assert_within(got[s, result_offset:result_offset + heads], expected, bound, f"VAD, stream {s}")
        assert np.isnan(got[s, :result_offset]).all() and np.isnan(got[s, result_offset + heads:]).all()


def test_vad_realistic(rng):
    check_vad(rng, streams=1, dim=2048, heads=4, classes=6)


def test_vad_streams_offsets_and_small_teams(rng):
    # Results at [token, p0..p3] rows: offset 1, stride 5. 4 invocations for 3 rows: teams of 1, one spare.
    check_vad(rng, streams=2, dim=12, heads=2, classes=3, workgroup_size=4, result_stride=5, result_offset=1)
    check_vad(rng, streams=1, dim=64, heads=4, classes=6, workgroup_size=100)
