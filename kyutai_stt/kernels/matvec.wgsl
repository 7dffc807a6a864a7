// Matrix-vector product with weights in any package format, dequantised on the fly; optional fused input
// transform and residual add.
//
//   W: [ROWS, COLUMNS] in the package layout of FORMAT (0 f32, 1 f16, 2 q8, 3 q4: kyutai_stt/quant.py):
//        f32: w  f32[ROWS, COLUMNS]                                         W[n, k] = w[n, k]
//        f16: w  f16[ROWS, COLUMNS], two per u32 (even column in the low half)
//        q8:  qs u32[ROWS, COLUMNS/4]  byte i (bits 8i..8i+7) of word j = q[n, 4j+i] as int8 in -127..127
//             W[n, k] = d[n, k/32] * q[n, k]
//        q4:  qs u32[ROWS, COLUMNS/8]  nibble i (bits 4i..4i+3) of word j = q[n, 8j+i] in 0..15
//             W[n, k] = d[n, k/32] * (q[n, k] - 8)
//        q8/q4: d f16[ROWS, COLUMNS/32], one scale per block of 32 weights, two per u32 (even block in the low half)
//   x: [BATCH, X_STRIDE] f32, one row per stream; in(x)[s, :COLUMNS] by INPUT_MODE:
//        0 = PLAIN:    x[s, k]
//        1 = RMS_NORM: x[s, k] * alpha[k] * inverseSqrt(mean_k(x[s, :COLUMNS]^2) + EPS)   (the LM's pre-norms)
//        2 = SWIGLU:   silu(x[s, k]) * x[s, COLUMNS + k]   (x = the FFN's [gate | up], 2*COLUMNS wide)
//   y[s * Y_STRIDE + Y_OFFSET + n] = (ACCUMULATE ? y[...] : 0) + sum_k W[n, k] * in(x)[s, k]
//        for s < BATCH, n < ROWS   (ACCUMULATE fuses the residual add: x += W h)
//
// Bindings (group 0): 0 = w or qs (read, as vec4<u32>: one unit = UNIT weights), 1 = d (read, as u32: q8/q4; bind
//   any buffer, e.g. the weights again, for f32/f16), 2 = x (read, as vec4<f32>), 3 = y (read_write), 4 = alpha
//   (read, [COLUMNS] f32: read only in RMS_NORM mode but always bound; bind any f32 buffer, e.g. x, otherwise).
// Dispatch: (ceil(ROWS / rows_per_workgroup), 1, 1) workgroups of WORKGROUP_SIZE invocations, where
//   rows_per_workgroup = (WORKGROUP_SIZE / THREADS_PER_ROW) * ROWS_PER_THREAD.
// Constraints (the host checks them; WGSL cannot): COLUMNS % UNIT == 0 (q8/q4: COLUMNS % 64 == 0),
//   X_STRIDE % 4 == 0, WORKGROUP_SIZE % THREADS_PER_ROW == 0,
//   ROWS_PER_THREAD * BATCH (+ BATCH in RMS_NORM mode) <= MAX_SUMS.
//
// Structure, for memory bandwidth: the workgroup is split into teams of THREADS_PER_ROW invocations; a team owns
// ROWS_PER_THREAD consecutive rows and its members stride over the row's units (UNIT weights each). Per unit a
// member loads and transforms the UNIT inputs once into registers, then reads that unit of each of its rows with
// aligned 16-byte loads (neighbouring members read neighbouring units: coalesced), so ROWS_PER_THREAD independent
// loads are in flight per member. The members' partial sums are reduced over the team in workgroup memory.
// FORMAT is a pipeline constant: each pipeline keeps one format's branch, the compiler drops the others.
// matvec_subgroup.wgsl shares everything above `main` except the reduction's workgroup memory (the functions and
// constants of the same name are text-equal: tests/kernels/test_kernel_sources.py).

// Weight layout: 0 f32, 1 f16, 2 q8, 3 q4 (as conv1d.wgsl and rvq.wgsl).
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
// 2^23 as f32 bits: OR-ing a small integer u into the mantissa gives the float 2^23 + u exactly, a cheaper
// integer-to-float conversion than the conversion instruction (quarter rate or slower on many GPUs).
const FLOAT_MAGIC = 0x4B000000u;
// q4: subtracting 2^23 + 8 then leaves q - 8 exactly (the q4 offset).
const Q4_MAGIC_PLUS_OFFSET = 8388616.0;
// q8: flipping each byte's sign bit maps the int8 q to the unsigned q + 128; subtracting 2^23 + 128 leaves q.
const Q8_SIGN_BITS = 0x80808080u;
const Q8_MAGIC_PLUS_OFFSET = 8388736.0;

@group(0) @binding(0) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read> scales: array<u32>;

// sum_{j < 8} W[row, 8 word + j] * inputs[j] for the 8 nibbles of one q4 word (low: j < 4, high: j >= 4), unscaled.
fn q4_word_dot(word: u32, low: vec4<f32>, high: vec4<f32>) -> f32 {
    let nibbles = vec4<u32>(word);
    let mask = vec4<u32>(0xFu);
    let magic = vec4<u32>(FLOAT_MAGIC);
    let low_q = bitcast<vec4<f32>>(((nibbles >> vec4<u32>(0u, 4u, 8u, 12u)) & mask) | magic) - Q4_MAGIC_PLUS_OFFSET;
    let high_q = bitcast<vec4<f32>>(((nibbles >> vec4<u32>(16u, 20u, 24u, 28u)) & mask) | magic) - Q4_MAGIC_PLUS_OFFSET;
    return dot(low_q, low) + dot(high_q, high);
}

// sum_{j < 4} W[row, 4 word + j] * inputs[j] for the 4 bytes of one q8 word, unscaled.
fn q8_word_dot(word: u32, inputs: vec4<f32>) -> f32 {
    let bytes = vec4<u32>(word ^ Q8_SIGN_BITS);
    let q = bitcast<vec4<f32>>(((bytes >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(0xFFu)) | vec4<u32>(FLOAT_MAGIC));
    return dot(q - Q8_MAGIC_PLUS_OFFSET, inputs);
}

// sum_{j < UNIT} W[row, UNIT * unit + j] * inputs[j] (inputs[UNIT / 4 ..] unused).
fn unit_dot(row: u32, unit: u32, inputs: array<vec4<f32>, MAX_UNIT / 4u>) -> f32 {
    let index = row * (COLUMNS / UNIT) + unit;
    if (FORMAT == FORMAT_F32) {
        return dot(bitcast<vec4<f32>>(w[index]), inputs[0]);
    }
    if (FORMAT == FORMAT_F16) {
        let words = w[index];
        let low = vec4<f32>(unpack2x16float(words.x), unpack2x16float(words.y));
        let high = vec4<f32>(unpack2x16float(words.z), unpack2x16float(words.w));
        return dot(low, inputs[0]) + dot(high, inputs[1]);
    }
    let scale = unpack2x16float(scales[index / 2u])[index % 2u];
    if (FORMAT == FORMAT_Q8) {
        let low = w[2u * index];
        let high = w[2u * index + 1u];
        return scale * (q8_word_dot(low.x, inputs[0]) + q8_word_dot(low.y, inputs[1]) + q8_word_dot(low.z, inputs[2])
                        + q8_word_dot(low.w, inputs[3]) + q8_word_dot(high.x, inputs[4])
                        + q8_word_dot(high.y, inputs[5]) + q8_word_dot(high.z, inputs[6])
                        + q8_word_dot(high.w, inputs[7]));
    }
    let words = w[index];
    return scale * (q4_word_dot(words.x, inputs[0], inputs[1]) + q4_word_dot(words.y, inputs[2], inputs[3])
                    + q4_word_dot(words.z, inputs[4], inputs[5]) + q4_word_dot(words.w, inputs[6], inputs[7]));
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
            let inputs = load_inputs(stream, unit, &sum_of_squares);
            if (INPUT_MODE == MODE_RMS_NORM) {
                sums[dot_count + stream] += sum_of_squares;
            }
            for (var r = 0u; r < ROWS_PER_THREAD; r++) {
                // Rows past the end repeat the last row (uniform work, no branch) and are never written.
                let row = min(first_row + r, ROWS - 1u);
                sums[stream * ROWS_PER_THREAD + r] += unit_dot(row, unit, inputs);
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
