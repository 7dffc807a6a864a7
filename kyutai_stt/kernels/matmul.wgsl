// Matrix times many vectors: y = W in(x) for BATCH streams at once, the plans' kernel for many streams (matvec.wgsl
// keeps at most 16 sums per invocation: 8 streams). Every weight is read from memory once per tile of TILE_STREAMS
// streams and reused from workgroup memory for all of them.
//
//   W: [ROWS, COLUMNS] in the package layout of FORMAT (0 f32, 1 f16, 2 q8, 3 q4), as matvec.wgsl documents it
//        (q8/q4: one f16 scale per 32 weights; W[n, k] = d[n, k/32] * q[n, k], q4's q offset by 8)
//   x: [BATCH, X_STRIDE] f32; in(x)[s, :COLUMNS] by INPUT_MODE, as matvec.wgsl:
//        0 = PLAIN: x[s, k];  1 = RMS_NORM: x[s, k] * alpha[k] * inverseSqrt(mean_k(x[s, :COLUMNS]^2) + EPS);
//        2 = SWIGLU: silu(x[s, k]) * x[s, COLUMNS + k]
//   y[s * Y_STRIDE + Y_OFFSET + n] = (ACCUMULATE ? y[...] : 0) + sum_k W[n, k] * in(x)[s, k]   s < BATCH, n < ROWS
//   Each output is summed in the order k = 0, 1, .. COLUMNS - 1 from its own stream's inputs alone: a stream's
//   results do not depend on BATCH or on the other streams (tests/models/test_streams.py runs one stream alone
//   and among others, bit for bit). The order differs from matvec.wgsl's: the two agree to f32 rounding.
//
//   With K_SPLITS > 1 the columns are cut into K_SPLITS ranges summed by separate workgroups (more workgroups in
//   flight where rows x streams alone give too few: each one's steps are a serial chain), into partials; the
//   `combine` entry point then adds the ranges in order k_split = 0, 1, .. (and applies RMS_NORM's factor and
//   ACCUMULATE): the sum order is fixed by K_SPLITS, never by BATCH.
//
// Bindings (group 0), as matvec.wgsl: 0 = w or qs (read, u32), 1 = d (read, as u32; bind the weights again for
//   f32/f16), 2 = x (read, as vec4<f32>), 3 = y (read_write), 4 = alpha (read, [COLUMNS] f32; bind x unless
//   RMS_NORM), 5 = partials (read_write, f32[K_SPLITS, BATCH, ROWS] sums then f32[K_SPLITS, BATCH] sums of
//   squares; any scratch buffer of at least one word when K_SPLITS == 1). `combine` binds 3 and 5.
// Dispatch: main (ceil(ROWS / TILE_ROWS), ceil(BATCH / TILE_STREAMS), K_SPLITS) workgroups of ROW_THREADS *
//   STREAM_THREADS; then, if K_SPLITS > 1, combine (ceil(ROWS / COMBINE_WORKGROUP), BATCH, 1).
// Constraints (the host checks them): COLUMNS % (32 K_SPLITS) == 0, X_STRIDE % 4 == 0,
//   ROW_THREADS * STREAM_THREADS <= 256 (a portable workgroup), TILE_K % 32 == 0, TILE_K <= 8 * ROW_THREADS
//   (INPUT_LOADS),
//   workgroup memory 16 * TILE_K * (ROW_THREADS + STREAM_THREADS) bytes within the device's limit
//   (16 KiB, the portable limit, at the defaults).
//
// Structure: the classic tiled product. Per step of TILE_K columns the workgroup decodes a [TILE_K, TILE_ROWS]
// weight tile and a [TILE_K, TILE_STREAMS] input tile into workgroup memory (transformed once by INPUT_MODE),
// then each invocation accumulates a 4 x 4 register block (4 rows x 4 streams: 16 multiply-adds per two 16-byte
// reads of workgroup memory; four columns' reads go out before their 64 multiply-adds, which run in column order:
// with a workgroup or two per SM the reads' latency would otherwise sit between every two columns).
// RMS_NORM's sums of squares ride along with the input loads. Only whole vec4s of
// workgroup memory are written and the accumulators are plain variables: no dynamically indexed vector or
// private array, which compilers may leave in slow memory.

override FORMAT: u32;
override ROWS: u32;
override COLUMNS: u32;
override BATCH: u32 = 1u;
override X_STRIDE: u32 = select(COLUMNS, 2u * COLUMNS, INPUT_MODE == 2u);
override Y_STRIDE: u32 = ROWS;
override Y_OFFSET: u32 = 0u;
override ACCUMULATE: bool = false;
override INPUT_MODE: u32 = 0u;
// Column ranges summed by separate workgroups (see above); each SPLIT_COLUMNS wide, a multiple of TILE_K.
override K_SPLITS: u32 = 1u;
override SPLIT_COLUMNS: u32 = COLUMNS / K_SPLITS;
override EPS: f32 = 1e-8;
// Tuning (benchmarks/kernels.py sweeps these): invocations along rows and along streams, 4 of each per invocation.
override ROW_THREADS: u32 = 16u;
override STREAM_THREADS: u32 = 16u;
// Columns per step: a multiple of 32 keeps one q8/q4 scale per row and step.
override TILE_K: u32 = 32u;
override WORKGROUP_SIZE: u32 = ROW_THREADS * STREAM_THREADS;
override TILE_ROWS: u32 = 4u * ROW_THREADS;
override TILE_STREAMS: u32 = 4u * STREAM_THREADS;
// Weights per u32 word of the stored matrix: f32 1, f16 2, q8 4, q4 8.
override WEIGHTS_PER_WORD: u32 = select(select(1u, 2u, FORMAT == FORMAT_F16), select(4u, 8u, FORMAT == FORMAT_Q4),
                                        FORMAT >= FORMAT_Q8);

const FORMAT_F16 = 1u;
const FORMAT_Q8 = 2u;
const FORMAT_Q4 = 3u;
const MODE_RMS_NORM = 1u;
const MODE_SWIGLU = 2u;
const SCALE_BLOCK = 32u;
// Input loads (4 streams x 4 columns each) an invocation makes per step, at most: STREAM_THREADS * TILE_K / 4 /
// WORKGROUP_SIZE = TILE_K / (4 ROW_THREADS) <= 2 (a private array needs a constant size).
const INPUT_LOADS = 2u;

@group(0) @binding(0) var<storage, read> w: array<u32>;
@group(0) @binding(1) var<storage, read> scales: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> alpha: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> partials: array<f32>;

const COMBINE_WORKGROUP = 64u;

// weight_tile[k * ROW_THREADS + g] = W[first_row + 4 g .. + 3, k0 + k]; input_tile[k * STREAM_THREADS + g] =
// in(x)[first_stream + 4 g .. + 3, k0 + k]. After the last step input_tile holds the sums of squares.
var<workgroup> weight_tile: array<vec4<f32>, TILE_K * ROW_THREADS>;
var<workgroup> input_tile: array<vec4<f32>, TILE_K * STREAM_THREADS>;

fn silu(v: vec4<f32>) -> vec4<f32> {
    // v * sigmoid(v), taking exp of non-positive arguments only (no overflow for large |v|).
    let e = exp(-abs(v));
    return v * select(e / (1.0 + e), 1.0 / (1.0 + e), v >= vec4<f32>(0.0));
}

// The f16 scales of rows n .. n + 3's block of column k (q8/q4).
fn block_scales(n: vec4<u32>, k: u32) -> vec4<f32> {
    let index = n * (COLUMNS / SCALE_BLOCK) + k / SCALE_BLOCK;
    return vec4<f32>(unpack2x16float(scales[index.x / 2u])[index.x % 2u],
                     unpack2x16float(scales[index.y / 2u])[index.y % 2u],
                     unpack2x16float(scales[index.z / 2u])[index.z % 2u],
                     unpack2x16float(scales[index.w / 2u])[index.w % 2u]);
}

// Decodes word column `c` (weights k = c WEIGHTS_PER_WORD ..) of row group g (rows 4 g .. 4 g + 3 of the tile) into
// the weight tile, one vec4 (4 rows) per column. Rows past the end repeat the last row (never written out).
fn load_weight_tile(g: u32, c: u32, k0: u32, first_row: u32) {
    let n = min(vec4<u32>(first_row + 4u * g) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(ROWS - 1u));
    let k = c * WEIGHTS_PER_WORD;
    let index = (n * COLUMNS + k0 + k) / WEIGHTS_PER_WORD;
    let words = vec4<u32>(w[index.x], w[index.y], w[index.z], w[index.w]);
    let slot = k * ROW_THREADS + g;
    if (FORMAT == FORMAT_Q4) {
        let d = block_scales(n, k0 + k);
        for (var j = 0u; j < 8u; j++) {
            weight_tile[slot + j * ROW_THREADS] = d * (vec4<f32>((words >> vec4<u32>(4u * j)) & vec4<u32>(0xFu)) - 8.0);
        }
    } else if (FORMAT == FORMAT_Q8) {
        let d = block_scales(n, k0 + k);
        for (var j = 0u; j < 4u; j++) {
            // Each byte's sign: shift it to the top, then an arithmetic shift back.
            let q = bitcast<vec4<i32>>(words << vec4<u32>(24u - 8u * j)) >> vec4<u32>(24u);
            weight_tile[slot + j * ROW_THREADS] = d * vec4<f32>(q);
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

// in(x) of one stream at columns k .. k + 3 (absolute); `value` = x there (RMS_NORM sums its squares).
fn transformed_input(stream: u32, k: u32, value: vec4<f32>) -> vec4<f32> {
    if (INPUT_MODE == MODE_RMS_NORM) {
        return value * alpha[k / 4u];
    } else if (INPUT_MODE == MODE_SWIGLU) {
        return silu(value) * x[(stream * X_STRIDE + k) / 4u + COLUMNS / 4u];
    }
    return value;
}

fn raw_input(stream: u32, k: u32) -> vec4<f32> {
    return x[(stream * X_STRIDE + k) / 4u];
}

// Transforms columns 4 c .. 4 c + 3 of stream group g (streams 4 g .. 4 g + 3 of the tile) into the input tile, one
// vec4 (4 streams) per column; returns the streams' sums of squares of these raw inputs (RMS_NORM). Streams past
// the end repeat the last stream (never written out).
fn load_input_tile(g: u32, c: u32, k0: u32, first_stream: u32) -> vec4<f32> {
    let s = min(vec4<u32>(first_stream + 4u * g) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(BATCH - 1u));
    let k = k0 + 4u * c;
    let raw_a = raw_input(s.x, k);
    let raw_b = raw_input(s.y, k);
    let raw_e = raw_input(s.z, k);
    let raw_f = raw_input(s.w, k);
    let a = transformed_input(s.x, k, raw_a);
    let b = transformed_input(s.y, k, raw_b);
    let e = transformed_input(s.z, k, raw_e);
    let f = transformed_input(s.w, k, raw_f);
    let slot = 4u * c * STREAM_THREADS + g;
    input_tile[slot] = vec4<f32>(a.x, b.x, e.x, f.x);
    input_tile[slot + STREAM_THREADS] = vec4<f32>(a.y, b.y, e.y, f.y);
    input_tile[slot + 2u * STREAM_THREADS] = vec4<f32>(a.z, b.z, e.z, f.z);
    input_tile[slot + 3u * STREAM_THREADS] = vec4<f32>(a.w, b.w, e.w, f.w);
    return vec4<f32>(dot(raw_a, raw_a), dot(raw_b, raw_b), dot(raw_e, raw_e), dot(raw_f, raw_f));
}

// Writes the 4 rows of one stream (ACCUMULATE adds the old values).
fn store_rows(stream: u32, first_row: u32, value: vec4<f32>) {
    if (stream >= BATCH) {
        return;
    }
    for (var r = 0u; r < 4u; r++) {
        let row = first_row + r;
        if (row < ROWS) {
            let index = stream * Y_STRIDE + Y_OFFSET + row;
            var v = value[r];
            if (ACCUMULATE) {
                v += y[index];
            }
            y[index] = v;
        }
    }
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

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let row_group = lane % ROW_THREADS;
    let stream_group = lane / ROW_THREADS;
    let first_row = workgroup.x * TILE_ROWS;
    let first_stream = workgroup.y * TILE_STREAMS;
    let weight_loads = ROW_THREADS * (TILE_K / WEIGHTS_PER_WORD);     // (row group, word column) pairs per step
    let input_loads = STREAM_THREADS * (TILE_K / 4u);                  // (stream group, 4 columns) pairs per step
    // sum_j: rows 4 row_group .. + 3 of stream 4 stream_group + j.
    var block = Block4x4(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));     // rows x streams
    // squares[l]: the sums of squares of input load l's 4 streams (RMS_NORM), over the steps.
    var squares: array<vec4<f32>, INPUT_LOADS>;

    let split = workgroup.z;
    for (var k0 = split * SPLIT_COLUMNS; k0 < (split + 1u) * SPLIT_COLUMNS; k0 += TILE_K) {
        for (var i = lane; i < weight_loads; i += WORKGROUP_SIZE) {
            // Word columns fastest: neighbouring invocations read neighbouring words of a row.
            load_weight_tile(i / (TILE_K / WEIGHTS_PER_WORD), i % (TILE_K / WEIGHTS_PER_WORD), k0, first_row);
        }
        for (var l = 0u; l < INPUT_LOADS; l++) {
            let i = lane + l * WORKGROUP_SIZE;
            if (i < input_loads) {
                squares[l] += load_input_tile(i / (TILE_K / 4u), i % (TILE_K / 4u), k0, first_stream);
            }
        }
        workgroupBarrier();
        // Four columns' operands, then their products in order (see Structure above).
        for (var k = 0u; k < TILE_K; k += 4u) {
            let w0 = weight_tile[k * ROW_THREADS + row_group];
            let w1 = weight_tile[(k + 1u) * ROW_THREADS + row_group];
            let w2 = weight_tile[(k + 2u) * ROW_THREADS + row_group];
            let w3 = weight_tile[(k + 3u) * ROW_THREADS + row_group];
            let x0 = input_tile[k * STREAM_THREADS + stream_group];
            let x1 = input_tile[(k + 1u) * STREAM_THREADS + stream_group];
            let x2 = input_tile[(k + 2u) * STREAM_THREADS + stream_group];
            let x3 = input_tile[(k + 3u) * STREAM_THREADS + stream_group];
            block = four_steps(block, w0, w1, w2, w3, x0, x1, x2, x3);
        }
        workgroupBarrier();
    }

    // RMS_NORM: a stream group's sums of squares are spread over the TILE_K / 4 loads of its columns (pairs
    // g TILE_K / 4 + c); gathered in input_tile (free after the last barrier) and added in a fixed order.
    var squares_total = vec4<f32>(0.0);
    if (INPUT_MODE == MODE_RMS_NORM) {
        for (var l = 0u; l < INPUT_LOADS; l++) {
            let i = lane + l * WORKGROUP_SIZE;
            if (i < input_loads) {
                input_tile[i] = squares[l];
            }
        }
        workgroupBarrier();
        for (var c = 0u; c < TILE_K / 4u; c++) {
            squares_total += input_tile[stream_group * (TILE_K / 4u) + c];
        }
    }

    let rows = first_row + 4u * row_group;
    let streams = first_stream + 4u * stream_group;
    if (K_SPLITS > 1u) {
        store_partial_rows(split, streams, rows, block.s0, squares_total.x, workgroup.x == 0u && row_group == 0u);
        store_partial_rows(split, streams + 1u, rows, block.s1, squares_total.y, workgroup.x == 0u && row_group == 0u);
        store_partial_rows(split, streams + 2u, rows, block.s2, squares_total.z, workgroup.x == 0u && row_group == 0u);
        store_partial_rows(split, streams + 3u, rows, block.s3, squares_total.w, workgroup.x == 0u && row_group == 0u);
        return;
    }
    var factors = vec4<f32>(1.0);
    if (INPUT_MODE == MODE_RMS_NORM) {
        factors = inverseSqrt(squares_total / f32(COLUMNS) + EPS);
    }
    store_rows(streams, rows, block.s0 * factors.x);
    store_rows(streams + 1u, rows, block.s1 * factors.y);
    store_rows(streams + 2u, rows, block.s2 * factors.z);
    store_rows(streams + 3u, rows, block.s3 * factors.w);
}

// One split's sums of 4 rows of one stream into partials; `with_squares`: one workgroup column also writes the
// stream's sum of squares over the split (every row tile computes the same).
fn store_partial_rows(split: u32, stream: u32, first_row: u32, value: vec4<f32>, squares: f32, with_squares: bool) {
    if (stream >= BATCH) {
        return;
    }
    for (var r = 0u; r < 4u; r++) {
        if (first_row + r < ROWS) {
            partials[(split * BATCH + stream) * ROWS + first_row + r] = value[r];
        }
    }
    if (INPUT_MODE == MODE_RMS_NORM && with_squares) {
        partials[K_SPLITS * BATCH * ROWS + split * BATCH + stream] = squares;
    }
}

@compute @workgroup_size(COMBINE_WORKGROUP)
fn combine(@builtin(global_invocation_id) id: vec3<u32>) {
    let row = id.x;
    let stream = id.y;
    if (row >= ROWS || stream >= BATCH) {
        return;
    }
    var total = 0.0;
    var squares = 0.0;
    for (var split = 0u; split < K_SPLITS; split++) {
        total += partials[(split * BATCH + stream) * ROWS + row];
        if (INPUT_MODE == MODE_RMS_NORM) {
            squares += partials[K_SPLITS * BATCH * ROWS + split * BATCH + stream];
        }
    }
    if (INPUT_MODE == MODE_RMS_NORM) {
        total *= inverseSqrt(squares / f32(COLUMNS) + EPS);
    }
    let index = stream * Y_STRIDE + Y_OFFSET + row;
    if (ACCUMULATE) {
        total += y[index];
    }
    y[index] = total;
}
