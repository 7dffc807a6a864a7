requires packed_4x8_integer_dot_product;

// The int8 path of matvec.wgsl for q8/q4 weights: same computation, bindings, constants and dispatch, with each
// 32-input block of in(x) quantised to int8 (one f32 scale per block, round to nearest) and the weights' integers
// multiplied by dot4I8Packed (4 multiply-adds per instruction where the GPU has them, e.g. DP4A on NVIDIA):
//   y[s, n] = (ACCUMULATE ? y : 0) + norm_s * sum_blocks d[n, b] * (amax_b / 127) * sum_{k in b} q_w[n, k] * q_x[k]
//   q_x[k] = round(in'(x)[s, k] * 127 / amax_b),  amax_b = max_{k in b} |in'(x)[s, k]|
// where in'(x) is in(x) before RMSNorm's per-stream factor norm_s = inverseSqrt(mean(x^2) + EPS) (applied at the
// end, as matvec.wgsl does; norm_s = 1 in the other modes). The extra error is the inputs' rounding: at most
// amax_b / 254 per input, so |y - y_matvec| <= norm_s * sum_b (amax_b / 254) sum_{k in b} |W[n, k]| (plus float
// rounding); tests/kernels/test_matvec.py checks that bound. Needs the WGSL language feature
// packed_4x8_integer_dot_product (hosts choose this file only where the device has it).
//
//   W: [ROWS, COLUMNS] in the q8 or q4 layout of kyutai_stt/quant.py (see matvec.wgsl), COLUMNS % 64 == 0.
//   x, y, alpha, INPUT_MODE, ACCUMULATE, BATCH, strides, offsets: as matvec.wgsl.
// Bindings (group 0): 0 = qs (read, as vec4<u32>), 1 = d (read, as u32), 2 = x, 3 = y, 4 = alpha: as matvec.wgsl.
// Dispatch and constraints: as matvec.wgsl (UNIT = 32).
//
// Structure: matvec.wgsl's, with one more step per unit and stream: the member quantises the UNIT inputs it loaded
// (8 packed words, the scale, the sum of the integers) once and uses them for its ROWS_PER_THREAD rows. A q4 word
// holds nibbles n0..n7; (word & 0x0F0F0F0F) holds n0, n2, n4, n6 as bytes and ((word >> 4) & 0x0F0F0F0F) n1, n3,
// n5, n7, so the inputs are packed in that order and sum (n - 8) x = dot(n, x) - 8 sum(x).

// Weight layout: 2 q8, 3 q4 (as matvec.wgsl; f32 and f16 have no int8 path).
override FORMAT: u32;
// Problem shape: fixed per layer, so pipeline constants.
override ROWS: u32;
override COLUMNS: u32;
// Streams decoded together: each weight unit is then read from memory once for all of them.
override BATCH: u32 = 1u;
// Elements between consecutive streams' inputs (SwiGLU inputs are [gate | up], twice as wide).
override X_STRIDE: u32 = select(COLUMNS, 2u * COLUMNS, INPUT_MODE == 2u);
// Output placement: several heads (text logits, VAD) can write disjoint ranges of one buffer.
override Y_STRIDE: u32 = ROWS;
override Y_OFFSET: u32 = 0u;
// true: y += W in(x) (the residual add, fused); false: y = W in(x).
override ACCUMULATE: bool = false;
// 0 = plain x; 1 = RMSNorm(x) with alpha (saves the norm's dispatch); 2 = SwiGLU of [gate | up] (likewise).
override INPUT_MODE: u32 = 0u;
// RMSNorm epsilon of the LM (INPUT_MODE 1 only).
override EPS: f32 = 1e-8;
// Tuning (benchmarks/kernels.py sweeps these). 256 = the portable maximum of invocations per workgroup.
override WORKGROUP_SIZE: u32 = 256u;
// Members per team: 64 members x 16-byte loads coalesce 1 KiB per row and pass (a whole 2048-wide Q4 row).
override THREADS_PER_ROW: u32 = 64u;
// Rows per team: independent loads in flight per member, and reuse of the inputs it holds in registers.
override ROWS_PER_THREAD: u32 = 4u;

// Accumulators per member (a private array needs a constant size): 16 = 16 KiB of workgroup memory at 256
// invocations, the portable limit.
const MAX_SUMS = 16u;
const MODE_RMS_NORM = 1u;
const MODE_SWIGLU = 2u;

// ---- formats ------------------------------------------------------------------------------------------------
const FORMAT_F32 = 0u;
const FORMAT_F16 = 1u;
const FORMAT_Q8 = 2u;
const FORMAT_Q4 = 3u;
// Weights per unit (one 16-byte load per row and unit, two for q8), from FORMAT: f32 4, f16 8, q8/q4 32 (one
// scale block). UNIT is derived, not for the host to set; private arrays are sized by MAX_UNIT (an override cannot
// size them).
const MAX_UNIT = 32u;
override UNIT: u32 = select(select(4u, 8u, FORMAT == FORMAT_F16), MAX_UNIT, FORMAT >= FORMAT_Q8);
const NIBBLES = 0x0F0F0F0Fu;

@group(0) @binding(0) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read> scales: array<u32>;

// One unit's inputs as int8: words[i] packs 4 of them (q4: word j's even inputs in words[2j], odd in words[2j+1];
// q8: inputs 4i..4i+3); inputs ~= scale * integers; sum = the sum of the 32 integers.
struct QuantizedUnit {
    words: array<u32, 8>,
    scale: f32,
    sum: i32,
}

fn quantize_unit(inputs: array<vec4<f32>, MAX_UNIT / 4u>) -> QuantizedUnit {
    let m = max(max(max(abs(inputs[0]), abs(inputs[1])), max(abs(inputs[2]), abs(inputs[3]))),
                max(max(abs(inputs[4]), abs(inputs[5])), max(abs(inputs[6]), abs(inputs[7]))));
    let amax = max(max(m.x, m.y), max(m.z, m.w));
    let inverse = select(0.0, 127.0 / amax, amax > 0.0);
    var unit: QuantizedUnit;
    unit.scale = amax / 127.0;
    var total = vec4<i32>(0);
    for (var j = 0u; j < 4u; j++) {
        let low = vec4<i32>(round(inputs[2u * j] * inverse));
        let high = vec4<i32>(round(inputs[2u * j + 1u] * inverse));
        total += low + high;
        if (FORMAT == FORMAT_Q4) {
            unit.words[2u * j] = pack4xI8(vec4<i32>(low.x, low.z, high.x, high.z));
            unit.words[2u * j + 1u] = pack4xI8(vec4<i32>(low.y, low.w, high.y, high.w));
        } else {
            unit.words[2u * j] = pack4xI8(low);
            unit.words[2u * j + 1u] = pack4xI8(high);
        }
    }
    unit.sum = total.x + total.y + total.z + total.w;
    return unit;
}

// sum_i n_i * x_i over the 8 nibbles n of a q4 word, x packed as its even and odd inputs (the q4 offset not removed).
fn nibbles_dot(word: u32, even: u32, odd: u32) -> i32 {
    return dot4I8Packed(word & NIBBLES, even) + dot4I8Packed((word >> 4u) & NIBBLES, odd);
}

// sum_{j < UNIT} W[row, UNIT * unit + j] * inputs[j], inputs as quantised.
fn unit_dot_int8(row: u32, unit: u32, q: QuantizedUnit) -> f32 {
    let index = row * (COLUMNS / UNIT) + unit;
    let scale = unpack2x16float(scales[index / 2u])[index % 2u] * q.scale;
    if (FORMAT == FORMAT_Q8) {
        let low = w[2u * index];
        let high = w[2u * index + 1u];
        return scale * f32(dot4I8Packed(low.x, q.words[0]) + dot4I8Packed(low.y, q.words[1])
                           + dot4I8Packed(low.z, q.words[2]) + dot4I8Packed(low.w, q.words[3])
                           + dot4I8Packed(high.x, q.words[4]) + dot4I8Packed(high.y, q.words[5])
                           + dot4I8Packed(high.z, q.words[6]) + dot4I8Packed(high.w, q.words[7]));
    }
    let words = w[index];
    return scale * f32(nibbles_dot(words.x, q.words[0], q.words[1]) + nibbles_dot(words.y, q.words[2], q.words[3])
                       + nibbles_dot(words.z, q.words[4], q.words[5]) + nibbles_dot(words.w, q.words[6], q.words[7])
                       - 8 * q.sum);
}

// The UNIT inputs of unit u of stream s (see input_vector); the rest of the array stays zero. Constant indices
// only: the inputs then stay in registers (no dynamically indexed private array, which some compilers leave in
// memory), and the branches fold away with FORMAT.
fn load_inputs(s: u32, u: u32, ss: ptr<function, f32>) -> array<vec4<f32>, MAX_UNIT / 4u> {
    var inputs: array<vec4<f32>, MAX_UNIT / 4u>;
    inputs[0] = input_vector(s, u, 0u, ss);
    if (UNIT >= 8u) {
        inputs[1] = input_vector(s, u, 1u, ss);
    }
    if (UNIT >= 32u) {
        inputs[2] = input_vector(s, u, 2u, ss);
        inputs[3] = input_vector(s, u, 3u, ss);
        inputs[4] = input_vector(s, u, 4u, ss);
        inputs[5] = input_vector(s, u, 5u, ss);
        inputs[6] = input_vector(s, u, 6u, ss);
        inputs[7] = input_vector(s, u, 7u, ss);
    }
    return inputs;
}
// ---- end of formats -----------------------------------------------------------------------------------------

@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> alpha: array<vec4<f32>>;

// Every member's sums, laid out [sum index][invocation] so that each reduction step reads consecutive words.
var<workgroup> partial_sums: array<f32, WORKGROUP_SIZE * (ROWS_PER_THREAD + select(0u, 1u, INPUT_MODE == 1u)) * BATCH>;

fn silu(v: vec4<f32>) -> vec4<f32> {
    // v * sigmoid(v), taking exp of non-positive arguments only (no overflow for large |v|).
    let e = exp(-abs(v));
    return v * select(e / (1.0 + e), 1.0 / (1.0 + e), v >= vec4<f32>(0.0));
}

// Inputs 4i .. 4i+3 of unit `unit` of stream `stream`, transformed by INPUT_MODE; *sum_of_squares accumulates the
// squares of the raw inputs (RMS_NORM mode). load_inputs() calls it with constant i.
fn input_vector(stream: u32, unit: u32, i: u32, sum_of_squares: ptr<function, f32>) -> vec4<f32> {
    let index = (stream * X_STRIDE + unit * UNIT) / 4u + i;
    let value = x[index];
    if (INPUT_MODE == MODE_RMS_NORM) {
        *sum_of_squares += dot(value, value);
        return value * alpha[unit * (UNIT / 4u) + i];
    } else if (INPUT_MODE == MODE_SWIGLU) {
        return silu(value) * x[index + COLUMNS / 4u];
    }
    return value;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let teams = WORKGROUP_SIZE / THREADS_PER_ROW;
    let team = lane / THREADS_PER_ROW;
    let member = lane % THREADS_PER_ROW;
    let first_row = (workgroup.x * teams + team) * ROWS_PER_THREAD;
    // sums[s * ROWS_PER_THREAD + r]: dot products; then, in RMS_NORM mode, sums[dot_count + s]: sums of squares.
    let dot_count = ROWS_PER_THREAD * BATCH;
    let sum_count = select(dot_count, dot_count + BATCH, INPUT_MODE == MODE_RMS_NORM);

    var sums: array<f32, MAX_SUMS>;
    for (var unit = member; unit < COLUMNS / UNIT; unit += THREADS_PER_ROW) {
        for (var stream = 0u; stream < BATCH; stream++) {
            var sum_of_squares = 0.0;
            let quantized = quantize_unit(load_inputs(stream, unit, &sum_of_squares));
            if (INPUT_MODE == MODE_RMS_NORM) {
                sums[dot_count + stream] += sum_of_squares;
            }
            for (var r = 0u; r < ROWS_PER_THREAD; r++) {
                // Rows past the end repeat the last row (uniform work, no branch) and are never written.
                let row = min(first_row + r, ROWS - 1u);
                sums[stream * ROWS_PER_THREAD + r] += unit_dot_int8(row, unit, quantized);
            }
        }
    }

    for (var i = 0u; i < sum_count; i++) {
        partial_sums[i * WORKGROUP_SIZE + lane] = sums[i];
    }
    workgroupBarrier();

    // Tree reduction over the team, halving the active count (rounding up): any THREADS_PER_ROW works.
    var active_count = THREADS_PER_ROW;
    while (active_count > 1u) {
        let upper_half_start = (active_count + 1u) / 2u;
        if (member + upper_half_start < active_count) {
            for (var i = 0u; i < sum_count; i++) {
                let index = i * WORKGROUP_SIZE + lane;
                partial_sums[index] += partial_sums[index + upper_half_start];
            }
        }
        workgroupBarrier();
        active_count = upper_half_start;
    }

    let team_lane = team * THREADS_PER_ROW;  // where the team's totals ended up
    for (var i = member; i < dot_count; i += THREADS_PER_ROW) {
        let stream = i / ROWS_PER_THREAD;
        let row = first_row + i % ROWS_PER_THREAD;
        if (row < ROWS) {
            var value = partial_sums[i * WORKGROUP_SIZE + team_lane];
            if (INPUT_MODE == MODE_RMS_NORM) {
                let mean_square = partial_sums[(dot_count + stream) * WORKGROUP_SIZE + team_lane] / f32(COLUMNS);
                value *= inverseSqrt(mean_square + EPS);
            }
            let index = stream * Y_STRIDE + Y_OFFSET + row;
            if (ACCUMULATE) {
                value += y[index];
            }
            y[index] = value;
        }
    }
}
