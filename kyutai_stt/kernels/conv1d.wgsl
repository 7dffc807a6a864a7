// Streaming 1-D convolution over time-major activations (a linear layer when TAPS = 1), weights in any package
// format dequantised on the fly, with a fused input transform, a fused epilogue and the conv history kept in
// double-buffered regions (no copy dispatch). Mimi's encoder runs every conv and linear layer through it.
//
//   W: [C_OUT, K] in the package layout of FORMAT (0 f32, 1 f16, 2 q8, 3 q4: kyutai_stt/quant.py), K = TAPS * C_IN,
//      column = tap * C_IN + c_in (docs/weights.md: convs are stored k-major);   K % 32 == 0
//   X: time-major rows of C_IN floats; region r of X starts at X_OFFSET + r * X_REGION (one region when X_REGION
//      is 0). The window of output step t is the K contiguous floats at row t * STRIDE of the current region:
//        win(t)[j] = X[x_base + t * STRIDE * C_IN + j],   x_base = X_OFFSET + parity * X_REGION
//      (a producer with history P wrote the P rows before this frame's rows, so the window spans both).
//      REPLICATE: on the first frame (frame_values[POSITION_INDEX] == 0) rows < X_HISTORY read row X_HISTORY
//      instead: moshi's replicate padding of the downsampling conv.
//   in(win)[j] by INPUT_MODE: 0 plain; 1 ELU (alpha 1); 2 LayerNorm over the window (TAPS = 1, K = C_IN):
//        (v - mean) * inverseSqrt(var + EPS) * params[NORM_OFFSET + j] + params[NORM_OFFSET + K + j]
//   acc[t, o] = sum_j W[o, j] * in(win(t))[j]
//   v = acc (+ params[BIAS_OFFSET + o] if HAS_BIAS) (* params[SCALE_OFFSET + o] if HAS_SCALE)
//         (+ residual[r_base + (R_ROW + t) * C_OUT + o] if HAS_RESIDUAL,  r_base = R_OFFSET + parity * R_REGION)
//         (+ y[current destination] if ACCUMULATE)
//   v = act(v) by OUTPUT_MODE: 0 none; 1 ELU; 2 GELU (exact: 0.5 v (1 + erf(v / sqrt 2)), erf below)
//   y[y_base + (Y_HISTORY + t) * C_OUT + o] = v,   y_base = Y_OFFSET + parity * Y_REGION
//   and, for the consumer's history (Y_HISTORY > 0, Y_REGION > 0), the last Y_HISTORY steps also go to the front
//   of the other region: y[Y_OFFSET + (1 - parity) * Y_REGION + (t - (T_OUT - Y_HISTORY)) * C_OUT + o] = v
//   where parity = frame_values[PARITY_INDEX] (the frame index modulo 2): next frame reads the other region, whose
//   first Y_HISTORY rows then hold this frame's last rows. Zero-filled state regions = zero padding at the start.
// Streams (a plan of several, docs/plan.md): workgroup z is the stream s: its x, y and residual start s * X_STREAM,
//   s * Y_STREAM, s * R_STREAM floats in (added to the offsets above), its parity and position are
//   frame_values[PARITY_INDEX + s] and frame_values[POSITION_INDEX + s]; the weights are read for all streams.
//
// Bindings (group 0): 0 = W (read, u32 words as vec4: the f32/f16 `w` stream or the q8/q4 `qs` stream),
//   1 = scales (read, u32: the `d` stream of q8/q4; bind any buffer otherwise), 2 = x (read), 3 = y (read_write),
//   4 = params (read, f32 vectors: biases, LayerScales, LayerNorm weight then bias, at 16-byte aligned offsets),
//   5 = residual (read; bind any buffer but y when unused), 6 = step (read, u32: the plan's step buffer),
//   7 = partials (read_write, f32: `tiled` and `tiled_combine` only; any scratch buffer when K_SPLITS == 1).
// Dispatch: (ceil(C_OUT / (TEAMS_O * ROWS_PER_THREAD)), ceil(T_OUT / (TEAMS_T * STEPS_PER_THREAD)), STREAMS) workgroups
//   of WORKGROUP_SIZE invocations; TEAMS_O = WORKGROUP_SIZE / (THREADS_PER_ROW * TEAMS_T).
// Work split: a team of THREADS_PER_ROW invocations owns ROWS_PER_THREAD output channels x STEPS_PER_THREAD steps
//   and splits K into 32-column units between its members (neighbours read neighbouring units: coalesced). Per
//   unit a thread issues one round of loads, every row's weights and every step's inputs, before using any (the
//   driver does not overlap a loop's iterations: docs/architecture.md), then adds the columns in order; each
//   weight is read once per row and used for all the thread's steps. Members' sums meet in workgroup memory (one
//   barrier); the member writing an output adds them. kyutai_stt.models.mimi._tiling chooses the split per layer
//   and device kind.
// Entry `tiled` (plans of many streams: models/mimi.py "gpu-many"): the same outputs as a tiled product over
//   (output channel o, column n = s * T_OUT + t) for all STREAMS streams at once: a workgroup decodes each slice of
//   TILE_K weight columns of TILE_ROWS = 4 ROW_THREADS channels and the matching window slice of TILE_COLS =
//   4 COL_THREADS columns into workgroup memory once, and each invocation accumulates 4 x 4 outputs, summed over
//   j = 0, 1, .. K - 1 in order: a stream's outputs depend neither on STREAMS nor on the other streams (the order
//   differs from `main`'s: the two agree to f32 rounding). LayerNorm input: each column's statistics first
//   (tile_norm_stats; needs WORKGROUP_SIZE = 4 TILE_COLS and 16 <= TILE_K <= 4 ROW_THREADS), applied as slices
//   load. TILE_K (16 or 32) sets only how many columns a slice holds, never the order of the sums.
//   Where each invocation loads at most one part of each tile, the next slice's loads go out before the current
//   slice is summed (registers: words, scales, windows and, with LayerNorm input, their weight and bias) and are
//   decoded into the tiles after it.
//   With K_SPLITS > 1, workgroup z sums columns [z K / K_SPLITS, (z + 1) K / K_SPLITS) into partials
//   (f32[K_SPLITS, STREAMS * T_OUT, C_OUT]), and `tiled_combine` adds the ranges in order z = 0, 1, .. then
//   applies the epilogue: layers whose few columns (1-2 steps a frame) leave the grid small shorten each
//   workgroup's chain of K / TILE_K slices. The sum order is fixed by K_SPLITS, which the plan takes from the
//   layer's shape alone (never from STREAMS).
//   Dispatch: (ceil(C_OUT / TILE_ROWS), ceil(STREAMS * T_OUT / TILE_COLS), K_SPLITS) workgroups of WORKGROUP_SIZE =
//   ROW_THREADS * COL_THREADS invocations; workgroup memory 16 * TILE_K * (ROW_THREADS + COL_THREADS) bytes
//   (16 KiB at the defaults, the portable limit; 8 KiB with TILE_K = 16); then, if K_SPLITS > 1, tiled_combine
//   (ceil(C_OUT / COMBINE_WORKGROUP), STREAMS * T_OUT, 1).
// Constraints (the host checks them): K % (32 K_SPLITS) == 0, C_IN % 4 == 0, all offsets and regions multiples of 4,
//   ROWS_PER_THREAD <= 4, STEPS_PER_THREAD <= 4, WORKGROUP_SIZE % (THREADS_PER_ROW * TEAMS_T) == 0,
//   LayerNorm: K == C_IN and TEAMS_T * STEPS_PER_THREAD <= 16.
//
// erf: Juffa's single-precision erff (max error 1.16 ulp = 6.9e-8 absolute over [-6, 6] with a correctly rounded
// exp, measured against math.erf on 1.2M points); WGSL's exp may add a few ulp on the |x| > 0.93 branch.

override FORMAT: u32;
override C_OUT: u32;
override K: u32;
override C_IN: u32 = K;
override T_OUT: u32;
override STRIDE: u32 = 1u;

override X_OFFSET: u32 = 0u;
override X_REGION: u32 = 0u;
override X_HISTORY: u32 = 0u;
override REPLICATE: bool = false;
override Y_OFFSET: u32 = 0u;
override Y_REGION: u32 = 0u;
override Y_HISTORY: u32 = 0u;
override R_OFFSET: u32 = 0u;
override R_REGION: u32 = 0u;
override R_ROW: u32 = 0u;

override INPUT_MODE: u32 = 0u;
override OUTPUT_MODE: u32 = 0u;
override HAS_BIAS: bool = false;
override HAS_SCALE: bool = false;
override HAS_RESIDUAL: bool = false;
override ACCUMULATE: bool = false;
override BIAS_OFFSET: u32 = 0u;
override SCALE_OFFSET: u32 = 0u;
override NORM_OFFSET: u32 = 0u;
override EPS: f32 = 1e-5;

override PARITY_INDEX: u32 = 0u;
override POSITION_INDEX: u32 = 0u;
override X_STREAM: u32 = 0u;
override Y_STREAM: u32 = 0u;
override R_STREAM: u32 = 0u;

override WORKGROUP_SIZE: u32 = 64u;
// `tiled` only: its streams (all in one dispatch) and tile (4 x 4 outputs per invocation).
override STREAMS: u32 = 1u;
override ROW_THREADS: u32 = 16u;
override COL_THREADS: u32 = 16u;
override TILE_ROWS: u32 = 4u * ROW_THREADS;
override TILE_COLS: u32 = 4u * COL_THREADS;
override K_SPLITS: u32 = 1u;
// `tiled`: columns per slice (16 or 32; models/mimi.py _tiling: 16 halves the tiles' workgroup memory, so that more
// workgroups share an SM, for twice the barriers).
override TILE_K: u32 = 32u;
// Weights per u32 word of the stored matrix: f32 1, f16 2, q8 4, q4 8.
override WEIGHTS_PER_WORD: u32 = select(select(1u, 2u, FORMAT == FORMAT_F16), select(4u, 8u, FORMAT == FORMAT_Q4),
                                        FORMAT >= FORMAT_Q8);
override THREADS_PER_ROW: u32 = 1u;
override TEAMS_T: u32 = 1u;
override ROWS_PER_THREAD: u32 = 4u;
override STEPS_PER_THREAD: u32 = 4u;

const FORMAT_F32 = 0u;
const FORMAT_F16 = 1u;
const FORMAT_Q8 = 2u;
const FORMAT_Q4 = 3u;
const MODE_ELU = 1u;
const MODE_LAYER_NORM = 2u;
const MODE_GELU = 2u;
const MAX_NORM_STEPS = 16u;
const SCALE_BLOCK = 32u;
const COMBINE_WORKGROUP = 64u;

@group(0) @binding(0) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read> scales: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> params: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> residual: array<f32>;
@group(0) @binding(6) var<storage, read> frame_values: array<u32>;
@group(0) @binding(7) var<storage, read_write> partials: array<f32>;

// Team members' sums [sum index][invocation]; also the LayerNorm statistics' reduction scratch.
var<workgroup> partial_sums: array<f32, WORKGROUP_SIZE * ROWS_PER_THREAD * STEPS_PER_THREAD>;
// (mean, 1 / std) of each of the workgroup's steps (LayerNorm input mode).
var<workgroup> norm_stats: array<vec2<f32>, MAX_NORM_STEPS>;
// `tiled`: weight_tile[j * ROW_THREADS + g] = W[first_row + 4 g .. + 3, j0 + j]; input_tile[j * COL_THREADS + g] =
// in(win)[columns first_col + 4 g .. + 3][j0 + j].
var<workgroup> weight_tile: array<vec4<f32>, TILE_K * ROW_THREADS>;
var<workgroup> input_tile: array<vec4<f32>, TILE_K * COL_THREADS>;
// `tiled`, LayerNorm input: (mean, 1 / std) of the 4 columns this invocation loads (tile_norm_stats), in registers:
// workgroup memory holds no more than the two tiles (16 KiB, the portable limit).
var<private> tile_means: vec4<f32>;
var<private> tile_inv_stds: vec4<f32>;

// expm1 without cancellation near 0 (Kahan): exact where exp rounds to 1, else (u - 1) * v / log(u).
fn expm1(v: f32) -> f32 {
    let u = exp(v);
    if (u == 1.0) {
        return v;
    }
    let um1 = u - 1.0;
    if (um1 == -1.0) {
        return -1.0;
    }
    return um1 * v / log(u);
}

fn elu(v: f32) -> f32 {
    return select(expm1(v), v, v > 0.0);
}

fn elu4(v: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(elu(v.x), elu(v.y), elu(v.z), elu(v.w));
}

// Single-precision erf (N. Juffa): max error 1.16 ulp with a correctly rounded exp.
fn erf(a: f32) -> f32 {
    let t = abs(a);
    let s = a * a;
    if (t > 0.927734375) {
        var r = fma(-1.72853470e-5, t, 3.83197126e-4);
        let u = fma(-3.88396438e-3, t, 2.42546219e-2);
        r = fma(r, s, u);
        r = fma(r, t, -1.06777877e-1);
        r = fma(r, t, -6.34846687e-1);
        r = fma(r, t, -1.28717512e-1);
        r = fma(r, t, -t);
        return sign(a) * (1.0 - exp(r));
    }
    var r = -5.96761703e-4;
    r = fma(r, s, 4.99119423e-3);
    r = fma(r, s, -2.67681349e-2);
    r = fma(r, s, 1.12819925e-1);
    r = fma(r, s, -3.76125336e-1);
    r = fma(r, s, 1.28379166e-1);
    return fma(r, a, a);
}

fn gelu(v: f32) -> f32 {
    return 0.5 * v * (1.0 + erf(v * 0.70710678118654752));
}

fn param(i: u32) -> f32 {
    return params[i / 4u][i % 4u];
}

// W[row, col .. col + 32) (one 32-column unit at element index row * columns + col, a multiple of 32) as 8 vec4,
// dequantised exactly as quant.dequantize does; straight-line code, so its loads (FORMAT's words: f32 8 vec4,
// f16 4, q8 2, q4 1; the block's scale for q8/q4) issue together with the caller's other loads (the driver does
// not overlap the loads of successive loop iterations: docs/architecture.md). Text-equal in every kernel using it.
fn unit_weights(index: u32) -> array<vec4<f32>, 8> {
    if (FORMAT == FORMAT_F32) {
        let at = index / 4u;
        return array(bitcast<vec4<f32>>(w[at]), bitcast<vec4<f32>>(w[at + 1u]), bitcast<vec4<f32>>(w[at + 2u]),
                     bitcast<vec4<f32>>(w[at + 3u]), bitcast<vec4<f32>>(w[at + 4u]), bitcast<vec4<f32>>(w[at + 5u]),
                     bitcast<vec4<f32>>(w[at + 6u]), bitcast<vec4<f32>>(w[at + 7u]));
    } else if (FORMAT == FORMAT_F16) {
        let at = index / 8u;
        let a = w[at];
        let b = w[at + 1u];
        let c = w[at + 2u];
        let d = w[at + 3u];
        return array(vec4<f32>(unpack2x16float(a.x), unpack2x16float(a.y)),
                     vec4<f32>(unpack2x16float(a.z), unpack2x16float(a.w)),
                     vec4<f32>(unpack2x16float(b.x), unpack2x16float(b.y)),
                     vec4<f32>(unpack2x16float(b.z), unpack2x16float(b.w)),
                     vec4<f32>(unpack2x16float(c.x), unpack2x16float(c.y)),
                     vec4<f32>(unpack2x16float(c.z), unpack2x16float(c.w)),
                     vec4<f32>(unpack2x16float(d.x), unpack2x16float(d.y)),
                     vec4<f32>(unpack2x16float(d.z), unpack2x16float(d.w)));
    }
    let block = index / 32u;
    let scale = unpack2x16float(scales[block / 2u])[block % 2u];
    if (FORMAT == FORMAT_Q8) {
        let a = w[index / 16u];
        let b = w[index / 16u + 1u];
        return array(q8_low(a.x) * scale, q8_low(a.y) * scale, q8_low(a.z) * scale, q8_low(a.w) * scale,
                     q8_low(b.x) * scale, q8_low(b.y) * scale, q8_low(b.z) * scale, q8_low(b.w) * scale);
    }
    let words = w[index / 32u];
    return array(q4_low(words.x) * scale, q4_high(words.x) * scale, q4_low(words.y) * scale,
                 q4_high(words.y) * scale, q4_low(words.z) * scale, q4_high(words.z) * scale,
                 q4_low(words.w) * scale, q4_high(words.w) * scale);
}

// The 4 signed bytes of a q8 word, low byte first.
fn q8_low(word: u32) -> vec4<f32> {
    return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(word) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
}

// Nibbles 0-3 and 4-7 of a q4 word, offset 8 taken off.
fn q4_low(word: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(word) >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(0xFu)) - 8.0;
}

fn q4_high(word: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(word) >> vec4<u32>(16u, 20u, 24u, 28u)) & vec4<u32>(0xFu)) - 8.0;
}

fn parity(stream: u32) -> u32 {
    return frame_values[PARITY_INDEX + stream] % 2u;
}

// Float index of window element j of step t (REPLICATE handled).
fn window_index(t: u32, j: u32, x_base: u32, first_frame: bool) -> u32 {
    var flat = t * STRIDE * C_IN + j;
    if (REPLICATE && first_frame && flat < X_HISTORY * C_IN) {
        flat = X_HISTORY * C_IN + flat % C_IN;
    }
    return x_base + flat;
}

// Window elements col .. col + 31 of step t (one unit, col % 32 == 0) as stored, 8 loads issued together.
fn unit_inputs(t: u32, col: u32, x_base: u32, first_frame: bool) -> array<vec4<f32>, 8> {
    if (REPLICATE) {
        // The first frame reads rows < X_HISTORY from row X_HISTORY: a unit may straddle such rows.
        return array(x[window_index(t, col, x_base, first_frame) / 4u],
                     x[window_index(t, col + 4u, x_base, first_frame) / 4u],
                     x[window_index(t, col + 8u, x_base, first_frame) / 4u],
                     x[window_index(t, col + 12u, x_base, first_frame) / 4u],
                     x[window_index(t, col + 16u, x_base, first_frame) / 4u],
                     x[window_index(t, col + 20u, x_base, first_frame) / 4u],
                     x[window_index(t, col + 24u, x_base, first_frame) / 4u],
                     x[window_index(t, col + 28u, x_base, first_frame) / 4u]);
    }
    let at = window_index(t, col, x_base, first_frame) / 4u;
    return array(x[at], x[at + 1u], x[at + 2u], x[at + 3u], x[at + 4u], x[at + 5u], x[at + 6u], x[at + 7u]);
}

// The LayerNorm weight (0 .. 7) and bias (8 .. 15) of columns col .. col + 31 (LayerNorm input mode).
fn unit_norm(col: u32) -> array<vec4<f32>, 16> {
    let p = (NORM_OFFSET + col) / 4u;
    let q = (NORM_OFFSET + K + col) / 4u;
    return array(params[p], params[p + 1u], params[p + 2u], params[p + 3u], params[p + 4u], params[p + 5u],
                 params[p + 6u], params[p + 7u], params[q], params[q + 1u], params[q + 2u], params[q + 3u],
                 params[q + 4u], params[q + 5u], params[q + 6u], params[q + 7u]);
}

// in(win) of a unit from its stored inputs (INPUT_MODE); stats: the step's LayerNorm (mean, 1 / std).
fn unit_transform(v: array<vec4<f32>, 8>, stats: vec2<f32>,
                  norm: array<vec4<f32>, 16>) -> array<vec4<f32>, 8> {
    if (INPUT_MODE == MODE_ELU) {
        return array(elu4(v[0]), elu4(v[1]), elu4(v[2]), elu4(v[3]), elu4(v[4]), elu4(v[5]), elu4(v[6]), elu4(v[7]));
    } else if (INPUT_MODE == MODE_LAYER_NORM) {
        return array((v[0] - stats.x) * stats.y * norm[0] + norm[8], (v[1] - stats.x) * stats.y * norm[1] + norm[9],
                     (v[2] - stats.x) * stats.y * norm[2] + norm[10], (v[3] - stats.x) * stats.y * norm[3] + norm[11],
                     (v[4] - stats.x) * stats.y * norm[4] + norm[12], (v[5] - stats.x) * stats.y * norm[5] + norm[13],
                     (v[6] - stats.x) * stats.y * norm[6] + norm[14], (v[7] - stats.x) * stats.y * norm[7] + norm[15]);
    }
    return v;
}

// sums[s] += chunk c of one row's weights . chunk c of step s's inputs, for the thread's steps.
fn chunk_dots(unit: array<vec4<f32>, 8>, c: u32, in0: array<vec4<f32>, 8>, in1: array<vec4<f32>, 8>,
              in2: array<vec4<f32>, 8>, in3: array<vec4<f32>, 8>, sums: vec4<f32>) -> vec4<f32> {
    let low = unit[2u * c];
    let high = unit[2u * c + 1u];
    var result = sums;
    result.x += dot(low, in0[2u * c]) + dot(high, in0[2u * c + 1u]);
    if (STEPS_PER_THREAD > 1u) {
        result.y += dot(low, in1[2u * c]) + dot(high, in1[2u * c + 1u]);
    }
    if (STEPS_PER_THREAD > 2u) {
        result.z += dot(low, in2[2u * c]) + dot(high, in2[2u * c + 1u]);
    }
    if (STEPS_PER_THREAD > 3u) {
        result.w += dot(low, in3[2u * c]) + dot(high, in3[2u * c + 1u]);
    }
    return result;
}

// One row's sums over a whole unit, its four chunks in column order.
fn unit_dots(unit: array<vec4<f32>, 8>, in0: array<vec4<f32>, 8>, in1: array<vec4<f32>, 8>,
             in2: array<vec4<f32>, 8>, in3: array<vec4<f32>, 8>, sums: vec4<f32>) -> vec4<f32> {
    var result = chunk_dots(unit, 0u, in0, in1, in2, in3, sums);
    result = chunk_dots(unit, 1u, in0, in1, in2, in3, result);
    result = chunk_dots(unit, 2u, in0, in1, in2, in3, result);
    return chunk_dots(unit, 3u, in0, in1, in2, in3, result);
}

// partial_sums[i * WORKGROUP_SIZE] = sum over lanes of partial_sums[i * WORKGROUP_SIZE + lane], for i < count
// (uniform control flow: a tree over the lanes, all count sums at once).
fn workgroup_sums(count: u32, lane: u32) {
    workgroupBarrier();
    var active_count = WORKGROUP_SIZE;
    while (active_count > 1u) {
        let upper_half_start = (active_count + 1u) / 2u;
        if (lane + upper_half_start < active_count) {
            for (var i = 0u; i < count; i++) {
                partial_sums[i * WORKGROUP_SIZE + lane] += partial_sums[i * WORKGROUP_SIZE + lane + upper_half_start];
            }
        }
        workgroupBarrier();
        active_count = upper_half_start;
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let teams_o = WORKGROUP_SIZE / (THREADS_PER_ROW * TEAMS_T);
    let team = lane / THREADS_PER_ROW;
    let member = lane % THREADS_PER_ROW;
    let team_o = team % teams_o;
    let team_t = team / teams_o;
    let first_row = (workgroup.x * teams_o + team_o) * ROWS_PER_THREAD;
    let workgroup_first_step = workgroup.y * TEAMS_T * STEPS_PER_THREAD;
    let first_step = workgroup_first_step + team_t * STEPS_PER_THREAD;

    let stream = workgroup.z;
    let p = parity(stream);
    let x_base = X_OFFSET + stream * X_STREAM + p * X_REGION;
    let first_frame = REPLICATE && frame_values[POSITION_INDEX + stream] == 0u;

    if (INPUT_MODE == MODE_LAYER_NORM) {
        // Two-pass mean and variance of each of the workgroup's windows (biased variance, as torch), all the
        // workgroup's steps reduced together (partial_sums[s * WORKGROUP_SIZE + lane]); a vec4 per load.
        let norm_steps = TEAMS_T * STEPS_PER_THREAD;
        for (var s = 0u; s < norm_steps; s++) {
            let t = min(workgroup_first_step + s, T_OUT - 1u);
            var sum = vec4<f32>(0.0);
            for (var q = lane; q < K / 4u; q += WORKGROUP_SIZE) {
                sum += x[window_index(t, 4u * q, x_base, first_frame) / 4u];
            }
            partial_sums[s * WORKGROUP_SIZE + lane] = (sum.x + sum.y) + (sum.z + sum.w);
        }
        workgroup_sums(norm_steps, lane);
        var means: array<f32, MAX_NORM_STEPS>;
        for (var s = 0u; s < norm_steps; s++) {
            means[s] = partial_sums[s * WORKGROUP_SIZE] / f32(K);
        }
        workgroupBarrier();
        for (var s = 0u; s < norm_steps; s++) {
            let t = min(workgroup_first_step + s, T_OUT - 1u);
            var squares = 0.0;
            for (var q = lane; q < K / 4u; q += WORKGROUP_SIZE) {
                let d = x[window_index(t, 4u * q, x_base, first_frame) / 4u] - vec4<f32>(means[s]);
                squares += dot(d, d);
            }
            partial_sums[s * WORKGROUP_SIZE + lane] = squares;
        }
        workgroup_sums(norm_steps, lane);
        if (lane < norm_steps) {
            let variance = partial_sums[lane * WORKGROUP_SIZE] / f32(K);
            norm_stats[lane] = vec2<f32>(means[lane], inverseSqrt(variance + EPS));
        }
        workgroupBarrier();
    }

    // Steps past the end repeat the last step (uniform work) and are never written; rows past the end repeat the
    // last row. sums_r[s]: row first_row + r, step first_step + s.
    let t0 = min(first_step, T_OUT - 1u);
    let t1 = min(first_step + 1u, T_OUT - 1u);
    let t2 = min(first_step + 2u, T_OUT - 1u);
    let t3 = min(first_step + 3u, T_OUT - 1u);
    let local_step = team_t * STEPS_PER_THREAD;
    var sums0 = vec4<f32>(0.0);
    var sums1 = vec4<f32>(0.0);
    var sums2 = vec4<f32>(0.0);
    var sums3 = vec4<f32>(0.0);
    for (var unit = member; unit < K / 32u; unit += THREADS_PER_ROW) {
        let col = unit * 32u;
        // One round of loads: every row's weights and every step's inputs of the unit, issued before any is used.
        let w0 = unit_weights(min(first_row, C_OUT - 1u) * K + col);
        var w1: array<vec4<f32>, 8>;
        var w2: array<vec4<f32>, 8>;
        var w3: array<vec4<f32>, 8>;
        if (ROWS_PER_THREAD > 1u) {
            w1 = unit_weights(min(first_row + 1u, C_OUT - 1u) * K + col);
        }
        if (ROWS_PER_THREAD > 2u) {
            w2 = unit_weights(min(first_row + 2u, C_OUT - 1u) * K + col);
        }
        if (ROWS_PER_THREAD > 3u) {
            w3 = unit_weights(min(first_row + 3u, C_OUT - 1u) * K + col);
        }
        var in0 = unit_inputs(t0, col, x_base, first_frame);
        var in1: array<vec4<f32>, 8>;
        var in2: array<vec4<f32>, 8>;
        var in3: array<vec4<f32>, 8>;
        if (STEPS_PER_THREAD > 1u) {
            in1 = unit_inputs(t1, col, x_base, first_frame);
        }
        if (STEPS_PER_THREAD > 2u) {
            in2 = unit_inputs(t2, col, x_base, first_frame);
        }
        if (STEPS_PER_THREAD > 3u) {
            in3 = unit_inputs(t3, col, x_base, first_frame);
        }
        var norm: array<vec4<f32>, 16>;
        if (INPUT_MODE == MODE_LAYER_NORM) {
            norm = unit_norm(col);
        }
        if (INPUT_MODE != 0u) {
            in0 = unit_transform(in0, step_stats(local_step), norm);
            if (STEPS_PER_THREAD > 1u) {
                in1 = unit_transform(in1, step_stats(local_step + 1u), norm);
            }
            if (STEPS_PER_THREAD > 2u) {
                in2 = unit_transform(in2, step_stats(local_step + 2u), norm);
            }
            if (STEPS_PER_THREAD > 3u) {
                in3 = unit_transform(in3, step_stats(local_step + 3u), norm);
            }
        }
        sums0 = unit_dots(w0, in0, in1, in2, in3, sums0);
        if (ROWS_PER_THREAD > 1u) {
            sums1 = unit_dots(w1, in0, in1, in2, in3, sums1);
        }
        if (ROWS_PER_THREAD > 2u) {
            sums2 = unit_dots(w2, in0, in1, in2, in3, sums2);
        }
        if (ROWS_PER_THREAD > 3u) {
            sums3 = unit_dots(w3, in0, in1, in2, in3, sums3);
        }
    }

    if (THREADS_PER_ROW > 1u) {
        // Members' sums side by side, [sum index][invocation]; after one barrier, the member that writes an
        // output adds its team's THREADS_PER_ROW partial sums (independent loads, no further barrier).
        for (var i = 0u; i < ROWS_PER_THREAD * STEPS_PER_THREAD; i++) {
            partial_sums[i * WORKGROUP_SIZE + lane] = row_sums(i / STEPS_PER_THREAD, sums0, sums1, sums2,
                                                               sums3)[i % STEPS_PER_THREAD];
        }
        workgroupBarrier();
    }

    let team_lane = team * THREADS_PER_ROW;
    // Each member writes some of its team's outputs.
    for (var i = member; i < ROWS_PER_THREAD * STEPS_PER_THREAD; i += THREADS_PER_ROW) {
        let r = i / STEPS_PER_THREAD;
        let s = i % STEPS_PER_THREAD;
        let o = first_row + r;
        let t = first_step + s;
        if (o < C_OUT && t < T_OUT) {
            var v: f32;
            if (THREADS_PER_ROW > 1u) {
                v = member_total(i * WORKGROUP_SIZE + team_lane);
            } else {
                v = row_sums(r, sums0, sums1, sums2, sums3)[s];
            }
            write_output(o, t, stream, p, v);
        }
    }
}

// The LayerNorm (mean, 1 / std) of the workgroup's step s (LayerNorm input mode; unused otherwise).
fn step_stats(s: u32) -> vec2<f32> {
    if (INPUT_MODE == MODE_LAYER_NORM) {
        return norm_stats[s];
    }
    return vec2<f32>(0.0);
}

fn row_sums(r: u32, sums0: vec4<f32>, sums1: vec4<f32>, sums2: vec4<f32>, sums3: vec4<f32>) -> vec4<f32> {
    return select(select(sums0, sums1, r == 1u), select(sums2, sums3, r == 3u), r >= 2u);
}

// The sum of a team's THREADS_PER_ROW partial sums from partial_sums[at], in member order, four loads a round.
fn member_total(at: u32) -> f32 {
    var v = 0.0;
    if (THREADS_PER_ROW % 4u != 0u) {
        for (var m = 0u; m < THREADS_PER_ROW; m++) {
            v += partial_sums[at + m];
        }
        return v;
    }
    for (var m = 0u; m < THREADS_PER_ROW; m += 4u) {
        let a = partial_sums[at + m];
        let b = partial_sums[at + m + 1u];
        let c = partial_sums[at + m + 2u];
        let d = partial_sums[at + m + 3u];
        v += a;
        v += b;
        v += c;
        v += d;
    }
    return v;
}

// The epilogue of output (o, t) of a stream whose history parity is p: bias, scale, residual, accumulate,
// activation, then the write (and the consumer's history copy), as the header says.
fn write_output(o: u32, t: u32, stream: u32, p: u32, acc: f32) {
    let r_base = R_OFFSET + stream * R_STREAM + p * R_REGION;
    let y_base = Y_OFFSET + stream * Y_STREAM + p * Y_REGION;
    let y_other = Y_OFFSET + stream * Y_STREAM + (1u - p) * Y_REGION;
    var v = acc;
    if (HAS_BIAS) {
        v += param(BIAS_OFFSET + o);
    }
    if (HAS_SCALE) {
        v *= param(SCALE_OFFSET + o);
    }
    if (HAS_RESIDUAL) {
        v += residual[r_base + (R_ROW + t) * C_OUT + o];
    }
    let destination = y_base + (Y_HISTORY + t) * C_OUT + o;
    if (ACCUMULATE) {
        v += y[destination];
    }
    if (OUTPUT_MODE == MODE_ELU) {
        v = elu(v);
    } else if (OUTPUT_MODE == MODE_GELU) {
        v = gelu(v);
    }
    y[destination] = v;
    if (Y_REGION > 0u && Y_HISTORY > 0u && t + Y_HISTORY >= T_OUT) {
        y[y_other + (t + Y_HISTORY - T_OUT) * C_OUT + o] = v;
    }
}

// ---- `tiled` ---------------------------------------------------------------------------------------------------

// Word `word` (an index into the stored matrix's u32 words) of W.
fn weight_word(word: u32) -> u32 {
    return w[word / 4u][word % 4u];
}

// The f16 scales of rows n .. n + 3's block of column j (q8/q4).
fn tile_block_scales(n: vec4<u32>, j: u32) -> vec4<f32> {
    let index = n * (K / SCALE_BLOCK) + j / SCALE_BLOCK;
    return vec4<f32>(unpack2x16float(scales[index.x / 2u])[index.x % 2u],
                     unpack2x16float(scales[index.y / 2u])[index.y % 2u],
                     unpack2x16float(scales[index.z / 2u])[index.z % 2u],
                     unpack2x16float(scales[index.w / 2u])[index.w % 2u]);
}

// Rows 4 g .. + 3 of the tile (rows past the end repeat the last row, never written out).
fn tile_rows(g: u32, first_row: u32) -> vec4<u32> {
    return min(vec4<u32>(first_row + 4u * g) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(C_OUT - 1u));
}

// The stored words of word column c (weights j = c WEIGHTS_PER_WORD ..) of row group g, one per row.
fn tile_weight_words(g: u32, c: u32, j0: u32, first_row: u32) -> vec4<u32> {
    let index = (tile_rows(g, first_row) * K + j0 + c * WEIGHTS_PER_WORD) / WEIGHTS_PER_WORD;
    return vec4<u32>(weight_word(index.x), weight_word(index.y), weight_word(index.z), weight_word(index.w));
}

// Their rows' block scales (q8/q4; unused otherwise).
fn tile_weight_scales(g: u32, c: u32, j0: u32, first_row: u32) -> vec4<f32> {
    if (FORMAT < FORMAT_Q8) {
        return vec4<f32>(0.0);
    }
    return tile_block_scales(tile_rows(g, first_row), j0 + c * WEIGHTS_PER_WORD);
}

// Decodes word column c of row group g (words and scales as loaded above) into the weight tile, one vec4 (4 rows)
// per column. As matmul.wgsl decodes its tiles.
fn store_tile_weights(g: u32, c: u32, words: vec4<u32>, d: vec4<f32>) {
    let j = c * WEIGHTS_PER_WORD;
    let slot = j * ROW_THREADS + g;
    if (FORMAT == FORMAT_Q4) {
        for (var i = 0u; i < 8u; i++) {
            weight_tile[slot + i * ROW_THREADS] = d * (vec4<f32>((words >> vec4<u32>(4u * i)) & vec4<u32>(0xFu)) - 8.0);
        }
    } else if (FORMAT == FORMAT_Q8) {
        for (var i = 0u; i < 4u; i++) {
            // Each byte's sign: shift it to the top, then an arithmetic shift back.
            let q = bitcast<vec4<i32>>(words << vec4<u32>(24u - 8u * i)) >> vec4<u32>(24u);
            weight_tile[slot + i * ROW_THREADS] = d * vec4<f32>(q);
        }
    } else if (FORMAT == FORMAT_F16) {
        let a = unpack2x16float(words.x);
        let b = unpack2x16float(words.y);
        let e = unpack2x16float(words.z);
        let f = unpack2x16float(words.w);
        weight_tile[slot] = vec4<f32>(a.x, b.x, e.x, f.x);
        weight_tile[slot + ROW_THREADS] = vec4<f32>(a.y, b.y, e.y, f.y);
    } else {
        weight_tile[slot] = bitcast<vec4<f32>>(words);
    }
}

// One invocation's quarter of a column's window (K / 16 vec4s from x[begin]) summed in order: its values, or with
// `centred` their squared distances to `mean`. Eight loads go out before their sums (a loop's loads would each
// wait for the one before: docs/architecture.md), then a tail for K / 16 % 8.
fn quarter_sum(begin: u32, mean: f32, centred: bool) -> vec4<f32> {
    var total = vec4<f32>(0.0);
    var i = 0u;
    for (; i + 8u <= K / 16u; i += 8u) {
        let v0 = x[begin + i];
        let v1 = x[begin + i + 1u];
        let v2 = x[begin + i + 2u];
        let v3 = x[begin + i + 3u];
        let v4 = x[begin + i + 4u];
        let v5 = x[begin + i + 5u];
        let v6 = x[begin + i + 6u];
        let v7 = x[begin + i + 7u];
        total += norm_term(v0, mean, centred);
        total += norm_term(v1, mean, centred);
        total += norm_term(v2, mean, centred);
        total += norm_term(v3, mean, centred);
        total += norm_term(v4, mean, centred);
        total += norm_term(v5, mean, centred);
        total += norm_term(v6, mean, centred);
        total += norm_term(v7, mean, centred);
    }
    for (; i < K / 16u; i++) {
        total += norm_term(x[begin + i], mean, centred);
    }
    return total;
}

fn norm_term(v: vec4<f32>, mean: f32, centred: bool) -> vec4<f32> {
    if (!centred) {
        return v;
    }
    let d = v - vec4<f32>(mean);
    return d * d;
}

// The LayerNorm statistics of the tile's columns, two passes as in `main` (biased variance): 4 invocations per column
// each sum a quarter of its window; the quarters meet in weight_tile, free until the first slice loads. Each
// invocation that loads inputs (one column group g = lane / (TILE_K / 4)) then keeps its 4 columns' statistics.
fn tile_norm_stats(lane: u32, first_col: u32) {
    let column = lane / 4u;
    let n = min(first_col + column, STREAMS * T_OUT - 1u);
    let stream = n / T_OUT;
    let x_base = X_OFFSET + stream * X_STREAM + parity(stream) * X_REGION;
    let begin = window_index(n % T_OUT, (lane % 4u) * (K / 4u), x_base, false) / 4u;
    weight_tile[lane] = quarter_sum(begin, 0.0, false);
    workgroupBarrier();
    let sums = weight_tile[4u * column] + weight_tile[4u * column + 1u] + weight_tile[4u * column + 2u]
        + weight_tile[4u * column + 3u];
    let mean = (sums.x + sums.y + sums.z + sums.w) / f32(K);
    workgroupBarrier();
    weight_tile[lane] = quarter_sum(begin, mean, true);
    workgroupBarrier();
    let total = weight_tile[4u * column] + weight_tile[4u * column + 1u] + weight_tile[4u * column + 2u]
        + weight_tile[4u * column + 3u];
    let inv_std = inverseSqrt((total.x + total.y + total.z + total.w) / f32(K) + EPS);
    workgroupBarrier();
    if (lane % 4u == 0u) {
        weight_tile[column] = vec4<f32>(mean, inv_std, 0.0, 0.0);
    }
    workgroupBarrier();
    let g = min(lane / (TILE_K / 4u), COL_THREADS - 1u);
    let s0 = weight_tile[4u * g];
    let s1 = weight_tile[4u * g + 1u];
    let s2 = weight_tile[4u * g + 2u];
    let s3 = weight_tile[4u * g + 3u];
    tile_means = vec4<f32>(s0.x, s1.x, s2.x, s3.x);
    tile_inv_stds = vec4<f32>(s0.y, s1.y, s2.y, s3.y);
    workgroupBarrier();
}

// The window of column n (stream n / T_OUT, step n % T_OUT) at elements j .. j + 3 (j % 4 == 0: one row), raw.
fn column_window(n: u32, j: u32) -> vec4<f32> {
    let stream = n / T_OUT;
    let x_base = X_OFFSET + stream * X_STREAM + parity(stream) * X_REGION;
    let first_frame = REPLICATE && frame_values[POSITION_INDEX + stream] == 0u;
    return x[window_index(n % T_OUT, j, x_base, first_frame) / 4u];
}

// Window elements 4 c .. 4 c + 3 of the slice at j0 of column group g (columns 4 g .. + 3 of the tile: columns
// past the end repeat the last column, never written out), raw: one column per matrix column; with LayerNorm input,
// also those elements' LayerNorm weight and bias, loaded with them so that the stores wait for no other load.
struct InputLoads {
    windows: mat4x4<f32>,
    norm_weight: vec4<f32>,
    norm_bias: vec4<f32>,
}

fn tile_inputs(g: u32, c: u32, j0: u32, first_col: u32) -> InputLoads {
    let n = min(vec4<u32>(first_col + 4u * g) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(STREAMS * T_OUT - 1u));
    let j = j0 + 4u * c;
    var loads = InputLoads(mat4x4<f32>(column_window(n.x, j), column_window(n.y, j), column_window(n.z, j),
                                       column_window(n.w, j)), vec4<f32>(0.0), vec4<f32>(0.0));
    if (INPUT_MODE == MODE_LAYER_NORM) {
        loads.norm_weight = params[(NORM_OFFSET + j) / 4u];
        loads.norm_bias = params[(NORM_OFFSET + K + j) / 4u];
    }
    return loads;
}

// in(win) of those inputs (as loaded above) into the input tile, one vec4 (4 columns) per element.
fn store_tile_inputs(g: u32, c: u32, loads: InputLoads) {
    var a = loads.windows[0];
    var b = loads.windows[1];
    var e = loads.windows[2];
    var f = loads.windows[3];
    if (INPUT_MODE == MODE_ELU) {
        a = elu4(a);
        b = elu4(b);
        e = elu4(e);
        f = elu4(f);
    }
    if (INPUT_MODE == MODE_LAYER_NORM) {     // tile_means / tile_inv_stds hold columns 4 g .. + 3
        let weight = loads.norm_weight;
        let bias = loads.norm_bias;
        a = (a - tile_means.x) * tile_inv_stds.x * weight + bias;
        b = (b - tile_means.y) * tile_inv_stds.y * weight + bias;
        e = (e - tile_means.z) * tile_inv_stds.z * weight + bias;
        f = (f - tile_means.w) * tile_inv_stds.w * weight + bias;
    }
    let slot = 4u * c * COL_THREADS + g;
    input_tile[slot] = vec4<f32>(a.x, b.x, e.x, f.x);
    input_tile[slot + COL_THREADS] = vec4<f32>(a.y, b.y, e.y, f.y);
    input_tile[slot + 2u * COL_THREADS] = vec4<f32>(a.z, b.z, e.z, f.z);
    input_tile[slot + 3u * COL_THREADS] = vec4<f32>(a.w, b.w, e.w, f.w);
}

// A 4 x 4 register block: s_i holds the first operand's 4 lanes (rows, entries) against lane i of the second
// (streams, columns).
struct Block4x4 {
    s0: vec4<f32>,
    s1: vec4<f32>,
    s2: vec4<f32>,
    s3: vec4<f32>,
}

// The block after four steps k = 0, 1, 2, 3, in order: s_i = fma(a_k, b_k[i], s_i). The four steps' operands come
// as arguments, loaded before any product: with a workgroup or two per SM the loads' latency would otherwise sit
// between every two steps. conv1d.wgsl, matmul.wgsl and rvq.wgsl share it (text-equal: test_kernel_sources.py).
fn four_steps(block: Block4x4, a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>, b0: vec4<f32>,
              b1: vec4<f32>, b2: vec4<f32>, b3: vec4<f32>) -> Block4x4 {
    var s0 = block.s0;
    var s1 = block.s1;
    var s2 = block.s2;
    var s3 = block.s3;
    s0 = fma(a0, vec4<f32>(b0.x), s0);
    s1 = fma(a0, vec4<f32>(b0.y), s1);
    s2 = fma(a0, vec4<f32>(b0.z), s2);
    s3 = fma(a0, vec4<f32>(b0.w), s3);
    s0 = fma(a1, vec4<f32>(b1.x), s0);
    s1 = fma(a1, vec4<f32>(b1.y), s1);
    s2 = fma(a1, vec4<f32>(b1.z), s2);
    s3 = fma(a1, vec4<f32>(b1.w), s3);
    s0 = fma(a2, vec4<f32>(b2.x), s0);
    s1 = fma(a2, vec4<f32>(b2.y), s1);
    s2 = fma(a2, vec4<f32>(b2.z), s2);
    s3 = fma(a2, vec4<f32>(b2.w), s3);
    s0 = fma(a3, vec4<f32>(b3.x), s0);
    s1 = fma(a3, vec4<f32>(b3.y), s1);
    s2 = fma(a3, vec4<f32>(b3.z), s2);
    s3 = fma(a3, vec4<f32>(b3.w), s3);
    return Block4x4(s0, s1, s2, s3);
}

// An invocation's sums (rows 4 row_group .. + 3 of columns 4 col_group .. + 3) after one slice's products, in order
// j = 0, 1, ..
fn slice_products(sums: Block4x4, row_group: u32, col_group: u32) -> Block4x4 {
    var block = sums;
    for (var j = 0u; j < TILE_K; j += 4u) {
        let w0 = weight_tile[j * ROW_THREADS + row_group];
        let w1 = weight_tile[(j + 1u) * ROW_THREADS + row_group];
        let w2 = weight_tile[(j + 2u) * ROW_THREADS + row_group];
        let w3 = weight_tile[(j + 3u) * ROW_THREADS + row_group];
        let x0 = input_tile[j * COL_THREADS + col_group];
        let x1 = input_tile[(j + 1u) * COL_THREADS + col_group];
        let x2 = input_tile[(j + 2u) * COL_THREADS + col_group];
        let x3 = input_tile[(j + 3u) * COL_THREADS + col_group];
        block = four_steps(block, w0, w1, w2, w3, x0, x1, x2, x3);
    }
    return block;
}

// Outputs of 4 rows of column n (with K_SPLITS > 1: split `split`'s sums, into partials).
fn write_rows(n: u32, first_row: u32, value: vec4<f32>, split: u32) {
    if (n >= STREAMS * T_OUT) {
        return;
    }
    if (K_SPLITS > 1u) {
        for (var r = 0u; r < 4u; r++) {
            if (first_row + r < C_OUT) {
                partials[(split * STREAMS * T_OUT + n) * C_OUT + first_row + r] = value[r];
            }
        }
        return;
    }
    let stream = n / T_OUT;
    let p = parity(stream);
    for (var r = 0u; r < 4u; r++) {
        if (first_row + r < C_OUT) {
            write_output(first_row + r, n % T_OUT, stream, p, value[r]);
        }
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn tiled(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let row_group = lane % ROW_THREADS;
    let col_group = lane / ROW_THREADS;
    let first_row = workgroup.x * TILE_ROWS;
    let first_col = workgroup.y * TILE_COLS;
    let split = workgroup.z;
    let first_j = split * (K / K_SPLITS);
    let end_j = first_j + K / K_SPLITS;
    let weight_loads = ROW_THREADS * (TILE_K / WEIGHTS_PER_WORD);     // (row group, word column) pairs per slice
    let input_loads = COL_THREADS * (TILE_K / 4u);                     // (column group, 4 elements) pairs
    var sums = Block4x4(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));     // rows x columns
    if (INPUT_MODE == MODE_LAYER_NORM) {
        tile_norm_stats(lane, first_col);
    }
    // Word columns fastest: neighbouring invocations read neighbouring words of a row.
    let wg = lane / (TILE_K / WEIGHTS_PER_WORD);
    let wc = lane % (TILE_K / WEIGHTS_PER_WORD);
    let xg = lane / (TILE_K / 4u);
    let xc = lane % (TILE_K / 4u);
    // With at most one load of each tile per invocation (the default tile in q4, q8 and f16), the next slice's loads
    // are issued before the current slice is summed, and land in the tiles after it: the chain of K / TILE_K slices
    // no longer waits for memory at each step. The same values, stored and summed in the same order.
    let prefetch = weight_loads <= WORKGROUP_SIZE && input_loads <= WORKGROUP_SIZE;
    var words = vec4<u32>(0u);
    var block_scales = vec4<f32>(0.0);
    var inputs = InputLoads(mat4x4<f32>(), vec4<f32>(0.0), vec4<f32>(0.0));
    if (prefetch && lane < weight_loads) {
        words = tile_weight_words(wg, wc, first_j, first_row);
        block_scales = tile_weight_scales(wg, wc, first_j, first_row);
    }
    if (prefetch && lane < input_loads) {
        inputs = tile_inputs(xg, xc, first_j, first_col);
    }
    for (var j0 = first_j; j0 < end_j; j0 += TILE_K) {
        if (prefetch) {
            if (lane < weight_loads) {
                store_tile_weights(wg, wc, words, block_scales);
            }
            if (lane < input_loads) {
                store_tile_inputs(xg, xc, inputs);
            }
        } else {
            for (var i = lane; i < weight_loads; i += WORKGROUP_SIZE) {
                let g = i / (TILE_K / WEIGHTS_PER_WORD);
                let c = i % (TILE_K / WEIGHTS_PER_WORD);
                let loaded = tile_weight_words(g, c, j0, first_row);
                store_tile_weights(g, c, loaded, tile_weight_scales(g, c, j0, first_row));
            }
            for (var i = lane; i < input_loads; i += WORKGROUP_SIZE) {
                let g = i / (TILE_K / 4u);
                let c = i % (TILE_K / 4u);
                store_tile_inputs(g, c, tile_inputs(g, c, j0, first_col));
            }
        }
        workgroupBarrier();
        let next = j0 + TILE_K;
        if (prefetch && next < end_j && lane < weight_loads) {
            words = tile_weight_words(wg, wc, next, first_row);
            block_scales = tile_weight_scales(wg, wc, next, first_row);
        }
        if (prefetch && next < end_j && lane < input_loads) {
            inputs = tile_inputs(xg, xc, next, first_col);
        }
        sums = slice_products(sums, row_group, col_group);
        workgroupBarrier();
    }
    let rows = first_row + 4u * row_group;
    let columns = first_col + 4u * col_group;
    write_rows(columns, rows, sums.s0, split);
    write_rows(columns + 1u, rows, sums.s1, split);
    write_rows(columns + 2u, rows, sums.s2, split);
    write_rows(columns + 3u, rows, sums.s3, split);
}

// K_SPLITS > 1: output (o, column n) is the sum of the splits' partial sums in order, then the epilogue.
@compute @workgroup_size(COMBINE_WORKGROUP)
fn tiled_combine(@builtin(global_invocation_id) id: vec3<u32>) {
    let o = id.x;
    let n = id.y;
    if (o >= C_OUT || n >= STREAMS * T_OUT) {
        return;
    }
    var acc = 0.0;
    for (var split = 0u; split < K_SPLITS; split++) {
        acc += partials[(split * STREAMS * T_OUT + n) * C_OUT + o];
    }
    let stream = n / T_OUT;
    write_output(o, n % T_OUT, stream, parity(stream), acc);
}
