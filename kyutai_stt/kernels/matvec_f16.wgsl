enable f16;

// The f16 path of the q4 matvec: y = W in(x) with in(x) already rounded to f16 per 32-block by quantize_input.wgsl
// (OUTPUT_F16, once per step), the weights' nibbles turned into f16 two at a time and multiplied by packed f16
// fused multiply-adds (2 per instruction where the GPU has them: most do at twice the f32 rate). For devices
// with `shader-f16` and no fast dot4I8Packed (WGSL emulates it where the GPU lacks an int8 dot instruction). A
// separate file from matvec.wgsl because `enable f16;` must never reach a device without the feature; hosts choose
// it only where the device has it (data/variants.json), matvec.wgsl stays the portable path.
//
//   W: [ROWS, COLUMNS] q4 (kyutai_stt/quant.py): qs u32[ROWS, COLUMNS/8], nibble i of word j = q[n, 8j+i] in 0..15,
//        d f16[ROWS, COLUMNS/32] (two per u32, even block low), W[n, k] = d[n, k/32] * (q[n, k] - 8)
//   xq, xs: quantize_input.wgsl's f16 output for [BATCH] streams: in(x)[s, k] ~= xs[s, b].x * h[s, k], b = k / 32,
//        h in f16 with |h| <= 1, xs[s, b].x a power of two (xq: 16 words per block, input pairs (8j+i, 8j+4+i))
//   y[s * Y_STRIDE + Y_OFFSET + n] = (ACCUMULATE ? y[...] : 0)
//        + sum_b d[n, b] * xs[s, b].x * f32(sum_{k in b} (q[n, k] - 8) h[s, k])      for s < BATCH, n < ROWS
//   The block's sum is taken in f16 (two lanes of 16 products, |sum| <= 128): its roundings and the inputs' are
//   the difference from matvec.wgsl (tests/kernels/test_matvec_f16.py; about 8x below the int8 path's).
//
// Bindings (group 0): 0 = qs (read, as vec4<u32>: 32 weights), 1 = d (read, as u32), 2 = xq (read, as vec4<u32>:
//   8 inputs), 3 = y (read_write), 4 = xs (read, vec2<f32>[BATCH, COLUMNS / 32]).
// Dispatch: (ceil(ROWS / rows_per_workgroup), 1, 1) workgroups of WORKGROUP_SIZE invocations, where
//   rows_per_workgroup = (WORKGROUP_SIZE / THREADS_PER_ROW) * ROWS_PER_THREAD.
// Constraints (the host checks them): COLUMNS % 64 == 0, WORKGROUP_SIZE % THREADS_PER_ROW == 0,
//   ROWS_PER_THREAD * BATCH <= MAX_SUMS.
//
// Structure: matvec_int8.wgsl's (teams of THREADS_PER_ROW members striding over a row's 32-weight units, two units
// a pass, ROWS_PER_THREAD rows per team, partial sums reduced in workgroup memory). Per unit a member loads the 16
// input words and the block's scale once and uses them for its rows; per row and unit: one 16-byte weight load,
// one scale, 16 packed multiply-adds. ((word >> 4i) & 0x000F000F) holds nibbles i and i + 4 in the low bits of
// each half; OR-ing them into the f16 1024.0 gives 1024 + n exactly, and subtracting 1032 leaves n - 8 exactly.

// Problem shape: fixed per layer, so pipeline constants.
override ROWS: u32;
override COLUMNS: u32;
// Streams decoded together: each weight unit is then read from memory once for all of them.
override BATCH: u32 = 1u;
// Output placement: several heads (text logits, VAD) can write disjoint ranges of one buffer.
override Y_STRIDE: u32 = ROWS;
override Y_OFFSET: u32 = 0u;
// true: y += W in(x) (the residual add, fused); false: y = W in(x).
override ACCUMULATE: bool = false;
// Tuning (benchmarks/kernels.py sweeps these). 256 = the portable maximum of invocations per workgroup.
override WORKGROUP_SIZE: u32 = 256u;
override THREADS_PER_ROW: u32 = 16u;
override ROWS_PER_THREAD: u32 = 4u;

// Accumulators per member (a private array needs a constant size).
const MAX_SUMS = 16u;
// Weights per unit: one scale block, one 16-byte load of q4.
const F16_UNIT = 32u;
// Nibbles i and i + 4 of a q4 word shifted right by 4i, one in each f16 half.
const PAIR_NIBBLES = 0x000F000Fu;
// 1024.0 in f16 in both halves: its mantissa's low 10 bits count units, so OR-ing a nibble n gives 1024 + n.
const F16_MAGIC_PAIR = 0x64006400u;
const F16_MAGIC_PLUS_OFFSET = 1032.0h;
// Units of a row per member (the last pass may be partial).
override UNITS_PER_MEMBER: u32 = (COLUMNS / F16_UNIT + THREADS_PER_ROW - 1u) / THREADS_PER_ROW;

@group(0) @binding(0) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read> scales: array<u32>;
@group(0) @binding(2) var<storage, read> xq: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> xs: array<vec2<f32>>;

// The two f16 halves of a word, low half first. Naga (wgpu 0.32) cannot bitcast u32 to vec2<f16>: the native host
// compiles this body as vec2<f16>(unpack2x16float(word)), the same values (engine/device.py to_native_wgsl).
fn f16_pair(word: u32) -> vec2<f16> {
    return bitcast<vec2<f16>>(word);
}

// Weights (q - 8) of nibbles i and i + 4 of a q4 word, exact in f16.
fn nibble_pair(word: u32, i: u32) -> vec2<f16> {
    return f16_pair(((word >> (4u * i)) & PAIR_NIBBLES) | F16_MAGIC_PAIR) - vec2<f16>(F16_MAGIC_PLUS_OFFSET);
}

// acc + the 8 products of one q4 word with its inputs (4 words: pairs (i, i + 4)), lanes (nibbles 0-3, 4-7).
fn word_fma(word: u32, inputs: vec4<u32>, acc: vec2<f16>) -> vec2<f16> {
    var sum = fma(nibble_pair(word, 0u), f16_pair(inputs.x), acc);
    sum = fma(nibble_pair(word, 1u), f16_pair(inputs.y), sum);
    sum = fma(nibble_pair(word, 2u), f16_pair(inputs.z), sum);
    return fma(nibble_pair(word, 3u), f16_pair(inputs.w), sum);
}

// sum_{j < 32} W[row, 32 unit + j] * in(x)[32 unit + j] with the inputs as rounded to f16: x0..x3 = the unit's 16
// input words (4 per q4 word), scale = its block scale. (Separate values, not a struct: a struct of a unit's words
// made Mimi's kernels slower on an H100, BENCHMARKS.md.)
fn q4_unit_dot_f16(row: u32, unit: u32, x0: vec4<u32>, x1: vec4<u32>, x2: vec4<u32>, x3: vec4<u32>,
                   scale: f32) -> f32 {
    let index = row * (COLUMNS / F16_UNIT) + unit;
    let d = unpack2x16float(scales[index / 2u])[index % 2u];
    let words = w[index];
    var acc = word_fma(words.x, x0, vec2<f16>());
    acc = word_fma(words.y, x1, acc);
    acc = word_fma(words.z, x2, acc);
    acc = word_fma(words.w, x3, acc);
    let total = vec2<f32>(acc);
    return d * scale * (total.x + total.y);
}

// One member's partial sums over its units: sums[s * ROWS_PER_THREAD + r] for stream s and row first_row + r.
fn f16_member_sums(first_row: u32, member: u32) -> array<f32, MAX_SUMS> {
    var sums: array<f32, MAX_SUMS>;
    // Two units a pass, both units' loads issued before either is used (as matvec_int8.wgsl). Each sum still adds
    // its units in order.
    for (var pass_index = 0u; pass_index < UNITS_PER_MEMBER; pass_index += 2u) {
        let unit = member + pass_index * THREADS_PER_ROW;
        if (unit >= COLUMNS / F16_UNIT) {
            break;
        }
        let has_next = unit + THREADS_PER_ROW < COLUMNS / F16_UNIT;
        let next = min(unit + THREADS_PER_ROW, COLUMNS / F16_UNIT - 1u);   // a valid unit, unused if !has_next
        for (var stream = 0u; stream < BATCH; stream++) {
            let block = stream * (COLUMNS / F16_UNIT) + unit;
            let block_next = stream * (COLUMNS / F16_UNIT) + next;
            let a0 = xq[4u * block];
            let a1 = xq[4u * block + 1u];
            let a2 = xq[4u * block + 2u];
            let a3 = xq[4u * block + 3u];
            let scale = xs[block].x;
            let b0 = xq[4u * block_next];
            let b1 = xq[4u * block_next + 1u];
            let b2 = xq[4u * block_next + 2u];
            let b3 = xq[4u * block_next + 3u];
            let scale_next = xs[block_next].x;
            for (var r = 0u; r < ROWS_PER_THREAD; r++) {
                // Rows past the end repeat the last row (uniform work, no branch) and are never written.
                let row = min(first_row + r, ROWS - 1u);
                let first = q4_unit_dot_f16(row, unit, a0, a1, a2, a3, scale);
                let second = q4_unit_dot_f16(row, next, b0, b1, b2, b3, scale_next);
                sums[stream * ROWS_PER_THREAD + r] += first;
                if (has_next) {
                    sums[stream * ROWS_PER_THREAD + r] += second;
                }
            }
        }
    }
    return sums;
}

// Writes a team's total for sum i (stream i / ROWS_PER_THREAD, row first_row + i % ROWS_PER_THREAD).
fn store_total(i: u32, first_row: u32, total: f32) {
    let stream = i / ROWS_PER_THREAD;
    let row = first_row + i % ROWS_PER_THREAD;
    if (row < ROWS) {
        let index = stream * Y_STRIDE + Y_OFFSET + row;
        var value = total;
        if (ACCUMULATE) {
            value += y[index];
        }
        y[index] = value;
    }
}

// Every member's sums, laid out [sum index][invocation] so that each reduction step reads consecutive words.
var<workgroup> partial_sums: array<f32, WORKGROUP_SIZE * ROWS_PER_THREAD * BATCH>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let team = lane / THREADS_PER_ROW;
    let member = lane % THREADS_PER_ROW;
    let first_row = (workgroup.x * (WORKGROUP_SIZE / THREADS_PER_ROW) + team) * ROWS_PER_THREAD;
    let dot_count = ROWS_PER_THREAD * BATCH;
    let sums = f16_member_sums(first_row, member);

    for (var i = 0u; i < dot_count; i++) {
        partial_sums[i * WORKGROUP_SIZE + lane] = sums[i];
    }
    workgroupBarrier();
    // Tree reduction over the team, halving the active count (rounding up): any THREADS_PER_ROW works.
    var active_count = THREADS_PER_ROW;
    while (active_count > 1u) {
        let upper_half_start = (active_count + 1u) / 2u;
        if (member + upper_half_start < active_count) {
            for (var i = 0u; i < dot_count; i++) {
                let index = i * WORKGROUP_SIZE + lane;
                partial_sums[index] += partial_sums[index + upper_half_start];
            }
        }
        workgroupBarrier();
        active_count = upper_half_start;
    }
    for (var i = member; i < dot_count; i += THREADS_PER_ROW) {
        store_total(i, first_row, partial_sums[i * WORKGROUP_SIZE + team * THREADS_PER_ROW]);
    }
}
