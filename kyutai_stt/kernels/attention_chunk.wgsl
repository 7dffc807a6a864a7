// Causal self-attention of a chunk of STEPS consecutive steps over a ring KV cache, as moshi's streaming
// StreamingMultiheadAttention + RingKVCache compute it (all the chunk's keys enter the ring before any query
// attends), with interleaved RoPE fused in (angles in f32 as moshi computes them).
//
//   qkv:     [STEPS, 3 * D] f32   (q | k | v per step, head-major inside each; D = HEADS * HEAD_DIM)
//   base = frame_values[POSITION_INDEX]: the absolute position of step 0 of the chunk; step t is at p_t = base + t
//   freqs:   f32[HEAD_DIM / 2]          freq_i = max_period^(-2i/HEAD_DIM) as moshi computes it in fp32
//                                        (lm_reference.rope_frequencies: a const buffer of the plan)
//   rope(v, p)[2i], [2i+1] = v[2i] c - v[2i+1] s, v[2i] s + v[2i+1] c,  (c, s) = cos/sin(f32(p) * freq_i)
//   k_cache, v_cache: [HEADS, RING, HEAD_DIM] (a slot's vector contiguous); position p lives in slot p % RING
//   k_cache[h, :, p_t % RING] = rope(k_t,h, p_t);  v_cache[h, p_t % RING, :] = v_t,h      for every step t
//   query t attends to positions s in [lo_t, p_t], lo_t = max(0, p_t - CONTEXT + 1, base + STEPS - RING):
//     out[t, h*HEAD_DIM + d] = sum_s softmax_s(rope(q_t,h, p_t) . key_s / sqrt(HEAD_DIM)) value_s[d]
//   (the third bound: the chunk's later keys overwrote the oldest slots. moshi's Mimi has RING = CONTEXT = 250
//   and STEPS = 2, so from step 250 on the first query of each chunk sees 249 keys where an offline pass sees 250:
//   docs/reference.md, quirk 1. RING = CONTEXT + STEPS - 1 gives the exact sliding window of the offline pass.)
//
// Workgroup (h, t) computes query t of head h and writes step t's key and value into the ring. Keys and values of
// the chunk's own steps (s >= base) are taken from qkv (rotated here), older ones from the ring: the slots written
// by this dispatch ((base + j) % RING, j < STEPS) are never among the older positions read ([lo, base), with
// lo >= base + STEPS - RING), so no workgroup reads what another writes.
//
// Bindings (group 0): 0 = qkv (read), 1 = frame_values (read, u32: the step buffer), 2 = freqs (read),
//   3 = k_cache (read_write), 4 = v_cache (read_write), 5 = out (read_write, [STEPS, D])   (0-4 as attention.wgsl).
// Dispatch: (HEADS, STEPS, 1) workgroups of WORKGROUP_SIZE invocations. Scores: one slot per invocation per pass,
//   its key read as HEAD_DIM / 4 independent 16-byte loads; values: invocation i accumulates elements
//   4 (i % (HEAD_DIM / 4)) .. + 3 over the slots j = i / (HEAD_DIM / 4) (mod GROUPS), then the GROUPS partial sums
//   are added in workgroup memory. (Short chains of independent loads: the kernel is latency-bound otherwise.)
// Constraints: HEAD_DIM % 4 == 0, STEPS <= MAX_STEPS, RING >= STEPS, CONTEXT >= 1.

override HEADS: u32;
override HEAD_DIM: u32;
override STEPS: u32 = 2u;
override RING: u32;
override CONTEXT: u32 = RING;
override POSITION_INDEX: u32 = 0u;
override WORKGROUP_SIZE: u32 = 128u;

const LOWEST = -3.402823e38;
// 2 pi in three parts (Cody-Waite), as attention.wgsl: the reduction modulo 2 pi is exact for large angles.
const TWO_PI_HIGH = 6.28125;
const TWO_PI_MIDDLE = 0.0019378662109375;
const TWO_PI_LOW = -2.559031372584286e-06;
const INVERSE_TWO_PI = 0.15915493667125702;
const MAX_STEPS = 4u;

@group(0) @binding(0) var<storage, read> qkv: array<f32>;
@group(0) @binding(1) var<storage, read> frame_values: array<u32>;
@group(0) @binding(2) var<storage, read> freqs: array<f32>;
@group(0) @binding(3) var<storage, read_write> k_cache: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> v_cache: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

// Slot groups of the value pass.
override GROUPS: u32 = max(1u, WORKGROUP_SIZE / (HEAD_DIM / 4u));

var<workgroup> q_rotated: array<vec4<f32>, HEAD_DIM / 4u>;
var<workgroup> chunk_keys: array<vec4<f32>, HEAD_DIM / 4u * MAX_STEPS>;   // rope(k_j) of the chunk's steps j <= t
var<workgroup> weights: array<f32, RING>;
var<workgroup> reduction: array<f32, WORKGROUP_SIZE>;
var<workgroup> partial_values: array<vec4<f32>, GROUPS * HEAD_DIM / 4u>;

fn cos_sin(angle: f32) -> vec2<f32> {
    let turns = round(angle * INVERSE_TWO_PI);
    let reduced = ((angle - turns * TWO_PI_HIGH) - turns * TWO_PI_MIDDLE) - turns * TWO_PI_LOW;
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
    let dim = HEADS * HEAD_DIM;
    let quads = HEAD_DIM / 4u;
    let base = frame_values[POSITION_INDEX];
    let position = base + t;
    let cache_base = head * RING * quads;   // k_cache[head, slot, 4 q .. 4 q + 3] = cache_base + slot * quads + q

    // RoPE: q_t and the keys of the chunk's steps j <= t (two pairs = one vec4 per invocation); step t's key and
    // value also go into the ring.
    for (var i = lane; i < (t + 1u) * quads; i += WORKGROUP_SIZE) {
        let j = i / quads;
        let quad = i % quads;
        let row = j * 3u * dim + head * HEAD_DIM + 4u * quad;
        let first = cos_sin(f32(base + j) * freqs[2u * quad]);
        let second = cos_sin(f32(base + j) * freqs[2u * quad + 1u]);
        let k = vec4<f32>(rotate(vec2<f32>(qkv[row + dim], qkv[row + dim + 1u]), first),
                          rotate(vec2<f32>(qkv[row + dim + 2u], qkv[row + dim + 3u]), second));
        chunk_keys[j * quads + quad] = k;
        if (j == t) {
            q_rotated[quad] = vec4<f32>(rotate(vec2<f32>(qkv[row], qkv[row + 1u]), first),
                                        rotate(vec2<f32>(qkv[row + 2u], qkv[row + 3u]), second));
            let slot = cache_base + (position % RING) * quads + quad;
            k_cache[slot] = k;
            let v = row + 2u * dim;
            v_cache[slot] = vec4<f32>(qkv[v], qkv[v + 1u], qkv[v + 2u], qkv[v + 3u]);
        }
    }
    workgroupBarrier();

    // lo = max(0, position + 1 - CONTEXT, base + STEPS - RING), in i32 to keep the negatives.
    let lo = u32(max(max(0, i32(position) + 1 - i32(CONTEXT)), i32(base + STEPS) - i32(RING)));
    let count = position + 1u - lo;   // <= min(CONTEXT, RING)
    let scale = inverseSqrt(f32(HEAD_DIM));
    var local_max = LOWEST;
    for (var j = lane; j < count; j += WORKGROUP_SIZE) {
        let s = lo + j;
        var score = 0.0;
        if (s < base) {
            let key = cache_base + (s % RING) * quads;
            for (var q = 0u; q < quads; q++) {
                score += dot(q_rotated[q], k_cache[key + q]);
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
        for (var j = group; j < count; j += GROUPS) {
            let s = lo + j;
            var value: vec4<f32>;
            if (s < base) {
                value = v_cache[cache_base + (s % RING) * quads + quad];
            } else {
                let v = (s - base) * 3u * dim + 2u * dim + head * HEAD_DIM + 4u * quad;
                value = vec4<f32>(qkv[v], qkv[v + 1u], qkv[v + 2u], qkv[v + 3u]);
            }
            sum += weights[j] * value;
        }
        partial_values[i] = sum;
    }
    workgroupBarrier();
    for (var quad = lane; quad < quads; quad += WORKGROUP_SIZE) {
        var sum = vec4<f32>(0.0);
        for (var group = 0u; group < GROUPS; group++) {
            sum += partial_values[group * quads + quad];
        }
        let o = t * dim + head * HEAD_DIM + 4u * quad;
        let result = sum / denominator;
        out[o] = result.x;
        out[o + 1u] = result.y;
        out[o + 2u] = result.z;
        out[o + 3u] = result.w;
    }
}
