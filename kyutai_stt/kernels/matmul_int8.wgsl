requires packed_4x8_integer_dot_product;

// The int8 path of matmul.wgsl: q4 matrix times many vectors already rounded to int8 per 32-block by
// quantize_input.wgsl, the nibbles multiplied by dot4I8Packed (4 multiply-adds per instruction) from workgroup
// memory. Plans of many streams take it where the device has the language feature (as matvec_int8.wgsl for few
// streams; its own file for the same reason: the `requires` line must never reach a device without it).
//
//   W: [ROWS, COLUMNS] q4 (kyutai_stt/quant.py): qs u32[ROWS, COLUMNS/8], nibble i of word j = q[n, 8j+i] in 0..15,
//        d f16[ROWS, COLUMNS/32] (two per u32, even block low), W[n, k] = d[n, k/32] * (q[n, k] - 8)
//   xq, xs: quantize_input.wgsl's output for [BATCH] streams: in(x)[s, k] ~= xs[s, b].x * q_x[s, k], b = k / 32,
//        xs[s, b].y = sum_{k in b} q_x[s, k]
//   y[s * Y_STRIDE + Y_OFFSET + n] = (ACCUMULATE ? y[...] : 0)
//        + sum_b d[n, b] * xs[s, b].x * (sum_{k in b} q[n, k] q_x[s, k] - 8 xs[s, b].y)      for s < BATCH, n < ROWS
//   Each output is summed over its blocks b = 0, 1, .. in order from its own stream's inputs: a stream's results do
//   not depend on BATCH or on the other streams. With K_SPLITS > 1 the blocks are cut into K_SPLITS ranges summed
//   by separate workgroups into partials, added in order by `combine` (which also applies ACCUMULATE).
//
// Bindings (group 0): 0 = qs (read, as vec4<u32>: one row's block), 1 = d (read, u32), 2 = xq (read, as vec4<u32>:
//   16 inputs), 3 = y (read_write), 4 = xs (read, vec2<f32>[BATCH, COLUMNS / 32]), 5 = partials (read_write,
//   f32[K_SPLITS, BATCH, ROWS]; any scratch buffer when K_SPLITS == 1). `combine` binds 3 and 5.
// Dispatch: main (ceil(ROWS / TILE_ROWS), ceil(BATCH / TILE_STREAMS), K_SPLITS) workgroups of ROW_THREADS *
//   STREAM_THREADS (TILE_STREAMS = 4 STREAM_QUADS STREAM_THREADS); then, if K_SPLITS > 1, combine
//   (ceil(ROWS / COMBINE_WORKGROUP), BATCH, 1).
// Constraints (the host checks them): COLUMNS % (32 TILE_BLOCKS K_SPLITS) == 0, ROW_THREADS * STREAM_THREADS
//   <= 256, workgroup memory TILE_BUFFERS * TILE_BLOCKS * (20 TILE_ROWS + 40 TILE_STREAMS) bytes (at most 16 KiB).
//
// Structure: matmul.wgsl's tiled product on integers. Per step of TILE_BLOCKS blocks the workgroup copies the tile's
// weight words and scales and the streams' input words, sums and scales into workgroup memory (no decoding: the
// nibbles go to dot4I8Packed as they are), then each invocation accumulates 4 rows x 4 streams (x 8 with
// STREAM_QUADS 2): per block its rows' nibbles split once, then per pair 8 dot4I8Packed and one scaled multiply-add.
// An invocation's rows are ROW_THREADS apart, so that neighbouring invocations read neighbouring 16-byte words of
// workgroup memory (rows 4 apart put 8 invocations of a half-warp on the same 4 of 32 banks). With at most one entry
// of each tile per invocation, a step's loads go out while the previous step is summed (registers), and where two
// sets of tiles fit (the plans' 2 blocks a step), they are stored into the set not being summed: one barrier a step
// instead of two.

override ROWS: u32;
override COLUMNS: u32;
override BATCH: u32 = 1u;
override Y_STRIDE: u32 = ROWS;
override Y_OFFSET: u32 = 0u;
override ACCUMULATE: bool = false;
override K_SPLITS: u32 = 1u;
override SPLIT_COLUMNS: u32 = COLUMNS / K_SPLITS;
override ROW_THREADS: u32 = 16u;
override STREAM_THREADS: u32 = 16u;
// 32-column blocks per step.
override TILE_BLOCKS: u32 = 4u;
override WORKGROUP_SIZE: u32 = ROW_THREADS * STREAM_THREADS;
override TILE_ROWS: u32 = 4u * ROW_THREADS;
// Quads of streams an invocation sums, 1 or 2 (4 or 8 streams): its rows' nibbles are split once for all of them.
// Two halve the invocations of a tile (lm.py takes them on grids that fill the GPU without them). The same sums.
override STREAM_QUADS: u32 = 1u;
override TILE_STREAMS: u32 = 4u * STREAM_QUADS * STREAM_THREADS;
// Sets of tiles in workgroup memory: two where they fit the portable 16 KiB (2 blocks a step at the default tile):
// the next step is stored into one set while the other is summed, one barrier a step instead of two. The same sums.
override TILE_BUFFERS: u32 = select(1u, 2u, 2u * TILE_BLOCKS * (20u * TILE_ROWS + 40u * TILE_STREAMS) <= 16384u);

const BLOCK = 32u;
const NIBBLES = 0x0F0F0F0Fu;
const ONE_AND_A_HALF_2_23 = 0x4B400000i;   // the bits of the f32 1.5 * 2^23
const COMBINE_WORKGROUP = 64u;

@group(0) @binding(0) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read> scales: array<u32>;
@group(0) @binding(2) var<storage, read> xq: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> xs: array<vec2<f32>>;
@group(0) @binding(5) var<storage, read_write> partials: array<f32>;

// [block of the step][row of the tile]: the row's 4 q4 words (32 weights).
var<workgroup> weight_words: array<vec4<u32>, TILE_BUFFERS * TILE_BLOCKS * TILE_ROWS>;
// [block of the step][row group g]: the scales of an invocation's 4 rows g + r ROW_THREADS, one load for the 4.
var<workgroup> weight_scales: array<vec4<f32>, TILE_BUFFERS * TILE_BLOCKS * ROW_THREADS>;
// [block of the step][stream of the tile][half]: the stream's 8 input words (2 x vec4).
var<workgroup> input_words: array<vec4<u32>, TILE_BUFFERS * 2u * TILE_BLOCKS * TILE_STREAMS>;
// [block of the step][stream group g]: the input scales, and sums, of an invocation's 4 streams 4 g .. + 3.
var<workgroup> input_scales: array<vec4<f32>, TILE_BUFFERS * TILE_BLOCKS * TILE_STREAMS / 4u>;
var<workgroup> input_sums: array<vec4<f32>, TILE_BUFFERS * TILE_BLOCKS * TILE_STREAMS / 4u>;

// One row's block, its nibbles split once for every stream of the tile: the even nibbles of its 4 words, the odd ones
// (as bytes 0..15, the offset 8 taken out by the stream's sum).
struct RowBlock {
    even: vec4<u32>,
    odd: vec4<u32>,
}

fn row_block(slot: u32) -> RowBlock {
    let words = weight_words[slot];
    return RowBlock(words & vec4<u32>(NIBBLES), (words >> vec4<u32>(4u)) & vec4<u32>(NIBBLES));
}

// 1.5 * 2^23 + sum_{k in the block} q[n, k] q_x[s, k] for one row and one stream's 8 input words, as the bits of
// an f32: |sum| < 2^22 lands in the mantissa, so the float is exact without an integer-to-float conversion (a
// quarter-rate instruction on NVIDIA GPUs), and the addition rides on the dot products' own additions.
fn block_dot(row: RowBlock, low: vec4<u32>, high: vec4<u32>) -> i32 {
    return ONE_AND_A_HALF_2_23 + dot4I8Packed(row.even.x, low.x) + dot4I8Packed(row.odd.x, low.y)
           + dot4I8Packed(row.even.y, low.z) + dot4I8Packed(row.odd.y, low.w)
           + dot4I8Packed(row.even.z, high.x) + dot4I8Packed(row.odd.z, high.y)
           + dot4I8Packed(row.even.w, high.z) + dot4I8Packed(row.odd.w, high.w);
}

// The invocation's 4 rows (at one step block; their scales d) against one stream's block (its input scale x and
// sum y): their 4 scaled block sums.
fn rows_times_stream(r0: RowBlock, r1: RowBlock, r2: RowBlock, r3: RowBlock, d: vec4<f32>, stream_slot: u32, x: f32,
                     y: f32) -> vec4<f32> {
    let low = input_words[2u * stream_slot];
    let high = input_words[2u * stream_slot + 1u];
    let totals = bitcast<vec4<f32>>(vec4<i32>(block_dot(r0, low, high), block_dot(r1, low, high),
                                              block_dot(r2, low, high), block_dot(r3, low, high)));
    // 1.5 * 2^23 + the totals, and it + 8 * sum, are integers below 2^24: their difference is exact.
    return d * x * (totals - (1.5 * 8388608.0 + 8.0 * y));
}

// Weight tile entry i's scale (block i / TILE_ROWS of the step, row i % TILE_ROWS of the tile), at its row group.
fn store_weight_scale(i: u32, scale: f32) {
    let row = i % TILE_ROWS;
    weight_scales[i / TILE_ROWS * ROW_THREADS + row % ROW_THREADS][row / ROW_THREADS] = scale;
}

// Input tile entry i's (scale, sum) (block i / TILE_STREAMS, stream i % TILE_STREAMS), at its stream group.
fn store_input_stats(i: u32, stats: vec2<f32>) {
    let stream = i % TILE_STREAMS;
    let at = i / TILE_STREAMS * (TILE_STREAMS / 4u) + stream / 4u;
    input_scales[at][stream % 4u] = stats.x;
    input_sums[at][stream % 4u] = stats.y;
}

// Writes the 4 rows (ROW_THREADS apart) of one stream (ACCUMULATE adds the old values).
fn store_spread_rows(stream: u32, first_row: u32, value: vec4<f32>) {
    if (stream >= BATCH) {
        return;
    }
    for (var r = 0u; r < 4u; r++) {
        let row = first_row + r * ROW_THREADS;
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

// One split's sums of 4 rows (ROW_THREADS apart) of one stream into partials.
fn store_split_rows(split: u32, stream: u32, first_row: u32, value: vec4<f32>) {
    if (stream >= BATCH) {
        return;
    }
    for (var r = 0u; r < 4u; r++) {
        let row = first_row + r * ROW_THREADS;
        if (row < ROWS) {
            partials[(split * BATCH + stream) * ROWS + row] = value[r];
        }
    }
}

// Where tile entry i (block i / TILE_ROWS of the step, row i % TILE_ROWS of the tile) of the step at block b0 lies
// in W; rows past the end repeat the last one (never written out).
fn weight_block(i: u32, b0: u32, first_row: u32) -> u32 {
    return min(first_row + i % TILE_ROWS, ROWS - 1u) * (COLUMNS / BLOCK) + b0 + i / TILE_ROWS;
}

// Likewise for input entry i (block i / TILE_STREAMS, stream i % TILE_STREAMS of the tile) in xq and xs.
fn input_block(i: u32, b0: u32, first_stream: u32) -> u32 {
    return min(first_stream + i % TILE_STREAMS, BATCH - 1u) * (COLUMNS / BLOCK) + b0 + i / TILE_STREAMS;
}

// Entry `entry` of a step's weight tile and of its input tile (where the tiles have one): with prefetch, each
// invocation's one entry of each; otherwise the invocations take turns over the entries.
struct StepLoads {
    words: vec4<u32>,
    word_scale: f32,
    low: vec4<u32>,
    high: vec4<u32>,
    block_stats: vec2<f32>,
}

fn load_step(entry: u32, b0: u32, first_row: u32, first_stream: u32) -> StepLoads {
    var loads = StepLoads(vec4<u32>(0u), 0.0, vec4<u32>(0u), vec4<u32>(0u), vec2<f32>(0.0));
    if (entry < TILE_BLOCKS * TILE_ROWS) {
        let index = weight_block(entry, b0, first_row);
        loads.words = w[index];
        loads.word_scale = unpack2x16float(scales[index / 2u])[index % 2u];
    }
    if (entry < TILE_BLOCKS * TILE_STREAMS) {
        let block = input_block(entry, b0, first_stream);
        loads.low = xq[2u * block];
        loads.high = xq[2u * block + 1u];
        loads.block_stats = xs[block];
    }
    return loads;
}

// Stores them into tile set `buffer` (its blocks TILE_BLOCKS buffer ..).
fn store_step(entry: u32, loads: StepLoads, buffer: u32) {
    if (entry < TILE_BLOCKS * TILE_ROWS) {
        let i = buffer * TILE_BLOCKS * TILE_ROWS + entry;
        weight_words[i] = loads.words;
        store_weight_scale(i, loads.word_scale);
    }
    if (entry < TILE_BLOCKS * TILE_STREAMS) {
        let i = buffer * TILE_BLOCKS * TILE_STREAMS + entry;
        input_words[2u * i] = loads.low;
        input_words[2u * i + 1u] = loads.high;
        store_input_stats(i, loads.block_stats);
    }
}

// An invocation's 4 rows x 4 streams' sums.
struct Sums4 {
    s0: vec4<f32>,
    s1: vec4<f32>,
    s2: vec4<f32>,
    s3: vec4<f32>,
}

// An invocation's sums: 4 rows x its first quad of streams, then (STREAM_QUADS 2) its second.
struct Sums {
    a: Sums4,
    b: Sums4,
}

// quad's 4 streams' products with the 4 rows at block bb, added to sums.
fn quad_products(sums: Sums4, bb: u32, r0: RowBlock, r1: RowBlock, r2: RowBlock, r3: RowBlock, d: vec4<f32>,
                 quad: u32) -> Sums4 {
    let streams = bb * TILE_STREAMS + 4u * quad;
    let x = input_scales[bb * (TILE_STREAMS / 4u) + quad];
    let y = input_sums[bb * (TILE_STREAMS / 4u) + quad];
    return Sums4(sums.s0 + rows_times_stream(r0, r1, r2, r3, d, streams, x.x, y.x),
                 sums.s1 + rows_times_stream(r0, r1, r2, r3, d, streams + 1u, x.y, y.y),
                 sums.s2 + rows_times_stream(r0, r1, r2, r3, d, streams + 2u, x.z, y.z),
                 sums.s3 + rows_times_stream(r0, r1, r2, r3, d, streams + 3u, x.w, y.w));
}

// The sums plus tile set `buffer`'s TILE_BLOCKS blocks, in block order.
fn step_products(sums: Sums, buffer: u32, row_group: u32, stream_group: u32) -> Sums {
    var out = sums;
    for (var bb = buffer * TILE_BLOCKS; bb < (buffer + 1u) * TILE_BLOCKS; bb++) {
        let rows = bb * TILE_ROWS + row_group;
        let r0 = row_block(rows);
        let r1 = row_block(rows + ROW_THREADS);
        let r2 = row_block(rows + 2u * ROW_THREADS);
        let r3 = row_block(rows + 3u * ROW_THREADS);
        let d = weight_scales[bb * ROW_THREADS + row_group];
        out.a = quad_products(out.a, bb, r0, r1, r2, r3, d, STREAM_QUADS * stream_group);
        if (STREAM_QUADS == 2u) {
            out.b = quad_products(out.b, bb, r0, r1, r2, r3, d, STREAM_QUADS * stream_group + 1u);
        }
    }
    return out;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let row_group = lane % ROW_THREADS;
    let stream_group = lane / ROW_THREADS;
    let first_row = workgroup.x * TILE_ROWS;
    let first_stream = workgroup.y * TILE_STREAMS;
    let zero = Sums4(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    var sums = Sums(zero, zero);

    let split = workgroup.z;
    let weight_entries = TILE_BLOCKS * TILE_ROWS;
    let input_entries = TILE_BLOCKS * TILE_STREAMS;
    let first_block = split * SPLIT_COLUMNS / BLOCK;
    let end_block = (split + 1u) * SPLIT_COLUMNS / BLOCK;
    // With at most one entry of each tile per invocation (the default tile), the next step's loads go out before
    // the current step is summed and are stored after it: the chain of steps no longer waits for memory at each
    // one. The same values, summed in the same order.
    let prefetch = weight_entries <= WORKGROUP_SIZE && input_entries <= WORKGROUP_SIZE;
    var loads = StepLoads(vec4<u32>(0u), 0.0, vec4<u32>(0u), vec4<u32>(0u), vec2<f32>(0.0));
    if (prefetch) {
        loads = load_step(lane, first_block, first_row, first_stream);
    }
    if (prefetch && TILE_BUFFERS == 2u) {
        // Two tile sets: step s is summed from set s % 2 while step s + 1 (loaded before the sums) is stored into
        // the other; one barrier a step.
        store_step(lane, loads, 0u);
        workgroupBarrier();
        var buffer = 0u;
        for (var b0 = first_block; b0 < end_block; b0 += TILE_BLOCKS) {
            let next = b0 + TILE_BLOCKS;
            if (next < end_block) {
                loads = load_step(lane, next, first_row, first_stream);
            }
            sums = step_products(sums, buffer, row_group, stream_group);
            if (next < end_block) {
                store_step(lane, loads, 1u - buffer);
            }
            workgroupBarrier();
            buffer = 1u - buffer;
        }
    } else {
        for (var b0 = first_block; b0 < end_block; b0 += TILE_BLOCKS) {
            if (prefetch) {
                store_step(lane, loads, 0u);
            } else {
                for (var i = lane; i < max(weight_entries, input_entries); i += WORKGROUP_SIZE) {
                    store_step(i, load_step(i, b0, first_row, first_stream), 0u);
                }
            }
            workgroupBarrier();
            let next = b0 + TILE_BLOCKS;
            if (prefetch && next < end_block) {
                loads = load_step(lane, next, first_row, first_stream);
            }
            sums = step_products(sums, 0u, row_group, stream_group);
            workgroupBarrier();
        }
    }

    let rows = first_row + row_group;
    let streams = first_stream + 4u * STREAM_QUADS * stream_group;
    store_quad(split, streams, rows, sums.a);
    if (STREAM_QUADS == 2u) {
        store_quad(split, streams + 4u, rows, sums.b);
    }
}

// A quad's sums: into the split's partials, or y.
fn store_quad(split: u32, streams: u32, rows: u32, sums: Sums4) {
    if (K_SPLITS > 1u) {
        store_split_rows(split, streams, rows, sums.s0);
        store_split_rows(split, streams + 1u, rows, sums.s1);
        store_split_rows(split, streams + 2u, rows, sums.s2);
        store_split_rows(split, streams + 3u, rows, sums.s3);
        return;
    }
    store_spread_rows(streams, rows, sums.s0);
    store_spread_rows(streams + 1u, rows, sums.s1);
    store_spread_rows(streams + 2u, rows, sums.s2);
    store_spread_rows(streams + 3u, rows, sums.s3);
}

@compute @workgroup_size(COMBINE_WORKGROUP)
fn combine(@builtin(global_invocation_id) id: vec3<u32>) {
    let row = id.x;
    let stream = id.y;
    if (row >= ROWS || stream >= BATCH) {
        return;
    }
    var total = 0.0;
    for (var split = 0u; split < K_SPLITS; split++) {
        total += partials[(split * BATCH + stream) * ROWS + row];
    }
    let index = stream * Y_STRIDE + Y_OFFSET + row;
    if (ACCUMULATE) {
        total += y[index];
    }
    y[index] = total;
}
