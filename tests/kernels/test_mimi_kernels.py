"""The Mimi encoder's kernels vs numpy (float64): conv1d.wgsl, conv1d_pcm.wgsl, attention_chunk.wgsl, rvq.wgsl.

Awkward shapes throughout (channel counts that do not fill a workgroup's tile, step counts that do not divide it,
strides that do not divide the taps), every weight format, the work splits of kyutai_stt.models.mimi._tiling (the
`tiled` entry point too, alone and for several streams), and the parity of the double-buffered history regions
both ways.

Tolerance (conv1d): an output is a K-term dot product, accumulated in f32 in chunks of 8 (the members' partial
sums then added): |error| <= (K + 8) u sum_j |W_j in_j| for exact inputs. The fused input transforms add their own
error per input (ELU: expm1 within a few u of |in_j|; LayerNorm: mean and variance over K in f32, ~K u relative),
bounded together by 16 K u sum_j |W_j| |in_j| (+ the LayerNorm bias' share); GELU of the result adds
1.13 x that (its slope is at most 1.13) and erf's error (1.2 ulp of erf, plus a few for WGSL's exp) times |v| / 2.
Seen: ~1e-4 of the bound (a worst case; typical errors are ~sqrt(K) u). A wrong tap, channel, row, region or step
is off by O(1), far beyond it.
"""

import functools

import numpy as np
import pytest
from kernel_helpers import U32, assert_within, in_out, poisoned
from test_attention import trig_score_error

from kyutai_stt.engine import device as gpu
from kyutai_stt.models.mimi import CONV_COMBINE_WORKGROUP, FORMATS, _tiling
from kyutai_stt.models.rope import rope_frequencies
from kyutai_stt.reference import mimi as mr
from kyutai_stt.weights import quant

GARBAGE = 1.0e4


def weight_streams(rng, shape, fmt, scale=1.0):
    w = (scale * rng.standard_normal(shape) / np.sqrt(shape[1])).astype(np.float32)
    streams = quant.quantize(w, fmt)
    main = streams.get("qs", streams.get("w"))
    scales = streams["d"].view(np.uint32) if "d" in streams else main
    return main, scales, quant.dequantize(streams, fmt, shape)


def tiling_constants(t_out, c_out, k, tuning, input_mode=0, streams=1):
    """(constants, workgroups, entry point) of a work split; "gpu-many/S": the `tiled` entry with K cut into S
    ranges (the plan gives ranges to layers of few steps only: models/mimi.py k_splits); "...@C": slices of C
    columns (the plan gives 16 to large grids only: models/mimi.py SHORT_SLICE_WORKGROUPS)."""
    tuning, _, slices = tuning.partition("@")
    tuning, _, splits = tuning.partition("/")
    t = _tiling(t_out, c_out, k, tuning, streams, input_mode)
    constants, workgroups = t["constants"], t["workgroups"]
    if splits:
        constants, workgroups = {**constants, "K_SPLITS": int(splits)}, (*workgroups[:2], int(splits))
    if slices:
        constants = {**constants, "TILE_K": int(slices)}
    return constants, workgroups, t["entry"]


def run_conv(bindings, workgroups, constants, entry):
    """conv1d.wgsl's y (binding 3) after `entry`, as a plan runs it: `tiled` with K_SPLITS > 1 writes its ranges'
    sums into partials (binding 7), which `tiled_combine` adds up before the epilogue."""
    if entry != "tiled":
        return gpu.run_kernel("conv1d", bindings, workgroups, constants, entry)[3]
    splits, columns = constants.get("K_SPLITS", 1), constants.get("STREAMS", 1) * constants["T_OUT"]
    if splits == 1:
        return gpu.run_kernel("conv1d", {**bindings, 7: np.zeros(1, np.float32)}, workgroups, constants, entry)[3]
    partials = gpu.run_kernel("conv1d", {**bindings, 7: poisoned(splits * columns * constants["C_OUT"])},
                              workgroups, constants, entry)[7]
    combine = {i: bindings[i] for i in (3, 4, 5, 6)}
    return gpu.run_kernel("conv1d", {**combine, 7: partials},
                          (-(-constants["C_OUT"] // CONV_COMBINE_WORKGROUP), columns, 1), constants, "tiled_combine")[3]


# ------------------------------------------------------------------------------------------------------ conv1d
def conv_reference(w, xs, taps, stride, c_in, t_out, x_base, x_history, *, first_frame=False, replicate=False,
                   input_mode=0, norm=None):
    """(acc [t_out, c_out] float64, S = sum_j |W_j| |in_j| [t_out, c_out]) from the flat x buffer."""
    k = taps * c_in
    windows = np.empty((t_out, k))
    for t in range(t_out):
        flat = t * stride * c_in + np.arange(k)
        if replicate and first_frame:
            low = flat < x_history * c_in
            flat[low] = x_history * c_in + flat[low] % c_in
        windows[t] = xs[x_base + flat]
    if input_mode == 1:
        windows = mr.elu(windows)
    elif input_mode == 2:
        windows = mr.layer_norm(windows, norm[0], norm[1])
    w64 = w.astype(np.float64)
    return windows @ w64.T, np.abs(windows) @ np.abs(w64).T


@pytest.mark.parametrize("fmt", ["f32", "f16", "q8", "q4"])
@pytest.mark.parametrize("tuning", ["gpu", "cpu", "gpu-many", "gpu-many/5", "gpu-many@16"])
@pytest.mark.parametrize("parity", [0, 1])
@pytest.mark.parametrize("c_out", [37, 20])
def test_conv1d_strided_with_history_regions(rng, fmt, tuning, parity, c_out):
    """A SEANet-style strided conv: taps 5, stride 3, 64 -> 37 channels (or 20: the `tiled` entry's 32-channel
    tiles), 19 steps (or 3: the few-steps split), reading the current region of a history buffer, writing the
    consumer's history into the other region, with bias, residual (from a region too) and ELU on both sides."""
    c_in, taps, stride = 64, 5, 3
    k = taps * c_in
    for t_out in (19, 3):
        x_history = taps - stride
        rows = x_history + t_out * stride
        x_region = rows * c_in
        xs = rng.standard_normal(2 * x_region + 4).astype(np.float32)
        x_offset = 4
        xs_buffer = np.concatenate([np.full(x_offset, GARBAGE, np.float32), xs[:2 * x_region]])
        main, scales, w = weight_streams(rng, (c_out, k), fmt)
        bias = rng.standard_normal(c_out).astype(np.float32)
        y_history = 2
        y_region = (y_history + t_out) * c_out
        r_row = 1
        r_region = (r_row + t_out) * c_out
        residual = rng.standard_normal(2 * r_region).astype(np.float32)
        y0 = rng.standard_normal(2 * y_region).astype(np.float32)
        step = np.array([parity + 2, 77, 7], np.uint32)          # parity index 0 (value % 2), position index 2
        constants, workgroups, entry = tiling_constants(t_out, c_out, k, tuning, input_mode=1)
        constants |= {"FORMAT": FORMATS[fmt], "C_OUT": c_out, "K": k, "C_IN": c_in, "T_OUT": t_out,
                      "STRIDE": stride, "X_OFFSET": x_offset, "X_REGION": x_region, "X_HISTORY": x_history,
                      "Y_REGION": y_region, "Y_HISTORY": y_history, "R_REGION": r_region, "R_ROW": r_row,
                      "INPUT_MODE": 1, "OUTPUT_MODE": 1, "HAS_BIAS": True, "HAS_RESIDUAL": True,
                      "PARITY_INDEX": 0, "POSITION_INDEX": 2}
        # The kernel reads the bias as vec4s: a binding must hold whole vec4s, as every plan's does (browsers clamp
        # a vector read that crosses the end; lavapipe would read the allocation's padding).
        bias_binding = np.concatenate([bias, np.zeros(-c_out % 4, np.float32)])
        out = run_conv({0: main, 1: scales, 2: xs_buffer, 3: in_out(y0), 4: bias_binding,
                        5: residual, 6: step}, workgroups, constants, entry)
        acc, size = conv_reference(w, xs_buffer, taps, stride, c_in, t_out, x_offset + parity * x_region, x_history,
                                   input_mode=1)
        v = acc + bias + residual[parity * r_region:][:r_region].reshape(-1, c_out)[r_row:]
        expected = mr.elu(v)
        bound = 16 * k * U32 * size + 4 * U32 * np.abs(v) + 1e-30
        got = out[parity * y_region:][:y_region].reshape(-1, c_out)
        assert_within(got[y_history:], expected, bound, f"{fmt} {tuning} T{t_out} current region")
        np.testing.assert_array_equal(got[:y_history], y0[parity * y_region:][:y_region].reshape(-1, c_out)[:2],
                                      "the current region's history rows are the producer's business only")
        other = out[(1 - parity) * y_region:][:y_region].reshape(-1, c_out)
        np.testing.assert_array_equal(other[:y_history], got[-y_history:], "next frame's history")
        np.testing.assert_array_equal(other[y_history:], y0[(1 - parity) * y_region:][:y_region]
                                      .reshape(-1, c_out)[y_history:], "the other region's rows are untouched")


@pytest.mark.parametrize("t_out", [19, 40])
@pytest.mark.parametrize("tuning", ["gpu-many", "gpu-many/4", "gpu-many/4@16"])
def test_conv1d_tiled_streams_are_independent(rng, t_out, tuning):
    """The `tiled` entry point with 3 streams in one dispatch (their columns side by side, tiles straddling two
    streams), each with its own history parity and its own buffers' parts: every stream's outputs equal, bit for
    bit, a one-stream dispatch on its own data, and the reference within the bound above."""
    c_in, taps, stride, c_out, streams = 32, 4, 2, 70, 3
    k, x_history = taps * c_in, taps - stride
    x_region = (x_history + t_out * stride) * c_in
    y_history = 1
    y_region = (y_history + t_out) * c_out
    main, scales, w = weight_streams(rng, (c_out, k), "q4")
    bias = np.concatenate([rng.standard_normal(c_out), np.zeros(-c_out % 4)]).astype(np.float32)
    xs = rng.standard_normal((streams, 2 * x_region)).astype(np.float32)
    y0 = rng.standard_normal((streams, 2 * y_region)).astype(np.float32)
    parities = [1, 0, 1]
    base = {"FORMAT": FORMATS["q4"], "C_OUT": c_out, "K": k, "C_IN": c_in, "T_OUT": t_out, "STRIDE": stride,
            "X_REGION": x_region, "X_HISTORY": x_history, "Y_REGION": y_region, "Y_HISTORY": y_history,
            "INPUT_MODE": 1, "OUTPUT_MODE": 1, "HAS_BIAS": True, "PARITY_INDEX": 0, "POSITION_INDEX": streams}

    def dispatch(n, x, y, step):
        constants, workgroups, entry = tiling_constants(t_out, c_out, k, tuning, input_mode=1, streams=n)
        strides = {"X_STREAM": 2 * x_region, "Y_STREAM": 2 * y_region} if n > 1 else {}
        return run_conv({0: main, 1: scales, 2: x.reshape(-1), 3: in_out(y.reshape(-1)), 4: bias,
                         5: x.reshape(-1), 6: step},
                        workgroups, {**base, **constants, **strides, "POSITION_INDEX": n}, entry)

    together = dispatch(streams, xs, y0, np.array(parities + [5] * streams, np.uint32)).reshape(streams, -1)
    for s_ in range(streams):
        alone = dispatch(1, xs[s_], y0[s_], np.array([parities[s_], 5], np.uint32))
        np.testing.assert_array_equal(together[s_], alone, f"stream {s_}")
        p = parities[s_]
        acc, size = conv_reference(w, xs[s_], taps, stride, c_in, t_out, p * x_region, x_history, input_mode=1)
        v = acc + bias[:c_out]
        got = together[s_][p * y_region:][:y_region].reshape(-1, c_out)[y_history:]
        assert_within(got, mr.elu(v), 16 * k * U32 * size + 4 * U32 * np.abs(v) + 1e-30, f"stream {s_}")


@pytest.mark.parametrize("fmt", ["f16", "q4"])
@pytest.mark.parametrize("tuning", ["gpu", "cpu", "gpu-many", "gpu-many/3", "gpu-many@16"])
def test_conv1d_layer_norm_in_gelu_out(rng, fmt, tuning):
    """The transformer's FFN-in: LayerNorm fused on the input (two steps, weight and bias from one params buffer),
    exact GELU on the output; inputs with a large mean (the two-pass variance must not cancel). gpu-many: the
    `tiled` entry point, its statistics computed per tile of columns."""
    c_in, c_out, t_out = 192, 75, 2
    x = (3.0 + rng.standard_normal((t_out, c_in))).astype(np.float32)
    main, scales, w = weight_streams(rng, (c_out, c_in), fmt, scale=3.0)
    norm_w = rng.uniform(0.5, 1.5, c_in).astype(np.float32)
    norm_b = (0.1 * rng.standard_normal(c_in)).astype(np.float32)
    constants, workgroups, entry = tiling_constants(t_out, c_out, c_in, tuning, input_mode=2)
    constants |= {"FORMAT": FORMATS[fmt], "C_OUT": c_out, "K": c_in, "T_OUT": t_out, "INPUT_MODE": 2,
                  "OUTPUT_MODE": 2, "EPS": 1e-5}
    out = run_conv({0: main, 1: scales, 2: x.reshape(-1), 3: poisoned(t_out * c_out),
                    4: np.concatenate([norm_w, norm_b]), 5: x.reshape(-1),
                    6: np.zeros(2, np.uint32)}, workgroups, constants, entry)
    acc, size = conv_reference(w, x.reshape(-1), 1, 1, c_in, t_out, 0, 0, input_mode=2, norm=(norm_w, norm_b))
    expected = mr.gelu(acc)
    bound = 1.2 * 16 * c_in * U32 * (size + np.abs(norm_b) @ np.abs(w.T)) + 8 * U32 * np.abs(acc) + 1e-30
    assert_within(out.reshape(t_out, c_out), expected, bound, f"{fmt} {tuning}")


@pytest.mark.parametrize("t_out", [2, 40])
@pytest.mark.parametrize("tuning", ["gpu-many", "gpu-many/2", "gpu-many@16"])
def test_conv1d_tiled_layer_norm_streams_are_independent(rng, t_out, tuning):
    """The `tiled` entry point with the LayerNorm input for 3 streams (tiles straddling streams at 40 steps): each
    stream's outputs equal a one-stream dispatch on its own rows bit for bit (the statistics are per column), and
    the reference within the LayerNorm test's bound."""
    c_in, c_out, streams = 64, 70, 3
    main, scales, w = weight_streams(rng, (c_out, c_in), "q4", scale=3.0)
    norm = np.concatenate([rng.uniform(0.5, 1.5, c_in), 0.1 * rng.standard_normal(c_in)]).astype(np.float32)
    xs = (3.0 + rng.standard_normal((streams, t_out, c_in))).astype(np.float32)
    base = {"FORMAT": FORMATS["q4"], "C_OUT": c_out, "K": c_in, "T_OUT": t_out, "INPUT_MODE": 2, "EPS": 1e-5}

    def dispatch(n, x):
        constants, workgroups, entry = tiling_constants(t_out, c_out, c_in, tuning, input_mode=2, streams=n)
        strides = {"X_STREAM": t_out * c_in, "Y_STREAM": t_out * c_out, "POSITION_INDEX": n} if n > 1 else {}
        return run_conv({0: main, 1: scales, 2: x.reshape(-1), 3: poisoned(n * t_out * c_out),
                         4: norm, 5: x.reshape(-1), 6: np.zeros(2 * n, np.uint32)},
                        workgroups, {**base, **constants, **strides}, entry)

    together = dispatch(streams, xs).reshape(streams, t_out, c_out)
    for s_ in range(streams):
        np.testing.assert_array_equal(together[s_], dispatch(1, xs[s_]).reshape(t_out, c_out), f"stream {s_}")
        acc, size = conv_reference(w, xs[s_].reshape(-1), 1, 1, c_in, t_out, 0, 0, input_mode=2,
                                   norm=(norm[:c_in], norm[c_in:]))
        bound = 1.2 * 16 * c_in * U32 * (size + np.abs(norm[c_in:]) @ np.abs(w.T)) + 8 * U32 * np.abs(acc) + 1e-30
        assert_within(together[s_], acc, bound, f"stream {s_}")


@pytest.mark.parametrize("fmt", ["f16", "q4", "f32"])
@pytest.mark.parametrize("input_mode", [1, 2])
def test_conv1d_tiled_slices_do_not_change_the_sums(rng, fmt, input_mode):
    """`tiled` with slices of 16 columns and of 32 (TILE_K; the plan picks by grid size, and so by the streams):
    the same bits, for an ELU-input strided conv over 2 streams and a LayerNorm-input linear layer."""
    streams, c_out = 2, 70
    c_in, taps, stride, t_out = (32, 4, 2, 19) if input_mode == 1 else (192, 1, 1, 2)
    k = taps * c_in
    rows = (taps - stride) + t_out * stride
    main, scales, _ = weight_streams(rng, (c_out, k), fmt)
    x = (1.0 + rng.standard_normal((streams, rows * c_in))).astype(np.float32)
    norm = np.concatenate([rng.uniform(0.5, 1.5, c_in), 0.1 * rng.standard_normal(c_in)]).astype(np.float32)
    outputs = []
    for slices in (16, 32):
        constants, workgroups, entry = tiling_constants(t_out, c_out, k, f"gpu-many@{slices}", input_mode,
                                                        streams)
        constants |= {"FORMAT": FORMATS[fmt], "C_OUT": c_out, "K": k, "C_IN": c_in, "T_OUT": t_out,
                      "STRIDE": stride, "INPUT_MODE": input_mode, "X_STREAM": rows * c_in,
                      "Y_STREAM": t_out * c_out, "POSITION_INDEX": streams}
        outputs.append(run_conv({0: main, 1: scales, 2: x.reshape(-1), 3: poisoned(streams * t_out * c_out),
                                 4: norm, 5: x.reshape(-1), 6: np.zeros(2 * streams, np.uint32)},
                                workgroups, constants, entry))
    assert not np.isnan(outputs[1]).any()
    np.testing.assert_array_equal(outputs[0], outputs[1])


@pytest.mark.parametrize("tuning", ["gpu", "cpu", "gpu-many", "gpu-many/4", "gpu-many/4@16"])
def test_conv1d_accumulate_with_layer_scale(rng, tuning):
    """The attention output projection: y += scale * (W x), in place (the residual stream)."""
    c_in, c_out, t_out = 128, 40, 2
    x = rng.standard_normal((t_out, c_in)).astype(np.float32)
    y0 = rng.standard_normal((t_out, c_out)).astype(np.float32)
    main, scales, w = weight_streams(rng, (c_out, c_in), "q8")
    layer_scale = rng.uniform(0.05, 0.2, c_out).astype(np.float32)
    constants, workgroups, entry = tiling_constants(t_out, c_out, c_in, tuning)
    constants |= {"FORMAT": FORMATS["q8"], "C_OUT": c_out, "K": c_in, "T_OUT": t_out, "HAS_SCALE": True,
                  "ACCUMULATE": True}
    out = run_conv({0: main, 1: scales, 2: x.reshape(-1), 3: in_out(y0.reshape(-1)),
                    4: layer_scale, 5: x.reshape(-1), 6: np.zeros(2, np.uint32)},
                   workgroups, constants, entry)
    acc, size = conv_reference(w, x.reshape(-1), 1, 1, c_in, t_out, 0, 0)
    expected = y0 + layer_scale * acc
    bound = (c_in + 8) * U32 * size * layer_scale + 2 * U32 * np.abs(expected)
    assert_within(out.reshape(t_out, c_out), expected, bound)


@pytest.mark.parametrize("tuning", ["gpu", "gpu-many", "gpu-many/2", "gpu-many@16"])
@pytest.mark.parametrize("position", [0, 2])
def test_conv1d_replicate_padding_on_the_first_frame_only(rng, position, tuning):
    """The downsample: k 4, stride 2, one output step; at position 0 its 2 history rows read the first input row."""
    c_in, c_out, taps, stride = 64, 24, 4, 2
    history = taps - stride
    x_region = (history + stride) * c_in
    xs = rng.standard_normal(2 * x_region).astype(np.float32)
    main, scales, w = weight_streams(rng, (c_out, taps * c_in), "q8")
    constants, workgroups, entry = tiling_constants(1, c_out, taps * c_in, tuning)
    constants |= {"FORMAT": FORMATS["q8"], "C_OUT": c_out, "K": taps * c_in, "C_IN": c_in, "T_OUT": 1,
                  "STRIDE": stride, "X_REGION": x_region, "X_HISTORY": history, "REPLICATE": True,
                  "PARITY_INDEX": 1, "POSITION_INDEX": 0}
    step = np.array([position, 1], np.uint32)      # parity 1: the second region
    out = run_conv({0: main, 1: scales, 2: xs, 3: poisoned(c_out), 4: xs, 5: xs, 6: step},
                   workgroups, constants, entry)
    acc, size = conv_reference(w, xs, taps, stride, c_in, 1, x_region, history, first_frame=position == 0,
                               replicate=True)
    assert_within(out, acc[0], (taps * c_in + 8) * U32 * size[0], f"position {position}")


# -------------------------------------------------------------------------------------------------- conv1d_pcm
def test_conv1d_pcm_keeps_its_sample_history_across_frames(rng):
    """Three frames through the first conv (7 taps, 1 -> 24 channels, 100-sample frames): equal to one conv over
    the concatenated audio with 6 zeros in front; each frame's output lands in the region of its parity."""
    c_out, taps, frame, region, y_history = 24, 7, 100, 8, 2
    w = rng.standard_normal((c_out, taps)).astype(np.float32)
    bias = rng.standard_normal(c_out).astype(np.float32)
    audio = rng.standard_normal(3 * frame).astype(np.float32)
    full = np.concatenate([np.zeros(taps - 1), audio])
    history = np.full(2 * region, 0.0, np.float32)
    y_region = (y_history + frame) * c_out
    y = np.zeros(2 * y_region, np.float32)
    constants = {"C_OUT": c_out, "TAPS": taps, "FRAME": frame, "HISTORY_REGION": region, "Y_REGION": y_region,
                 "Y_HISTORY": y_history, "STEPS_PER_WORKGROUP": 16, "WORKGROUP_SIZE": 16}
    for f in range(3):
        out = gpu.run_kernel("conv1d_pcm", {0: w, 1: bias, 2: audio[f * frame:(f + 1) * frame],
                                            3: in_out(history), 4: in_out(y), 5: np.array([f], np.uint32)},
                             (-(-frame // 16),), constants)
        history, y = out[3], out[4]
        p = f % 2
        windows = np.lib.stride_tricks.sliding_window_view(full[f * frame:(f + 1) * frame + taps - 1], taps)
        expected = windows @ w.T.astype(np.float64) + bias
        got = y[p * y_region:][:y_region].reshape(-1, c_out)
        assert_within(got[y_history:], expected, (taps + 2) * U32 * (np.abs(windows) @ np.abs(w.T) + np.abs(bias)),
                      f"frame {f}")
        other = y[(1 - p) * y_region:][:y_region].reshape(-1, c_out)
        np.testing.assert_array_equal(other[:y_history], got[-y_history:])
        np.testing.assert_array_equal(history[(1 - p) * region:][:taps - 1], audio[(f + 1) * frame - taps + 1:
                                                                                   (f + 1) * frame])


# --------------------------------------------------------------------------------------------- attention_chunk
@pytest.mark.parametrize("ring,steps,fmt,context,chunks,entry", [
    (7, 2, "q4", 7, 14, "main"), (8, 2, "f32", 7, 14, "main"), (9, 3, "q8", 7, 14, "main"),
    (70, 2, "f16", 70, 40, "main"), (7, 2, "q4", 7, 14, "given_qkv"), (70, 2, "f32", 70, 40, "given_qkv")])
def test_attention_chunk_over_ring_wraps(rng, ring, steps, fmt, context, chunks, entry):
    """LayerNorm + QKV + RoPE + ring + attention, `chunks` chunks of `steps` steps, far past the wrap: ring =
    context reproduces moshi's streaming quirk (the chunk's later keys overwrite the slot the first query still
    wanted), ring = context + steps - 1 gives the exact sliding window. A ring of 70 keys takes more than one pass
    of the 32 invocations (as the real Mimi's 250 do of 128). Unwritten slots hold garbage. 4 heads of 16 (D = 64:
    the q4/q8 layouts need K % 64 == 0). Entry given_qkv: the same from q, k, v computed beforehand (here by numpy
    from the same weights, rounded to f32 as conv1d.wgsl writes them)."""
    heads, head_dim = 4, 16
    dim = heads * head_dim
    freqs = rope_frequencies(head_dim, 10_000.0)
    main, scales, w = weight_streams(rng, (3 * dim, dim), fmt)
    norm_w = rng.uniform(0.5, 1.5, dim).astype(np.float32)
    norm_b = (0.1 * rng.standard_normal(dim)).astype(np.float32)
    kv = np.full((2, heads, ring, head_dim), GARBAGE, np.float32)
    ref_k, ref_v = kv[0].astype(np.float64), kv[1].astype(np.float64)
    constants = {"FORMAT": FORMATS[fmt], "HEADS": heads, "HEAD_DIM": head_dim, "STEPS": steps, "RING": ring,
                 "CONTEXT": context, "POSITION_INDEX": 1, "WORKGROUP_SIZE": 32}
    for chunk in range(chunks):
        base = chunk * steps
        x = (0.5 + rng.standard_normal((steps, dim))).astype(np.float32)
        out, qkv = run_attention_chunk(entry, x, (main, scales, w), (norm_w, norm_b), base, freqs, kv, constants)
        kv = out[6]
        expected = mr.attention_chunk(qkv, base, ref_k, ref_v, freqs, context)
        # q, k, v ~ N(0, 1) (unit LayerNorm outputs, 1/sqrt(D) weights) and softmax weights sum to 1: the float
        # error is ~(D + head_dim + window) u ~ 1e-6; 1e-5 is far below any wrong slot (garbage 1e4), missing or
        # extra key, wrong rotation or wrong head (all O(0.1)).
        assert_within(out[7].reshape(steps, dim), expected, 1e-5, f"chunk {chunk}")
        assert_within(kv[0], ref_k, 1e-5 * np.abs(ref_k) + 1e-5, f"keys after chunk {chunk}")
        assert_within(kv[1], ref_v, 1e-5 * np.abs(ref_v) + 1e-5, f"values after chunk {chunk}")


@pytest.mark.parametrize("entry", ["main", "given_qkv"])
def test_attention_chunk_one_frame_of_several(rng, entry):
    check_one_frame_of_several(rng, entry)


def check_one_frame_of_several(rng, entry, frames=3, submissions=3, trig_error=0.0):
    """ROWS / FIRST_ROW (Mimi plans of several frames a submission): x, qkv and out hold `frames` frames' rows;
    the dispatch of frame f attends rows 2f, 2f + 1 at positions base + 2f, + 1 and writes only those rows of out.
    Frame by frame over 9 frames (past the ring's wrap): the same as one-frame chunks in the reference.
    trig_error: the adapter's cos/sin error where not negligible (test_attention.trig_score_error)."""
    heads, head_dim, ring, steps = 4, 16, 7, 2
    dim, rows = heads * head_dim, frames * steps
    freqs = rope_frequencies(head_dim, 10_000.0)
    main, scales, w = weight_streams(rng, (3 * dim, dim), "q4")
    norm = ((rng.uniform(0.5, 1.5, dim)).astype(np.float32), (0.1 * rng.standard_normal(dim)).astype(np.float32))
    kv = np.full((2, heads, ring, head_dim), GARBAGE, np.float32)
    ref_k, ref_v = kv[0].astype(np.float64), kv[1].astype(np.float64)
    k_norm = k_max = v_max = 0.0                # over every key/value written so far (what a query can attend)
    for submission in range(submissions):
        base = submission * rows                                  # the step field: the submission's first position
        x = (0.5 + rng.standard_normal((rows, dim))).astype(np.float32)
        qkv = (mr.layer_norm(x, *norm) @ w.T.astype(np.float64)).astype(np.float32)
        inputs = {8: qkv.reshape(-1)} if entry == "given_qkv" else {0: main, 1: scales, 2: x.reshape(-1),
                                                                    3: np.concatenate(norm)}
        out = np.full(rows * dim, np.nan, np.float32)
        for f in range(frames):
            constants = {"FORMAT": FORMATS["q4"], "HEADS": heads, "HEAD_DIM": head_dim, "STEPS": steps, "RING": ring,
                         "CONTEXT": ring, "POSITION_INDEX": 1, "WORKGROUP_SIZE": 32, "ROWS": rows,
                         "FIRST_ROW": steps * f}
            result = gpu.run_kernel("attention_chunk", {**inputs, 4: np.array([99, base], np.uint32), 5: freqs,
                                                        6: in_out(kv), 7: in_out(out)}, (heads, steps), constants,
                                    entry)
            kv, out = result[6], result[7].reshape(-1)
            chunk = slice(steps * f, steps * (f + 1))
            expected = mr.attention_chunk(qkv[chunk].astype(np.float64), base + steps * f, ref_k, ref_v, freqs, ring)
            q, k, v = (qkv[chunk, i * dim:(i + 1) * dim].reshape(steps, heads, head_dim) for i in range(3))
            k_norm = max(k_norm, np.linalg.norm(k, axis=2).max())
            k_max, v_max = max(k_max, np.abs(k).max()), max(v_max, np.abs(v).max())
            score = trig_score_error(np.linalg.norm(q, axis=2).max(), k_norm, head_dim, trig_error)
            assert_within(out.reshape(rows, dim)[chunk], expected, 1e-5 + 2 * score * v_max,
                          f"submission {submission} frame {f}")
            assert np.isnan(out.reshape(rows, dim)[steps * (f + 1):]).all(), "a later frame's rows were written"
        key_bound = 1e-5 * np.abs(ref_k) + 1e-5 + 2 * trig_error * k_max
        assert_within(kv[0], ref_k, key_bound, f"keys after submission {submission}")
        assert_within(kv[1], ref_v, 1e-5 * np.abs(ref_v) + 1e-5, f"values after submission {submission}")


def run_attention_chunk(entry, x, weights, norm, base, freqs, kv, constants):
    """One chunk of x [steps, D] through attention_chunk.wgsl's `entry` (frame value [99, base]): `main` normalises
    and projects x itself (weights: (main, scales, dequantised W)), `given_qkv` takes q, k, v computed here in
    float64 and rounded to f32 as conv1d.wgsl writes them. Returns (outputs, the q | k | v the reference takes)."""
    main, scales, w = weights
    qkv = mr.layer_norm(x, *norm) @ w.T.astype(np.float64)
    steps, dim = x.shape
    common = {4: np.array([99, base], np.uint32), 5: freqs, 6: in_out(kv), 7: poisoned(steps * dim)}
    workgroups = (constants["HEADS"], steps)
    if entry == "given_qkv":
        qkv = qkv.astype(np.float32)
        return gpu.run_kernel("attention_chunk", {8: qkv.reshape(-1), **common}, workgroups, constants,
                              entry), qkv.astype(np.float64)
    return gpu.run_kernel("attention_chunk", {0: main, 1: scales, 2: x.reshape(-1), 3: np.concatenate(norm),
                                              **common}, workgroups, constants), qkv


# ---------------------------------------------------------------------------------------------------------- rvq
def run_rvq(books, scales, sqnorms, proj, fmt, levels, bins, dim, tuning, codes_offset=3, active=None, streams=1):
    """The codes [streams, levels] of proj [streams, 2 * dim]; tuning "gpu-many": the levels on the `tiled` entry
    point (the final resolve on `main`, as the plan does). active: the streams' "active" step flags (None: none)."""
    workgroup, tpe, ept = (64, 1, 4) if tuning == "cpu" else (256, 8, 2)
    entries = workgroup // tpe * ept
    blocks = bins // entries
    stride = codes_offset + levels + 1
    common = {"FORMAT": FORMATS[fmt], "DIM": dim, "BINS": bins, "LEVELS": levels, "SEMANTIC": 1,
              "CODES_OFFSET": codes_offset, "WORKGROUP_SIZE": workgroup, "THREADS_PER_ENTRY": tpe,
              "ENTRIES_PER_THREAD": ept, "CODES_STRIDE": stride, **({} if active is None else {"ACTIVE_INDEX": 1})}
    step = np.array([9, *([1] * streams if active is None else np.atleast_1d(active))], np.uint32)
    partials = np.zeros(2 * streams * levels * blocks, np.uint32)
    codes = np.full(streams * stride, 0xDEADBEEF, np.uint32)
    residuals = np.full(streams * levels * dim, np.nan, np.float32)
    for level in list(range(1, levels)) + [levels]:
        if level == levels:
            workgroups, entry, more = (1, 2, streams), "main", {}
        elif tuning == "gpu-many":
            workgroups, entry, more = (blocks, -(-streams // 64), 2 if level == 1 else 1), "tiled", {"STREAMS": streams}
        else:
            workgroups, entry, more = (blocks, 2 if level == 1 else 1, streams), "main", {}
        out = gpu.run_kernel("rvq", {0: books, 1: scales, 2: sqnorms, 3: proj.reshape(-1), 4: in_out(partials),
                                     5: in_out(codes), 6: in_out(residuals), 7: step},
                             workgroups, {**common, "LEVEL": level, **more}, entry)
        partials, codes, residuals = out[4], out[5], out[6]
    codes = codes.reshape(streams, stride)
    assert (codes[:, :codes_offset] == 0xDEADBEEF).all() and (codes[:, -1] == 0xDEADBEEF).all()
    return codes[:, codes_offset:codes_offset + levels] if streams > 1 else codes[0, codes_offset:codes_offset + levels]


@pytest.mark.parametrize("fmt", ["f32", "f16", "q8", "q4"])
@pytest.mark.parametrize("tuning", ["gpu", "cpu", "gpu-many"])
def test_rvq_split_levels_match_the_reference(rng, fmt, tuning):
    """5 levels (1 semantic + 4 acoustic from their own projection) of 512 entries x 64 dims, 4 latents, one
    dispatch per level as the plan records them: codes equal the reference wherever its margin is clear of float
    noise (after a differing code a group's residual differs: not compared); duplicated entries (exact ties)
    resolve to the lowest index; nothing is written outside codes[CODES_OFFSET : CODES_OFFSET + LEVELS]."""
    check_rvq_levels(rng, fmt, tuning, 64)


@pytest.mark.parametrize("fmt", ["f16", "q4"])
def test_rvq_one_unit_per_member_matches_the_reference(rng, fmt):
    """Mimi's 256 dims on the "gpu" split: one 32-dim unit per member of a team of 8, whose entries' units and
    squared norms main loads before it resolves the previous level (as the real codec runs it)."""
    check_rvq_levels(rng, fmt, "gpu", 256)


@pytest.mark.parametrize("fmt", ["f16", "q4"])
def test_rvq_tiled_at_mimi_size_matches_the_reference(rng, fmt):
    """Mimi's 256 dims on the "gpu-many" split: `tiled` sums them over several slices."""
    check_rvq_levels(rng, fmt, "gpu-many", 256)


def check_rvq_levels(rng, fmt, tuning, dim):
    levels, bins = 5, 512
    values = rng.standard_normal((levels * bins, dim)) * rng.uniform(0.5, 1.5, (levels * bins, 1))
    values = values.astype(np.float32)
    for level in range(levels):                          # exact ties: entry 300 = entry 7 in every level
        values[level * bins + 300] = values[level * bins + 7]
    streams = quant.quantize(values, fmt)
    books = quant.dequantize(streams, fmt, values.shape)
    sqnorms = np.einsum("nd,nd->n", books, books).astype(np.float32)
    main = streams.get("qs", streams.get("w"))
    scales = streams["d"].view(np.uint32) if "d" in streams else main
    for trial in range(4):
        proj = rng.standard_normal(2 * dim).astype(np.float32)
        if trial == 0:                                   # the residual lands on the tied entries
            proj[:dim] = books[7] * 1.01
            proj[dim:] = books[bins + 7] * 1.01
        got = run_rvq(main, scales, sqnorms, proj, fmt, levels, bins, dim, tuning)
        expected, margins = mr.rvq_encode(proj, books, sqnorms, levels, bins, 1)
        if trial == 0:
            assert got[0] == 7 and got[1] == 7
        for level in range(levels):
            if level > 1 and got[level - 1] != expected[level - 1]:
                break                                    # the group's residual diverged after a near-tie
            if margins[level] > 1e-4:
                assert got[level] == expected[level], f"trial {trial} level {level} margin {margins[level]}"


def test_rvq_stream_sitting_out_keeps_its_codes(rng):
    """A stream whose "active" flag is 0 writes no code (the LM reads the codes of its last frame next time);
    with the flag 1 the codes are those of a plan without flags."""
    levels, bins, dim = 3, 256, 32
    values = rng.standard_normal((levels * bins, dim)).astype(np.float32)
    sqnorms = np.einsum("nd,nd->n", values, values).astype(np.float32)
    proj = rng.standard_normal(2 * dim).astype(np.float32)
    run = functools.partial(run_rvq, values, values, sqnorms, proj, "f32", levels, bins, dim, "cpu")
    assert run(active=0).tolist() == [0xDEADBEEF] * levels
    assert run(active=1).tolist() == run().tolist()


def test_rvq_tiled_streams_are_independent(rng):
    """rvq.wgsl's `tiled` entry point for 70 streams (two tiles of streams; one sits the frame out): each stream's
    codes equal a one-stream run on its own projection, and the inactive stream's codes are not written."""
    levels, bins, dim, streams = 4, 256, 64, 70
    values = rng.standard_normal((levels * bins, dim)).astype(np.float32)
    sqnorms = np.einsum("nd,nd->n", values, values).astype(np.float32)
    proj = rng.standard_normal((streams, 2 * dim)).astype(np.float32)
    active = np.ones(streams, np.uint32)
    active[66] = 0
    run = functools.partial(run_rvq, values, values, sqnorms, fmt="f32", levels=levels, bins=bins, dim=dim,
                            tuning="gpu-many")
    together = run(proj=proj, streams=streams, active=active)
    assert (together[66] == 0xDEADBEEF).all()
    for s_ in [0, 1, 37, 63, 64, 69]:
        np.testing.assert_array_equal(together[s_], run(proj=proj[s_]), f"stream {s_}")
