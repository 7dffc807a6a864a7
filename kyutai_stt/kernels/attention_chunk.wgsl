// The attention half of a pre-norm transformer layer for a chunk of STEPS consecutive steps, up to the output
// projection: LayerNorm, the QKV projection of one head, interleaved RoPE, the ring KV cache and causal attention,
// as moshi's streaming StreamingTransformerLayer computes them (all the chunk's keys enter the ring before any
// query attends).
//
//   x:       [STEPS, D] f32                 the residual stream (D = HEADS * HEAD_DIM)
//   norm:    f32[2 * D]                     LayerNorm weight, then bias; eps EPS, biased variance (torch)
//   W:       [3 * D, D] in the package layout of FORMAT (0 f32, 1 f16, 2 q8, 3 q4): rows q | k | v, head-major
//   h_j = LayerNorm(x_j);  q_j = W[0:D] h_j,  k_j = W[D:2D] h_j,  v_j = W[2D:3D] h_j   (no biases)
//   base = frame_values[POSITION_INDEX]: the absolute position of step 0 of the chunk; step j is at p_j = base + j
//   freqs:   f32[HEAD_DIM / 2]              freq_i = max_period^(-2i/HEAD_DIM) as moshi computes it in fp32
//                                            (lm_reference.rope_frequencies: a const buffer of the plan)
//   rope(v, p)[2i], [2i+1] = v[2i] c - v[2i+1] s, v[2i] s + v[2i+1] c,  (c, s) = cos/sin(f32(p) * freq_i)
//   kv:      [2, HEADS, RING, HEAD_DIM] f32  keys (rotated), then values; position p lives in slot p % RING
//   kv[0, h, p_j % RING] = rope(k_j,h, p_j);  kv[1, h, p_j % RING] = v_j,h      for every step j
//   query t attends to positions s in [lo_t, p_t], lo_t = max(0, p_t - CONTEXT + 1, base + STEPS - RING):
//     out[t, h*HEAD_DIM + d] = sum_s softmax_s(rope(q_t,h, p_t) . key_s / sqrt(HEAD_DIM)) value_s[d]
//   (the third bound: the chunk's later keys overwrote the oldest slots. moshi's Mimi has RING = CONTEXT = 250
//   and STEPS = 2, so from step 250 on the first query of each chunk sees 249 keys where an offline pass sees 250:
//   docs/reference.md, quirk 1. RING = CONTEXT + STEPS - 1 gives the exact sliding window of the offline pass.)
//
// Workgroup (h, t) normalises x_0 .. x_t, projects q_t and k_j, v_j (j <= t) of head h (one row per invocation,
// two 32-column units of weights a round of loads), writes step t's key and value into the ring and attends. Keys
// and values of the chunk's steps come from workgroup memory, older ones from the ring: the slots written by this
// dispatch ((base + j) % RING, j < STEPS) are never among the older positions read ([lo, base), with
// lo >= base + STEPS - RING), so no workgroup reads what another writes. Workgroup t recomputes the keys and
// values of steps < t (STEPS is 2: 4/3 of the projection work, one dispatch fewer per layer).
//
// Bindings (group 0): 0 = W (read, u32 words as vec4: `w` or `qs`), 1 = scales (read, u32: `d`; bind any buffer
//   for f32/f16), 2 = x (read), 3 = norm (read), 4 = frame_values (read, u32: the step buffer), 5 = freqs (read),
//   6 = kv (read_write), 7 = out (read_write, [STEPS, D]).
// Entry `given_qkv` (plans of many streams: models/mimi.py "gpu-many"): the same from q, k, v computed beforehand
//   for all streams at once (conv1d.wgsl's `tiled` product: LayerNorm, then W, each weight read once per 64
//   stream-steps, where `main` reads the head's rows once per workgroup): 8 = qkv (read, [STEPS, 3 D] f32, q | k | v
//   as W's rows) in place of 0-3; 4-7 as above.
// Streams (a plan of several, docs/plan.md): workgroup z is the stream s, with x [s, ROWS, D], qkv [s, ROWS, 3 D], kv
//   [s, 2, HEADS, RING, HEAD_DIM], out [s, ROWS, D] and base = frame_values[POSITION_INDEX + s] + FIRST_ROW.
// Several frames a dispatch (models/mimi.py, files): x, qkv and out hold ROWS = frames * STEPS rows per stream;
//   this dispatch attends the chunk of rows FIRST_ROW .. FIRST_ROW + STEPS - 1 (step j is row FIRST_ROW + j, at
//   position base + j), one dispatch per frame in frame order, so the ring is written and read exactly as frame by
//   frame. ROWS = STEPS and FIRST_ROW = 0 by default: one frame.
// Dispatch: (HEADS, STEPS, STREAMS) workgroups of WORKGROUP_SIZE invocations. Scores: one slot per invocation per pass,
//   its key read as HEAD_DIM / 4 independent 16-byte loads; values: invocation i accumulates elements
//   4 (i % (HEAD_DIM / 4)) .. + 3 over the slots j = i / (HEAD_DIM / 4) (mod GROUPS), then the GROUPS partial sums
//   are added in workgroup memory. (Short chains of independent loads: the kernel is latency-bound otherwise.)
// Constraints: HEAD_DIM % 4 == 0, D % 32 == 0, STEPS <= MAX_STEPS, RING >= STEPS, CONTEXT >= 1,
//   FIRST_ROW + STEPS <= ROWS.

override FORMAT: u32;
override HEADS: u32;
override HEAD_DIM: u32;
override STEPS: u32 = 2u;
override RING: u32;
override CONTEXT: u32 = RING;
override POSITION_INDEX: u32 = 0u;
override ROWS: u32 = STEPS;
override FIRST_ROW: u32 = 0u;
override EPS: f32 = 1e-5;
override WORKGROUP_SIZE: u32 = 128u;

const FORMAT_F32 = 0u;
const FORMAT_F16 = 1u;
const FORMAT_Q8 = 2u;
const LOWEST = -3.402823e38;
// 2 pi in seven parts (Cody-Waite, docs/mimi.md "RoPE angles"): parts 0-5 have at most 3 significant bits, so
// turns * part is exact for |turns| < 2^21, i.e. positions below 2^23 (the LM's 12.5 Hz: 186 h; Mimi's 25 Hz: 93 h),
// and each subtraction is exact while the remainder is large; part 6 is the f32 rest. The reduced angle is then
// within 1.3e-7 of the exact (f32 angle) mod 2 pi (tests/test_rope.py emulates this in numpy). The angle itself is
// f32(position) * freq rounded to f32, exactly as moshi computes it: reducing the position first would change that
// rounding (up to 0.06 rad at 24 h) and no longer match the official model.
const TWO_PI_0 = 6.0;
const TWO_PI_1 = 0.3125;
const TWO_PI_2 = -0.03125;
const TWO_PI_3 = 0.001953125;
const TWO_PI_4 = -1.9073486328125e-05;
const TWO_PI_5 = 1.1920928955078125e-06;
const TWO_PI_6 = 6.357301884918343e-08;
const INVERSE_TWO_PI = 0.15915493667125702;
const MAX_STEPS = 4u;

override D: u32 = HEADS * HEAD_DIM;
// Slot groups of the value pass.
override GROUPS: u32 = max(1u, WORKGROUP_SIZE / (HEAD_DIM / 4u));

@group(0) @binding(0) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read> scales: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> norm: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> frame_values: array<u32>;
@group(0) @binding(5) var<storage, read> freqs: array<f32>;
@group(0) @binding(6) var<storage, read_write> kv: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;
@group(0) @binding(8) var<storage, read> qkv: array<f32>;

var<workgroup> normalized: array<vec4<f32>, STEPS * D / 4u>;           // LayerNorm(x_j), j <= t
var<workgroup> projected: array<f32, (1u + 2u * STEPS) * HEAD_DIM>;    // q_t | k_0 .. k_{STEPS-1} | v_0 ..
var<workgroup> chunk_keys: array<vec4<f32>, HEAD_DIM / 4u * MAX_STEPS>; // rope(k_j), j <= t
var<workgroup> q_rotated: array<vec4<f32>, HEAD_DIM / 4u>;
var<workgroup> weights: array<f32, RING>;
var<workgroup> reduction: array<f32, WORKGROUP_SIZE>;
var<workgroup> partial_values: array<vec4<f32>, GROUPS * HEAD_DIM / 4u>;

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

fn cos_sin(angle: f32) -> vec2<f32> {
    let turns = round(angle * INVERSE_TWO_PI);
    let reduced = ((((((angle - turns * TWO_PI_0) - turns * TWO_PI_1) - turns * TWO_PI_2) - turns * TWO_PI_3)
                   - turns * TWO_PI_4) - turns * TWO_PI_5) - turns * TWO_PI_6;
    return vec2<f32>(cos(reduced), sin(reduced));
}

fn rotate(pair: vec2<f32>, rotation: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(pair.x * rotation.x - pair.y * rotation.y, pair.x * rotation.y + pair.y * rotation.x);
}

fn reduce_workgroup(value: f32, take_max: bool, lane: u32) -> f32 {
    reduction[lane] = value;
    workgroupBarrier();
    var active_count = WORKGROUP_SIZE;
    while (active_count > 1u) {
        let upper_half_start = (active_count + 1u) / 2u;
        if (lane + upper_half_start < active_count) {
            let other = reduction[lane + upper_half_start];
            reduction[lane] = select(reduction[lane] + other, max(reduction[lane], other), take_max);
        }
        workgroupBarrier();
        active_count = upper_half_start;
    }
    let result = reduction[0];
    workgroupBarrier();
    return result;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let head = workgroup.x;
    let t = workgroup.y;
    let stream = workgroup.z;
    let x_at = (stream * ROWS + FIRST_ROW) * D / 4u;  // this chunk's x (vec4)

    // 1. LayerNorm of x_0 .. x_t (two-pass: mean, then the mean of squared deviations).
    for (var j = 0u; j <= t; j++) {
        var sum = 0.0;
        for (var q = lane; q < D / 4u; q += WORKGROUP_SIZE) {
            let v = x[x_at + j * D / 4u + q];
            sum += v.x + v.y + v.z + v.w;
        }
        let mean = reduce_workgroup(sum, false, lane) / f32(D);
        var squares = 0.0;
        for (var q = lane; q < D / 4u; q += WORKGROUP_SIZE) {
            let v = x[x_at + j * D / 4u + q] - mean;
            squares += dot(v, v);
        }
        let inverse_std = inverseSqrt(reduce_workgroup(squares, false, lane) / f32(D) + EPS);
        for (var q = lane; q < D / 4u; q += WORKGROUP_SIZE) {
            normalized[j * D / 4u + q] = (x[x_at + j * D / 4u + q] - mean) * inverse_std * norm[q] +
                norm[D / 4u + q];
        }
    }
    workgroupBarrier();

    // 2. This head's q_t and k_j, v_j for j <= t: one weight row per invocation, all its steps at once.
    for (var r = lane; r < 3u * HEAD_DIM; r += WORKGROUP_SIZE) {
        let part = r / HEAD_DIM;                          // 0 q, 1 k, 2 v
        let row = part * D + head * HEAD_DIM + r % HEAD_DIM;
        let first_step = select(0u, t, part == 0u);
        // (An explicit initializer: Naga zero-initialises a declaration without one only once per invocation,
        // not each time the loop body runs.)
        var sums = array<f32, MAX_STEPS>(0.0, 0.0, 0.0, 0.0);
        // Two 32-column units a round (D % 32 == 0: the second may be past the end), their loads issued before
        // any is used: the driver does not overlap the loads of successive loop iterations (docs/architecture.md).
        // The columns are added in order.
        for (var col = 0u; col < D; col += 64u) {
            let w = unit_weights(row * D + col);
            let v = unit_weights(row * D + min(col + 32u, D - 32u));
            for (var j = first_step; j <= t; j++) {
                let at = (j * D + col) / 4u;
                sums[j] += dot(w[0], normalized[at]) + dot(w[1], normalized[at + 1u]);
                sums[j] += dot(w[2], normalized[at + 2u]) + dot(w[3], normalized[at + 3u]);
                sums[j] += dot(w[4], normalized[at + 4u]) + dot(w[5], normalized[at + 5u]);
                sums[j] += dot(w[6], normalized[at + 6u]) + dot(w[7], normalized[at + 7u]);
                if (col + 32u < D) {
                    sums[j] += dot(v[0], normalized[at + 8u]) + dot(v[1], normalized[at + 9u]);
                    sums[j] += dot(v[2], normalized[at + 10u]) + dot(v[3], normalized[at + 11u]);
                    sums[j] += dot(v[4], normalized[at + 12u]) + dot(v[5], normalized[at + 13u]);
                    sums[j] += dot(v[6], normalized[at + 14u]) + dot(v[7], normalized[at + 15u]);
                }
            }
        }
        if (part == 0u) {
            projected[r] = sums[t];
        } else {
            for (var j = 0u; j <= t; j++) {
                projected[HEAD_DIM + ((part - 1u) * STEPS + j) * HEAD_DIM + r % HEAD_DIM] = sums[j];
            }
        }
    }
    workgroupBarrier();
    attend(head, t, stream, lane);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn given_qkv(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let head = workgroup.x;
    let t = workgroup.y;
    let stream = workgroup.z;
    // This head's q_t and k_j, v_j for j <= t, laid out in `projected` as `main` computes them.
    for (var r = lane; r < 3u * HEAD_DIM; r += WORKGROUP_SIZE) {
        let part = r / HEAD_DIM;                          // 0 q, 1 k, 2 v
        let column = part * D + head * HEAD_DIM + r % HEAD_DIM;
        if (part == 0u) {
            projected[r] = qkv[(stream * ROWS + FIRST_ROW + t) * 3u * D + column];
        } else {
            for (var j = 0u; j <= t; j++) {
                projected[HEAD_DIM + ((part - 1u) * STEPS + j) * HEAD_DIM + r % HEAD_DIM] =
                    qkv[(stream * ROWS + FIRST_ROW + j) * 3u * D + column];
            }
        }
    }
    workgroupBarrier();
    attend(head, t, stream, lane);
}

// Vec4 `quad` of the value of window slot j (absolute step lo + j): from the ring before the chunk, else from this
// chunk's projections.
fn slot_value(values: u32, quad: u32, lo: u32, base: u32, j: u32) -> vec4<f32> {
    let s = lo + j;
    if (s < base) {
        return kv[values + (s % RING) * (HEAD_DIM / 4u) + quad];
    }
    let v_at = HEAD_DIM + (STEPS + s - base) * HEAD_DIM + 4u * quad;
    return vec4<f32>(projected[v_at], projected[v_at + 1u], projected[v_at + 2u], projected[v_at + 3u]);
}

// Steps 3 and 4 for query t of one head and stream, from `projected` (q_t | k_0 .. | v_0 ..).
fn attend(head: u32, t: u32, stream: u32, lane: u32) {
    let quads = HEAD_DIM / 4u;
    let kv_at = stream * 2u * HEADS * RING * quads;   // this stream's ring
    let base = frame_values[POSITION_INDEX + stream] + FIRST_ROW;
    let position = base + t;

    // 3. RoPE of q_t and k_j (two pairs = one vec4 per invocation); step t's key and value go into the ring.
    let keys = kv_at + head * RING * quads;              // kv[s, 0, head, slot, quad] = keys + slot * quads + quad
    let values = kv_at + (HEADS + head) * RING * quads;  // kv[s, 1, head, slot, quad]
    for (var i = lane; i < (t + 1u) * quads; i += WORKGROUP_SIZE) {
        let j = i / quads;
        let quad = i % quads;
        let first = cos_sin(f32(base + j) * freqs[2u * quad]);
        let second = cos_sin(f32(base + j) * freqs[2u * quad + 1u]);
        let k_at = HEAD_DIM + j * HEAD_DIM + 4u * quad;
        let k = vec4<f32>(rotate(vec2<f32>(projected[k_at], projected[k_at + 1u]), first),
                          rotate(vec2<f32>(projected[k_at + 2u], projected[k_at + 3u]), second));
        chunk_keys[j * quads + quad] = k;
        if (j == t) {
            let q_at = 4u * quad;
            q_rotated[quad] = vec4<f32>(rotate(vec2<f32>(projected[q_at], projected[q_at + 1u]), first),
                                        rotate(vec2<f32>(projected[q_at + 2u], projected[q_at + 3u]), second));
            let slot = (position % RING) * quads + quad;
            kv[keys + slot] = k;
            let v_at = HEAD_DIM + (STEPS + t) * HEAD_DIM + 4u * quad;
            kv[values + slot] = vec4<f32>(projected[v_at], projected[v_at + 1u], projected[v_at + 2u],
                                          projected[v_at + 3u]);
        }
    }
    workgroupBarrier();

    // 4. Attention of q_t over [lo, position]. lo = max(0, position + 1 - CONTEXT, base + STEPS - RING).
    let lo = u32(max(max(0, i32(position) + 1 - i32(CONTEXT)), i32(base + STEPS) - i32(RING)));
    let count = position + 1u - lo;   // <= min(CONTEXT, RING)
    let scale = inverseSqrt(f32(HEAD_DIM));
    var local_max = LOWEST;
    for (var j = lane; j < count; j += WORKGROUP_SIZE) {
        let s = lo + j;
        var score = 0.0;
        if (s < base) {
            let key = keys + (s % RING) * quads;
            // Four quads a round, loads issued together (see step 2); added in order.
            for (var q = 0u; q < quads; q += 4u) {
                let k0 = kv[key + q];
                let k1 = kv[key + min(q + 1u, quads - 1u)];
                let k2 = kv[key + min(q + 2u, quads - 1u)];
                let k3 = kv[key + min(q + 3u, quads - 1u)];
                score += dot(q_rotated[q], k0);
                if (q + 1u < quads) {
                    score += dot(q_rotated[q + 1u], k1);
                }
                if (q + 2u < quads) {
                    score += dot(q_rotated[q + 2u], k2);
                }
                if (q + 3u < quads) {
                    score += dot(q_rotated[q + 3u], k3);
                }
            }
        } else {
            for (var q = 0u; q < quads; q++) {
                score += dot(q_rotated[q], chunk_keys[(s - base) * quads + q]);
            }
        }
        score *= scale;
        weights[j] = score;
        local_max = max(local_max, score);
    }
    let score_max = reduce_workgroup(local_max, true, lane);
    var local_sum = 0.0;
    for (var j = lane; j < count; j += WORKGROUP_SIZE) {
        let e = exp(weights[j] - score_max);
        weights[j] = e;
        local_sum += e;
    }
    let denominator = reduce_workgroup(local_sum, false, lane);  // its barriers publish weights[]

    for (var i = lane; i < GROUPS * quads; i += WORKGROUP_SIZE) {
        let quad = i % quads;
        let group = i / quads;
        var sum = vec4<f32>(0.0);
        // Four slots a round, their ring loads issued together (see step 2); added in slot order.
        for (var j = group; j < count; j += 4u * GROUPS) {
            let v0 = slot_value(values, quad, lo, base, j);
            let v1 = slot_value(values, quad, lo, base, min(j + GROUPS, count - 1u));
            let v2 = slot_value(values, quad, lo, base, min(j + 2u * GROUPS, count - 1u));
            let v3 = slot_value(values, quad, lo, base, min(j + 3u * GROUPS, count - 1u));
            sum += weights[j] * v0;
            if (j + GROUPS < count) {
                sum += weights[j + GROUPS] * v1;
            }
            if (j + 2u * GROUPS < count) {
                sum += weights[j + 2u * GROUPS] * v2;
            }
            if (j + 3u * GROUPS < count) {
                sum += weights[j + 3u * GROUPS] * v3;
            }
        }
        partial_values[i] = sum;
    }
    workgroupBarrier();
    for (var quad = lane; quad < quads; quad += WORKGROUP_SIZE) {
        var sum = vec4<f32>(0.0);
        for (var group = 0u; group < GROUPS; group++) {
            sum += partial_values[group * quads + quad];
        }
        let o = (stream * ROWS + FIRST_ROW + t) * D + head * HEAD_DIM + 4u * quad;
        let result = sum / denominator;
        out[o] = result.x;
        out[o + 1u] = result.y;
        out[o + 2u] = result.z;
        out[o + 3u] = result.w;
    }
}
