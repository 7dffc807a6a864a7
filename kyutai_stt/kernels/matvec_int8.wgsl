requires packed_4x8_integer_dot_product;

// The int8 path of the q4 matvec: y = W in(x) with in(x) already rounded to int8 per 32-block by
// quantize_input.wgsl (once per step), the weights' nibbles multiplied by dot4I8Packed (4 multiply-adds per
// instruction: DP4A on NVIDIA, dot-product instructions on recent AMD, Intel and Apple GPUs). A separate file from
// matvec.wgsl because `requires packed_4x8_integer_dot_product;` must never reach a device without the feature;
// hosts choose it only where the device has it (data/variants.json), matvec.wgsl stays the portable path.
//
//   W: [ROWS, COLUMNS] q4 (kyutai_stt/quant.py): qs u32[ROWS, COLUMNS/8], nibble i of word j = q[n, 8j+i] in 0..15,
//        d f16[ROWS, COLUMNS/32] (two per u32, even block low), W[n, k] = d[n, k/32] * (q[n, k] - 8)
//   xq, xs: quantize_input.wgsl's output for [BATCH] streams: in(x)[s, k] ~= xs[s, b].x * q_x[s, k], b = k / 32
//   y[s * Y_STRIDE + Y_OFFSET + n] = (ACCUMULATE ? y[...] : 0)
//        + sum_b d[n, b] * xs[s, b].x * (sum_{k in b} q[n, k] q_x[s, k] - 8 xs[s, b].y)      for s < BATCH, n < ROWS
//   The integer sums are exact; the difference from matvec.wgsl is the inputs' rounding alone (at most half an
//   int8 step per input: tests/kernels/test_matvec_int8.py).
//
// Bindings (group 0): 0 = qs (read, as vec4<u32>: 32 weights), 1 = d (read, as u32), 2 = xq (read, as vec4<u32>:
//   16 inputs), 3 = y (read_write), 4 = xs (read, vec2<f32>[BATCH, COLUMNS / 32]).
// Dispatch: (ceil(ROWS / rows_per_workgroup), 1, 1) workgroups of WORKGROUP_SIZE invocations, where
//   rows_per_workgroup = (WORKGROUP_SIZE / THREADS_PER_ROW) * ROWS_PER_THREAD.
// Constraints (the host checks them): COLUMNS % 64 == 0, WORKGROUP_SIZE % THREADS_PER_ROW == 0,
//   ROWS_PER_THREAD * BATCH <= MAX_SUMS.
//
// Structure: matvec.wgsl's teams (THREADS_PER_ROW members stride over a row's 32-weight units, ROWS_PER_THREAD rows
// per team, partial sums reduced in workgroup memory). Per unit a member loads the 8 input words and the block's
// (scale, sum) once and uses them for its rows; per row and unit: one 16-byte weight load, one scale, 8
// dot4I8Packed. A q4 word's nibbles n0..n7 split into (word & 0x0F0F0F0F) = n0, n2, n4, n6 and
// ((word >> 4) & 0x0F0F0F0F) = n1, n3, n5, n7 as bytes, the order in which quantize_input.wgsl packs the inputs;
// the nibbles' offset 8 is taken off once per block through the inputs' sum.
// matvec_int8_subgroup.wgsl shares everything above `main` except the reduction's workgroup memory
// (text-equal: tests/kernels/test_kernel_sources.py).

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
const INT8_UNIT = 32u;
const NIBBLES = 0x0F0F0F0Fu;
// Units of a row per member (the last pass may be partial).
override UNITS_PER_MEMBER: u32 = (COLUMNS / INT8_UNIT + THREADS_PER_ROW - 1u) / THREADS_PER_ROW;

@group(0) @binding(0) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read> scales: array<u32>;
@group(0) @binding(2) var<storage, read> xq: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> xs: array<vec2<f32>>;

// sum_i n_i * q_x[i] over the 8 nibbles n of a q4 word, the inputs packed as its even and odd ones (offset kept).
fn nibbles_dot(word: u32, even: u32, odd: u32) -> i32 {
    return dot4I8Packed(word & NIBBLES, even) + dot4I8Packed((word >> 4u) & NIBBLES, odd);
}

// sum_{j < 32} W[row, 32 unit + j] * in(x)[32 unit + j] with the inputs as quantised: (low, high) = the unit's 8
// input words, block = its (scale, sum).
fn q4_unit_dot_int8(row: u32, unit: u32, low: vec4<u32>, high: vec4<u32>, block: vec2<f32>) -> f32 {
    let index = row * (COLUMNS / INT8_UNIT) + unit;
    let d = unpack2x16float(scales[index / 2u])[index % 2u];
    let words = w[index];
    let total = nibbles_dot(words.x, low.x, low.y) + nibbles_dot(words.y, low.z, low.w)
                + nibbles_dot(words.z, high.x, high.y) + nibbles_dot(words.w, high.z, high.w);
    // f32(total) and 8 * sum are integers below 2^24: their difference is exact.
    return d * block.x * (f32(total) - 8.0 * block.y);
}

// One member's partial sums over its units: sums[s * ROWS_PER_THREAD + r] for stream s and row first_row + r.
fn member_sums(first_row: u32, member: u32) -> array<f32, MAX_SUMS> {
    var sums: array<f32, MAX_SUMS>;
    // Two units a pass, both units' loads issued before either is used: the driver does not overlap the loads of
    // successive loop iterations (BENCHMARKS.md). Each sum still adds its units in order.
    for (var pass_index = 0u; pass_index < UNITS_PER_MEMBER; pass_index += 2u) {
        let unit = member + pass_index * THREADS_PER_ROW;
        if (unit >= COLUMNS / INT8_UNIT) {
            break;
        }
        let has_next = unit + THREADS_PER_ROW < COLUMNS / INT8_UNIT;
        let next = min(unit + THREADS_PER_ROW, COLUMNS / INT8_UNIT - 1u);   // a valid unit, unused if !has_next
        for (var stream = 0u; stream < BATCH; stream++) {
            let block = stream * (COLUMNS / INT8_UNIT) + unit;
            let block_next = stream * (COLUMNS / INT8_UNIT) + next;
            let low = xq[2u * block];
            let high = xq[2u * block + 1u];
            let quantized = xs[block];
            let low_next = xq[2u * block_next];
            let high_next = xq[2u * block_next + 1u];
            let quantized_next = xs[block_next];
            for (var r = 0u; r < ROWS_PER_THREAD; r++) {
                // Rows past the end repeat the last row (uniform work, no branch) and are never written.
                let row = min(first_row + r, ROWS - 1u);
                let first = q4_unit_dot_int8(row, unit, low, high, quantized);
                let second = q4_unit_dot_int8(row, next, low_next, high_next, quantized_next);
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
    let sums = member_sums(first_row, member);

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
