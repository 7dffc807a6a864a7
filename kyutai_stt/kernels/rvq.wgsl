// Split residual vector quantisation, one level per dispatch: nearest codebook entry by
// argmin_e (|c_e|^2 - 2 r . c_e) (= argmin |r - c_e|, ties -> lowest index), residual r -= c_code.
//
//   proj:      f32[GROUPS * DIM]        the latent's projection per group (group 0: levels [0, SEMANTIC),
//                                        group 1: levels [SEMANTIC, LEVELS)), e.g. Mimi's rvq_in output
//   codebooks: [LEVELS * BINS, DIM]     in the package layout of FORMAT (0 f32, 1 f16, 2 q8, 3 q4); entry e of
//                                        level l = row l * BINS + e
//   sqnorms:   f32[LEVELS * BINS]       |c|^2 of each entry as stored (dequantised)
//   partials:  [LEVELS, BLOCKS] x (score f32 bits, index u32)   each workgroup's best entry of a level
//   codes:     u32[CODES_OFFSET + LEVELS]
//
//   residuals: f32[LEVELS, DIM]          the residual each level quantises (scratch, rewritten every frame)
//
// Dispatch LEVEL (1 <= LEVEL < LEVELS): workgroup (b, job) scores entries [b * ENTRIES, (b + 1) * ENTRIES) of
//   level l = LEVEL (job 0) or l = 0 (job 1: dispatched only with LEVEL == 1, so that the two groups' first levels
//   run together). Its residual: r = proj[group] at the group's first level, else
//   r = residuals[l - 1] - codebook[l - 1][code_{l-1}], code_{l-1} resolved from level l - 1's partials by every
//   workgroup (cheap: BLOCKS pairs); workgroup 0 also writes codes[l - 1] and residuals[l] (read by dispatch l + 1).
//   The subtraction order is moshi's (residual = residual - quantized, level by level).
// LEVEL == LEVELS (the last dispatch): job 0 resolves level LEVELS - 1 and job 1 level SEMANTIC - 1 (the groups'
//   last levels) into codes.
//
// Bindings (group 0): 0 = codebooks (read, u32 words as vec4: `w` or `qs`), 1 = scales (read, u32: the `d`
//   stream; bind any buffer for f32/f16), 2 = sqnorms (read), 3 = proj (read, its f32s as vec4: a stream's 8 dims
//   are two loads), 4 = partials (read_write), 5 = codes (read_write, u32), 6 = residuals (read_write, vec4 as
//   proj), 7 = step (read, u32: the plan's step buffer).
// Dispatch: (BINS / ENTRIES, 2 if LEVEL == 1 else 1, STREAMS) for LEVEL = 1 .. LEVELS - 1, then (1, 2, STREAMS)
//   with LEVEL = LEVELS; workgroups of WORKGROUP_SIZE invocations.
// Streams (a plan of several, docs/plan.md): workgroup z is the stream s, with proj [s, 2 * DIM], partials
//   [s, LEVELS, BLOCKS], residuals [s, LEVELS, DIM] and its codes from s * CODES_STRIDE + CODES_OFFSET.
//   A stream sitting the frame out (step[ACTIVE_INDEX + s] == 0) keeps its codes: its workgroups do nothing.
//   ENTRIES = (WORKGROUP_SIZE / THREADS_PER_ENTRY) * ENTRIES_PER_THREAD; BLOCKS = BINS / ENTRIES.
// Constraints: DIM % 32 == 0, THREADS_PER_ENTRY <= DIM / 32, ENTRIES_PER_THREAD <= 4, BINS % ENTRIES == 0,
//   BLOCKS <= WORKGROUP_SIZE.

override FORMAT: u32;
override DIM: u32;
override BINS: u32;
override LEVELS: u32;
override SEMANTIC: u32 = 1u;
override LEVEL: u32 = 1u;
override CODES_OFFSET: u32 = 0u;
override CODES_STRIDE: u32 = CODES_OFFSET + LEVELS;
override WORKGROUP_SIZE: u32 = 256u;
override THREADS_PER_ENTRY: u32 = 8u;
override ENTRIES_PER_THREAD: u32 = 2u;
// Where stream 0's "active" flag sits in the step buffer; 0xFFFFFFFF: every stream takes every frame.
override ACTIVE_INDEX: u32 = 0xFFFFFFFFu;

const FORMAT_F32 = 0u;
const FORMAT_F16 = 1u;
const FORMAT_Q8 = 2u;
const NONE = 0xFFFFFFFFu;
const HIGHEST = 3.402823e38;

@group(0) @binding(0) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read> scales: array<u32>;
@group(0) @binding(2) var<storage, read> sqnorms: array<f32>;
@group(0) @binding(3) var<storage, read> proj: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> partials: array<vec2<u32>>;
@group(0) @binding(5) var<storage, read_write> codes: array<u32>;
@group(0) @binding(6) var<storage, read_write> residuals: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> step: array<u32>;

// The workgroup's stream (workgroup z), set first thing in main.
var<private> stream: u32;

var<workgroup> residual: array<f32, DIM>;
var<workgroup> partial_sums: array<f32, WORKGROUP_SIZE * ENTRIES_PER_THREAD>;
var<workgroup> best_scores: array<f32, WORKGROUP_SIZE>;
var<workgroup> best_indices: array<u32, WORKGROUP_SIZE>;

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

// Entry row [col, col + 8) as two vec4 (dequantised as unit_weights).
fn entry8(row: u32, col: u32) -> array<vec4<f32>, 2> {
    let index = row * DIM + col;
    if (FORMAT == FORMAT_F32) {
        return array(bitcast<vec4<f32>>(w[index / 4u]), bitcast<vec4<f32>>(w[index / 4u + 1u]));
    } else if (FORMAT == FORMAT_F16) {
        let words = w[index / 8u];
        return array(vec4<f32>(unpack2x16float(words.x), unpack2x16float(words.y)),
                     vec4<f32>(unpack2x16float(words.z), unpack2x16float(words.w)));
    }
    let block = index / 32u;
    let scale = unpack2x16float(scales[block / 2u])[block % 2u];
    if (FORMAT == FORMAT_Q8) {
        let words = w[index / 16u];
        let pair = select(words.xy, words.zw, (index / 8u) % 2u == 1u);
        return array(q8_low(pair.x) * scale, q8_low(pair.y) * scale);
    }
    let word = w[index / 32u][(index / 8u) % 4u];
    return array(q4_low(word) * scale, q4_high(word) * scale);
}

// Element d of entry `row`, dequantised alone.
fn entry_element(row: u32, d: u32) -> f32 {
    let index = row * DIM + d;
    if (FORMAT == FORMAT_F32) {
        return bitcast<f32>(w[index / 4u][index % 4u]);
    } else if (FORMAT == FORMAT_F16) {
        return unpack2x16float(w[index / 8u][(index / 2u) % 4u])[index % 2u];
    }
    let block = index / 32u;
    let scale = unpack2x16float(scales[block / 2u])[block % 2u];
    if (FORMAT == FORMAT_Q8) {
        let word = w[index / 16u][(index / 4u) % 4u];
        return f32(bitcast<i32>(word << (24u - 8u * (index % 4u))) >> 24u) * scale;
    }
    let word = w[index / 32u][(index / 8u) % 4u];
    return (f32((word >> (4u * (index % 8u))) & 0xFu) - 8.0) * scale;
}

// sums[e] + chunk c of entry e's unit . residual[col + 8 c .. + 8) (col % 32 == 0), for the thread's entries.
fn chunk_scores(c: u32, col: u32, e0: array<vec4<f32>, 8>, e1: array<vec4<f32>, 8>, e2: array<vec4<f32>, 8>,
                e3: array<vec4<f32>, 8>, sums: vec4<f32>) -> vec4<f32> {
    let at = col + 8u * c;
    let ra = vec4<f32>(residual[at], residual[at + 1u], residual[at + 2u], residual[at + 3u]);
    let rb = vec4<f32>(residual[at + 4u], residual[at + 5u], residual[at + 6u], residual[at + 7u]);
    var result = sums;
    result.x += dot(e0[2u * c], ra) + dot(e0[2u * c + 1u], rb);
    if (ENTRIES_PER_THREAD > 1u) {
        result.y += dot(e1[2u * c], ra) + dot(e1[2u * c + 1u], rb);
    }
    if (ENTRIES_PER_THREAD > 2u) {
        result.z += dot(e2[2u * c], ra) + dot(e2[2u * c + 1u], rb);
    }
    if (ENTRIES_PER_THREAD > 3u) {
        result.w += dot(e3[2u * c], ra) + dot(e3[2u * c + 1u], rb);
    }
    return result;
}

// The unit at column col (a multiple of 32) of entries row .. row + ENTRIES_PER_THREAD - 1, loaded in one round.
fn entries_unit(row: u32, col: u32) -> array<array<vec4<f32>, 8>, 4> {
    var units: array<array<vec4<f32>, 8>, 4>;
    units[0] = unit_weights(row * DIM + col);
    if (ENTRIES_PER_THREAD > 1u) {
        units[1] = unit_weights((row + 1u) * DIM + col);
    }
    if (ENTRIES_PER_THREAD > 2u) {
        units[2] = unit_weights((row + 2u) * DIM + col);
    }
    if (ENTRIES_PER_THREAD > 3u) {
        units[3] = unit_weights((row + 3u) * DIM + col);
    }
    return units;
}

// sums + each entry's unit . residual[col .. col + 32), its chunks added in order.
fn unit_scores(col: u32, units: array<array<vec4<f32>, 8>, 4>, sums: vec4<f32>) -> vec4<f32> {
    var result = chunk_scores(0u, col, units[0], units[1], units[2], units[3], sums);
    result = chunk_scores(1u, col, units[0], units[1], units[2], units[3], result);
    result = chunk_scores(2u, col, units[0], units[1], units[2], units[3], result);
    return chunk_scores(3u, col, units[0], units[1], units[2], units[3], result);
}

fn beats(score: f32, index: u32, best_score: f32, best_index: u32) -> bool {
    return score < best_score || (score == best_score && index < best_index);
}

// Whether stream s takes this frame (its "active" step flag; every stream when the plan has none).
fn stream_active(s: u32) -> bool {
    return ACTIVE_INDEX == NONE || step[ACTIVE_INDEX + s] != 0u;
}

// The code of `level`: the best of its BLOCKS partial results. The partials are loaded in parallel into workgroup
// memory, then every invocation scans them (call in uniform control flow: it has a barrier).
fn resolve_level(level: u32, lane: u32) -> u32 {
    let blocks = BINS / ((WORKGROUP_SIZE / THREADS_PER_ENTRY) * ENTRIES_PER_THREAD);
    for (var b = lane; b < blocks; b += WORKGROUP_SIZE) {
        let p = partials[(stream * LEVELS + level) * blocks + b];
        best_scores[b] = bitcast<f32>(p.x);
        best_indices[b] = p.y;
    }
    workgroupBarrier();
    var best_score = HIGHEST;
    var best_index = NONE;
    for (var b = 0u; b < min(blocks, WORKGROUP_SIZE); b++) {
        if (beats(best_scores[b], best_indices[b], best_score, best_index)) {
            best_score = best_scores[b];
            best_index = best_indices[b];
        }
    }
    workgroupBarrier();   // best_scores[] is reused
    return select(best_index, 0u, best_index == NONE);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    stream = workgroup.z;
    // workgroup.z, not the private `stream`: uniform to the uniformity analysis, so the barriers below stay valid.
    if (!stream_active(workgroup.z)) {
        return;      // the whole workgroup: its stream sits this frame out
    }
    let codes_at = stream * CODES_STRIDE + CODES_OFFSET;
    if (LEVEL == LEVELS) {
        let last = select(LEVELS - 1u, SEMANTIC - 1u, workgroup.y == 1u);
        let code = resolve_level(last, lane);
        if (lane == 0u) {
            codes[codes_at + last] = code;
        }
        return;
    }
    let level = select(LEVEL, 0u, workgroup.y == 1u);
    let group = select(1u, 0u, level < SEMANTIC);
    let group_start = select(SEMANTIC, 0u, level < SEMANTIC);

    // Scores: a team of THREADS_PER_ENTRY invocations per ENTRIES_PER_THREAD entries, splitting DIM in units of 32.
    let teams = WORKGROUP_SIZE / THREADS_PER_ENTRY;
    let team = lane / THREADS_PER_ENTRY;
    let member = lane % THREADS_PER_ENTRY;
    let first_entry = (workgroup.x * teams + team) * ENTRIES_PER_THREAD;
    let row = level * BINS + first_entry;
    // With one unit per member (Mimi: 8 units, teams of 8), its entries' units and squared norms are loaded first,
    // so that their latency overlaps the previous level's resolution and the residual (none depends on them).
    let one_unit = DIM / 32u == THREADS_PER_ENTRY;
    let first_col = member * 32u;
    var early: array<array<vec4<f32>, 8>, 4>;
    var norms = vec4<f32>(0.0);
    if (one_unit) {
        early = entries_unit(row, first_col);
    }
    if (member == 0u) {     // the team leader's, for its entries' scores
        norms.x = sqnorms[row];
        if (ENTRIES_PER_THREAD > 1u) {
            norms.y = sqnorms[row + 1u];
        }
        if (ENTRIES_PER_THREAD > 2u) {
            norms.z = sqnorms[row + 2u];
        }
        if (ENTRIES_PER_THREAD > 3u) {
            norms.w = sqnorms[row + 3u];
        }
    }

    // The residual of this level.
    var previous = NONE;
    if (level > group_start) {
        previous = resolve_level(level - 1u, lane);
        if (workgroup.x == 0u && lane == 0u) {
            codes[codes_at + level - 1u] = previous;
        }
    }
    for (var d = lane; d < DIM; d += WORKGROUP_SIZE) {
        var r: f32;
        if (level == group_start) {
            r = proj[((stream * 2u + group) * DIM + d) / 4u][d % 4u];
        } else {
            r = residuals[((stream * LEVELS + level - 1u) * DIM + d) / 4u][d % 4u]
                - entry_element((level - 1u) * BINS + previous, d);
        }
        residual[d] = r;
        if (workgroup.x == 0u) {
            residuals[((stream * LEVELS + level) * DIM + d) / 4u][d % 4u] = r;
        }
    }
    workgroupBarrier();

    // Each unit's entries loaded in one round, before any is used (docs/architecture.md); columns added in order.
    var sums = vec4<f32>(0.0);     // [entry]
    if (one_unit) {
        sums = unit_scores(first_col, early, sums);
    }
    for (var unit = select(member, DIM / 32u, one_unit); unit < DIM / 32u; unit += THREADS_PER_ENTRY) {
        sums = unit_scores(unit * 32u, entries_unit(row, unit * 32u), sums);
    }
    for (var e = 0u; e < ENTRIES_PER_THREAD; e++) {
        partial_sums[e * WORKGROUP_SIZE + lane] = sums[e];
    }
    workgroupBarrier();
    var active_count = THREADS_PER_ENTRY;
    while (active_count > 1u) {
        let upper_half_start = (active_count + 1u) / 2u;
        if (member + upper_half_start < active_count) {
            for (var e = 0u; e < ENTRIES_PER_THREAD; e++) {
                let index = e * WORKGROUP_SIZE + lane;
                partial_sums[index] += partial_sums[index + upper_half_start];
            }
        }
        workgroupBarrier();
        active_count = upper_half_start;
    }

    // The workgroup's best entry: each team leader offers its entries, then a tree reduction.
    var best_score = HIGHEST;
    var best_index = NONE;
    if (member == 0u) {
        for (var e = 0u; e < ENTRIES_PER_THREAD; e++) {
            let entry = first_entry + e;
            let score = norms[e] - 2.0 * partial_sums[e * WORKGROUP_SIZE + lane];
            if (beats(score, entry, best_score, best_index)) {
                best_score = score;
                best_index = entry;
            }
        }
    }
    best_scores[lane] = best_score;
    best_indices[lane] = best_index;
    workgroupBarrier();
    var count = WORKGROUP_SIZE;
    while (count > 1u) {
        let upper_half_start = (count + 1u) / 2u;
        if (lane + upper_half_start < count) {
            let other = lane + upper_half_start;
            if (beats(best_scores[other], best_indices[other], best_scores[lane], best_indices[lane])) {
                best_scores[lane] = best_scores[other];
                best_indices[lane] = best_indices[other];
            }
        }
        workgroupBarrier();
        count = upper_half_start;
    }
    if (lane == 0u) {
        let blocks = BINS / (teams * ENTRIES_PER_THREAD);
        partials[(stream * LEVELS + level) * blocks + workgroup.x] = vec2<u32>(bitcast<u32>(best_scores[0]), best_indices[0]);
    }
}

// ---- `tiled`: one level for TILE entries x TILE streams per workgroup (plans of many streams, "gpu-many") --------
// The same partials as `main` with ENTRIES = TILE (the final resolve stays `main`'s, with WORKGROUP_SIZE /
// THREADS_PER_ENTRY * ENTRIES_PER_THREAD = TILE): a workgroup decodes each slice of TILE_DIMS dims of its TILE
// entries once, and of its TILE streams' residuals, into workgroup memory, and each invocation sums 4 entries x
// 4 streams over the dims in order, so a stream's scores depend neither on STREAMS nor on the other streams (the
// order differs from `main`'s: they agree to f32 rounding).
// Dispatch LEVEL (1 <= LEVEL < LEVELS): (BINS / TILE, ceil(STREAMS / TILE), 2 if LEVEL == 1 else 1) workgroups of
//   WORKGROUP_SIZE = (TILE / 4)^2 = 256 invocations; workgroup z is the job (1: level 0, as `main`'s y). Workgroup
//   memory: two tiles of TILE_DIMS x TILE floats, 16 KiB (the portable limit).
override STREAMS: u32 = 1u;
const TILE = 64u;              // entries and streams per workgroup
const TILE_GROUPS = 16u;       // TILE / 4: invocations along each side
const TILE_DIMS = 32u;         // dims per slice

// entry_tile[d * TILE_GROUPS + g] = entries 4 g .. + 3 of the block at dim d0 + d; residual_tile likewise for
// streams. Both are scratch for the previous codes and the final argmin too.
var<workgroup> entry_tile: array<vec4<f32>, TILE_DIMS * TILE_GROUPS>;
var<workgroup> residual_tile: array<vec4<f32>, TILE_DIMS * TILE_GROUPS>;

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

// `tiled`: the best of entries first .. first + 3 (scores) for stream s of the tile, into the [stream][entry group]
// scratch (entry_tile its score, residual_tile its index; ties go to the lowest index).
fn store_best_of_four(s: u32, entry_group: u32, scores: vec4<f32>, first: u32) {
    var best_score = scores.x;
    var best_index = first;
    for (var i = 1u; i < 4u; i++) {
        if (beats(scores[i], first + i, best_score, best_index)) {
            best_score = scores[i];
            best_index = first + i;
        }
    }
    let slot = s * TILE_GROUPS + entry_group;
    entry_tile[slot / 4u][slot % 4u] = best_score;
    residual_tile[slot / 4u][slot % 4u] = bitcast<f32>(best_index);
}

// `tiled`: my_stream's residual at dims d .. d + 7 (d % 8 == 0): the group's projection at its first level, else the
// previous level's residual minus the previous code's entry (moshi's order; entry8 dequantises as entry_element).
fn residual8(level: u32, group: u32, group_start: u32, my_stream: u32, previous: u32, d: u32) -> array<vec4<f32>, 2> {
    if (level == group_start) {
        let at = (my_stream * 2u + group) * DIM + d;
        return array(proj[at / 4u], proj[at / 4u + 1u]);
    }
    let at = (my_stream * LEVELS + level - 1u) * DIM + d;
    let entry = entry8((level - 1u) * BINS + previous, d);
    return array(residuals[at / 4u] - entry[0], residuals[at / 4u + 1u] - entry[1]);
}

// `tiled`: the better of (score bits, index) pairs a and b (ties go to the lowest index).
fn better(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    return select(a, b, beats(bitcast<f32>(b.x), b.y, bitcast<f32>(a.x), a.y));
}

// `tiled`: the best (score bits, index) of partials b, b + 4, .. (b < blocks) of one stream's level, at `at`. Eight
// loads a round, straight-line, before their comparisons (past the end: the last partial again, which never beats
// itself); any order of comparisons gives the same best.
fn best_partial(at: u32, b: u32, blocks: u32) -> vec2<u32> {
    var best = vec2<u32>(bitcast<u32>(HIGHEST), NONE);
    for (var b0 = b; b0 < blocks; b0 += 32u) {
        let p0 = partials[at + b0];
        let p1 = partials[at + min(b0 + 4u, blocks - 1u)];
        let p2 = partials[at + min(b0 + 8u, blocks - 1u)];
        let p3 = partials[at + min(b0 + 12u, blocks - 1u)];
        let p4 = partials[at + min(b0 + 16u, blocks - 1u)];
        let p5 = partials[at + min(b0 + 20u, blocks - 1u)];
        let p6 = partials[at + min(b0 + 24u, blocks - 1u)];
        let p7 = partials[at + min(b0 + 28u, blocks - 1u)];
        best = better(better(better(better(better(better(better(better(best, p0), p1), p2), p3), p4), p5), p6), p7);
    }
    return best;
}

// `tiled`: dims d .. d + 7 of one stream (residual) and one entry (entry) into element c of the tiles' vec4s at
// `slot`, straight-line (a loop indexing the registers may put them in memory).
fn store_slice(d: u32, slot: u32, c: u32, residual: array<vec4<f32>, 2>, entry: array<vec4<f32>, 2>) {
    residual_tile[d * TILE_GROUPS + slot][c] = residual[0].x;
    residual_tile[(d + 1u) * TILE_GROUPS + slot][c] = residual[0].y;
    residual_tile[(d + 2u) * TILE_GROUPS + slot][c] = residual[0].z;
    residual_tile[(d + 3u) * TILE_GROUPS + slot][c] = residual[0].w;
    residual_tile[(d + 4u) * TILE_GROUPS + slot][c] = residual[1].x;
    residual_tile[(d + 5u) * TILE_GROUPS + slot][c] = residual[1].y;
    residual_tile[(d + 6u) * TILE_GROUPS + slot][c] = residual[1].z;
    residual_tile[(d + 7u) * TILE_GROUPS + slot][c] = residual[1].w;
    entry_tile[d * TILE_GROUPS + slot][c] = entry[0].x;
    entry_tile[(d + 1u) * TILE_GROUPS + slot][c] = entry[0].y;
    entry_tile[(d + 2u) * TILE_GROUPS + slot][c] = entry[0].z;
    entry_tile[(d + 3u) * TILE_GROUPS + slot][c] = entry[0].w;
    entry_tile[(d + 4u) * TILE_GROUPS + slot][c] = entry[1].x;
    entry_tile[(d + 5u) * TILE_GROUPS + slot][c] = entry[1].y;
    entry_tile[(d + 6u) * TILE_GROUPS + slot][c] = entry[1].z;
    entry_tile[(d + 7u) * TILE_GROUPS + slot][c] = entry[1].w;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn tiled(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let level = select(LEVEL, 0u, workgroup.z == 1u);
    let group = select(1u, 0u, level < SEMANTIC);
    let group_start = select(SEMANTIC, 0u, level < SEMANTIC);
    let blocks = BINS / TILE;
    let first_entry = workgroup.x * TILE;
    let first_stream = workgroup.y * TILE;
    // Loads: 4 invocations per stream (residuals) and per entry (entries), 8 dims of each slice each.
    let local = lane / 4u;
    let quarter = lane % 4u;
    let my_stream = min(first_stream + local, STREAMS - 1u);
    let entry_group = lane % TILE_GROUPS;     // entries 4 entry_group .. + 3 of the block
    let stream_group = lane / TILE_GROUPS;    // streams 4 stream_group .. + 3
    let first = first_entry + 4u * entry_group;
    // The first slice's entries and the squared norms do not depend on the previous level: loaded before its
    // resolution, so that their latency overlaps it.
    var entries = entry8(level * BINS + first_entry + local, 8u * quarter);
    let norms = vec4<f32>(sqnorms[level * BINS + first], sqnorms[level * BINS + first + 1u],
                          sqnorms[level * BINS + first + 2u], sqnorms[level * BINS + first + 3u]);

    // The previous level's code of my_stream: its 4 invocations split the BLOCKS partials, then meet.
    var previous = 0u;
    if (level > group_start) {
        let mine = best_partial((my_stream * LEVELS + level - 1u) * blocks, quarter, blocks);
        entry_tile[lane] = vec4<f32>(bitcast<vec2<f32>>(mine), 0.0, 0.0);
        workgroupBarrier();
        var best = vec2<u32>(bitcast<u32>(HIGHEST), NONE);
        for (var i = 0u; i < 4u; i++) {
            best = better(best, bitcast<vec2<u32>>(entry_tile[4u * local + i].xy));
        }
        previous = select(best.y, 0u, best.y == NONE);
        workgroupBarrier();
        if (workgroup.x == 0u && quarter == 0u && first_stream + local < STREAMS && stream_active(my_stream)) {
            codes[my_stream * CODES_STRIDE + CODES_OFFSET + level - 1u] = previous;
        }
    }

    // s_i: the entries' dot products with stream 4 stream_group + i. Each slice's operands are loaded into registers
    // while the slice before is summed (a chain of DIM / TILE_DIMS slices that waits for memory once); the same
    // values, stored and summed in the same order.
    var block = Block4x4(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    var r = residual8(level, group, group_start, my_stream, previous, 8u * quarter);
    for (var d0 = 0u; d0 < DIM; d0 += TILE_DIMS) {
        store_slice(8u * quarter, local / 4u, local % 4u, r, entries);
        if (workgroup.x == 0u && first_stream + local < STREAMS) {
            let at = ((my_stream * LEVELS + level) * DIM + d0 + 8u * quarter) / 4u;
            residuals[at] = r[0];
            residuals[at + 1u] = r[1];
        }
        workgroupBarrier();
        let next = d0 + TILE_DIMS;
        if (next < DIM) {
            entries = entry8(level * BINS + first_entry + local, next + 8u * quarter);
            r = residual8(level, group, group_start, my_stream, previous, next + 8u * quarter);
        }
        // Four dims' operands loaded from workgroup memory before their products (as conv1d.wgsl `tiled`: a
        // workgroup per SM leaves the loads' latency between every two dims otherwise). The same products, in order.
        for (var d = 0u; d < TILE_DIMS; d += 4u) {
            let e0 = entry_tile[d * TILE_GROUPS + entry_group];
            let e1 = entry_tile[(d + 1u) * TILE_GROUPS + entry_group];
            let e2 = entry_tile[(d + 2u) * TILE_GROUPS + entry_group];
            let e3 = entry_tile[(d + 3u) * TILE_GROUPS + entry_group];
            let r0 = residual_tile[d * TILE_GROUPS + stream_group];
            let r1 = residual_tile[(d + 1u) * TILE_GROUPS + stream_group];
            let r2 = residual_tile[(d + 2u) * TILE_GROUPS + stream_group];
            let r3 = residual_tile[(d + 3u) * TILE_GROUPS + stream_group];
            block = four_steps(block, e0, e1, e2, e3, r0, r1, r2, r3);
        }
        workgroupBarrier();
    }

    // Each invocation's best of its 4 entries for each of its 4 streams, then each stream's best of the
    // TILE_GROUPS entry groups (scanned in entry order: ties go to the lowest index).
    // Four calls rather than a loop over an array of the four sums: 0.4-0.7 % faster (BENCHMARKS.md).
    store_best_of_four(4u * stream_group, entry_group, norms - 2.0 * block.s0, first);
    store_best_of_four(4u * stream_group + 1u, entry_group, norms - 2.0 * block.s1, first);
    store_best_of_four(4u * stream_group + 2u, entry_group, norms - 2.0 * block.s2, first);
    store_best_of_four(4u * stream_group + 3u, entry_group, norms - 2.0 * block.s3, first);
    workgroupBarrier();
    if (lane < TILE && first_stream + lane < STREAMS) {
        var best_score = HIGHEST;
        var best_index = NONE;
        for (var g = 0u; g < TILE_GROUPS; g++) {
            let slot = lane * TILE_GROUPS + g;
            let score = entry_tile[slot / 4u][slot % 4u];
            let index = bitcast<u32>(residual_tile[slot / 4u][slot % 4u]);
            if (beats(score, index, best_score, best_index)) {
                best_score = score;
                best_index = index;
            }
        }
        partials[((first_stream + lane) * LEVELS + level) * blocks + workgroup.x] =
            vec2<u32>(bitcast<u32>(best_score), best_index);
    }
}
