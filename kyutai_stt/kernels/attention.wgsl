// One step of causal self-attention over a ring KV cache, with interleaved RoPE and the ring write fused in.
//
//   qkv:       [STREAMS, 3 * D] f32   this step's q, k, v (the QKV matvec's output; head-major inside each),
//                                      D = HEADS * HEAD_DIM
//   positions: u32[POSITION_INDEX + STREAMS]   stream s's absolute step index since reset (not modulo CONTEXT)
//                                      at POSITION_INDEX + s, e.g. a field of the plan's step buffer
//   freqs:     f32[HEAD_DIM / 2]      RoPE frequencies freq_i = theta^(-2i/HEAD_DIM) (lm_reference.rope_frequencies)
//   k_cache:   [STREAMS, HEADS, CONTEXT, HEAD_DIM] f32   (the ring: slot j of head h is one row)
//   v_cache:   [STREAMS, HEADS, CONTEXT, HEAD_DIM] f32
//              KV_F16: f16 instead, two per u32 word, the even element in the low half (pack2x16float: core WGSL,
//              no shader-f16 needed), half the bytes to store and read; a stored value is the f32 one rounded to
//              f16 (clamped to f16's finite range first), and attention reads what was stored
//
//   p = positions[POSITION_INDEX + s], slot = p % CONTEXT,
//   valid = min(p + 1, CONTEXT)  (slots [0, valid) hold this step and the previous min(p, CONTEXT - 1))
//   rope(v)[2i], rope(v)[2i+1] = v[2i] cos(a_i) - v[2i+1] sin(a_i), v[2i] sin(a_i) + v[2i+1] cos(a_i),
//        a_i = f32(p) * freqs[i] rounded to f32 (as moshi), reduced modulo 2 pi before cos/sin
//   k_cache[s, h, slot, :] = rope(k_h);  v_cache[s, h, slot, :] = v_h
//   out[s, h*HEAD_DIM + d] = sum_{j < valid} softmax_j(rope(q_h) . k_cache[s, h, j, :] / sqrt(HEAD_DIM))
//                            * v_cache[s, h, j, d]
//
// Split over the slots (flash decoding) so that the whole GPU reads the cache: workgroup (h, split, s) of `main`
// attends to slots [split * SLOTS_PER_SPLIT, (split + 1) * SLOTS_PER_SPLIT) of [0, valid), with
// SLOTS_PER_SPLIT = ceil(CONTEXT / SPLITS), and writes
//   SPLITS == 1: partial_out[s, h*HEAD_DIM + d] = out[s, h*HEAD_DIM + d] (final; `combine` is not dispatched)
//   SPLITS > 1:  partial_out[s, split, h, d] = sum_j exp(score_j - m) v_j[d] (unnormalised),
//                partial_stats[s, split, h] = (m = max_j score_j, l = sum_j exp(score_j - m));
//                an empty split writes (m, l, o) = (LOWEST, 0, 0).
// Entry `combine` merges the splits: out[s, h*HEAD_DIM + d] = sum_k e_k o_k[d] / sum_k e_k l_k, e_k = exp(m_k - max m).
// Entry `combine_int8` merges them the same way and writes the output rounded to int8 per 32-block, as
// quantize_input.wgsl in PLAIN mode writes the input of an int8 matvec (out_q, out_scales: that file's xq and xs,
// COLUMNS = D), with the same arithmetic: bit for bit what combine + quantize_input give, one dispatch fewer. Its
// only reader is the attention's output matrix. Needs HEAD_DIM % 32 == 0 (a block never spans two heads).
// Entry `combine_f16` likewise for the f16 path (quantize_input.wgsl's OUTPUT_F16 rounding, matvec_f16.wgsl).
// The workgroup whose split holds `slot` writes the new key and value (no other workgroup reads that slot).
//
// Scores: teams of SCORE_TEAM invocations per slot (a few 16-byte loads each), 4 slots per team in a round of loads
// (4 WORKGROUP_SIZE / SCORE_TEAM slots at once); values: groups of HEAD_DIM / 4 invocations (one output vec4 each,
// HEAD_DIM / 8 in f16) over interleaved slots, 8 slots per group a round, summed at the end; the merge reads 16
// splits a round.
//
// Bindings (group 0): main: 0 = qkv (read, as vec4), 1 = positions (read), 2 = freqs (read), 3 = k_cache (read_write),
//   4 = v_cache (read_write), 5 = partial_out (read_write), 6 = partial_stats (read_write; written only when
//   SPLITS > 1 but always bound: any buffer of >= 8 bytes when SPLITS == 1).
//   combine: 5 = partial_out, 6 = partial_stats (read), 7 = out (read_write, [STREAMS, D]). Outputs are bound as
//   vec4<f32>, caches as 16-byte units (vec4<u32>: 4 values in f32, 8 in f16).
//   combine_int8: 5, 6 as combine; 8 = out_q (read_write, u32[STREAMS, D / 4]), 9 = out_scales (read_write,
//   vec2<f32>[STREAMS, D / 32]). combine_f16: the same with out_q u32[STREAMS, D / 2].
// Dispatch: main (HEADS, SPLITS, STREAMS); combine, combine_int8, combine_f16 (HEADS, 1, STREAMS); workgroups of
// WORKGROUP_SIZE invocations.
// Pass the same constants to both entry points.

override HEADS: u32;
// A multiple of 4 (RoPE rotates pairs; keys and values are read as vec4).
override HEAD_DIM: u32;
// Ring capacity: the current step and the previous CONTEXT - 1 (750 for the LM).
override CONTEXT: u32;
// Slot ranges per head: 1 needs no combine pass; more spreads the ring's reads over more workgroups (an H100 wants
// ~256 workgroups in flight: 16 for the LM's 16 heads).
override SPLITS: u32 = 1u;
// Where stream 0's position sits in the positions (step) buffer.
override POSITION_INDEX: u32 = 0u;
// 128: one vec4 of the output per invocation in 4 slot groups for the LM (HEAD_DIM / 4 = 32 per group).
override WORKGROUP_SIZE: u32 = 128u;
// Invocations per slot in the score pass: each reads 1 / SCORE_TEAM of the key's units (4 for the LM in f32), so
// WORKGROUP_SIZE / SCORE_TEAM slots are scored at once with few loads each.
override SCORE_TEAM: u32 = 8u;
// Keys and values stored as f16 (HEAD_DIM a multiple of 8 then): see k_cache above.
override KV_F16: bool = false;

const LOWEST = -3.402823e38;  // the score of nothing (finite: exp(LOWEST - m) is 0 without inf arithmetic)
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
const F16_MAX = 65504.0;

@group(0) @binding(0) var<storage, read> qkv: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> positions: array<u32>;
@group(0) @binding(2) var<storage, read> freqs: array<f32>;
@group(0) @binding(3) var<storage, read_write> k_cache: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read_write> v_cache: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read_write> partial_out: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> partial_stats: array<vec2<f32>>;
@group(0) @binding(7) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> out_q: array<u32>;
@group(0) @binding(9) var<storage, read_write> out_scales: array<vec2<f32>>;

var<workgroup> q_rotated: array<vec4<f32>, HEAD_DIM / 4u>;
// Scores, then softmax numerators, of this workgroup's slots.
var<workgroup> weights: array<f32, (CONTEXT + SPLITS - 1u) / SPLITS>;
// Reductions: per-member partial scores, max and sum, then the slot groups' partial outputs (in f16 a group
// covers a row with half as many invocations, so there are up to twice as many groups).
var<workgroup> reduction: array<vec4<f32>, max(select(1u, 2u, KV_F16) * WORKGROUP_SIZE, HEAD_DIM / 4u)>;
// combine_int8, combine_f16: the merged output, each of its vec4's largest |value|, then (int8) its integers.
var<workgroup> merged_values: array<vec4<f32>, HEAD_DIM / 4u>;
var<workgroup> largest: array<f32, HEAD_DIM / 4u>;
var<workgroup> integers: array<vec4<i32>, HEAD_DIM / 4u>;
// combine, combine_int8, combine_f16: every split's (m, l) for this (head, stream).
var<workgroup> merge_stats: array<vec2<f32>, SPLITS>;

// (cos, sin) of an angle of any size: reduced to [-pi, pi] first, where GPU cos/sin are accurate.
fn cos_sin(angle: f32) -> vec2<f32> {
    let turns = round(angle * INVERSE_TWO_PI);
    let reduced = ((((((angle - turns * TWO_PI_0) - turns * TWO_PI_1) - turns * TWO_PI_2) - turns * TWO_PI_3)
                   - turns * TWO_PI_4) - turns * TWO_PI_5) - turns * TWO_PI_6;
    return vec2<f32>(cos(reduced), sin(reduced));
}

// Pairs (x, y) and (z, w) of v rotated by their angles: rotation = (cos a0, sin a0, cos a1, sin a1).
fn rotate(v: vec4<f32>, rotation: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(v.x * rotation.x - v.y * rotation.y, v.x * rotation.y + v.y * rotation.x,
                     v.z * rotation.z - v.w * rotation.w, v.z * rotation.w + v.w * rotation.z);
}

// The rotation (cos a0, sin a0, cos a1, sin a1) of vec4 i of a head at this position.
fn rotation_at(i: u32, position: u32) -> vec4<f32> {
    let angles = f32(position) * vec2<f32>(freqs[2u * i], freqs[2u * i + 1u]);
    return vec4<f32>(cos_sin(angles.x), cos_sin(angles.y));
}

// vec4s of a key or value per 16-byte unit of the ring.
fn unit_vectors() -> u32 {
    return select(1u, 2u, KV_F16);
}

// A ring unit from its vec4s: a alone in f32; a then b as f16 (8 values; b is ignored in f32).
fn to_unit(a: vec4<f32>, b: vec4<f32>) -> vec4<u32> {
    if (!KV_F16) {
        return bitcast<vec4<u32>>(a);
    }
    let ca = clamp(a, vec4<f32>(-F16_MAX), vec4<f32>(F16_MAX));
    let cb = clamp(b, vec4<f32>(-F16_MAX), vec4<f32>(F16_MAX));
    return vec4<u32>(pack2x16float(ca.xy), pack2x16float(ca.zw), pack2x16float(cb.xy), pack2x16float(cb.zw));
}

// The first vec4 of a ring unit (its only one in f32) and the second (f16 only).
fn unit_low(w: vec4<u32>) -> vec4<f32> {
    return select(bitcast<vec4<f32>>(w), vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)), KV_F16);
}

fn unit_high(w: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w));
}

// partial + q . key for unit u of a key (both vec4 of it in f16, added one after the other).
fn key_dot(partial: f32, u: u32, w: vec4<u32>) -> f32 {
    let per_unit = unit_vectors();
    var sum = partial + dot(q_rotated[u * per_unit], unit_low(w));
    if (KV_F16) {
        sum += dot(q_rotated[u * per_unit + 1u], unit_high(w));
    }
    return sum;
}

// The (low, high) vec4 sums of a value unit plus weights[index] times the unit w (high: f16 only).
fn weigh_value(acc: array<vec4<f32>, 2>, index: u32, w: vec4<u32>) -> array<vec4<f32>, 2> {
    var next = acc;
    next[0] += weights[index] * unit_low(w);
    if (KV_F16) {
        next[1] += weights[index] * unit_high(w);
    }
    return next;
}

// weigh_value for slot j of [first, end); a slot past the end adds nothing.
fn weigh_next(acc: array<vec4<f32>, 2>, j: u32, first: u32, end: u32, w: vec4<u32>) -> array<vec4<f32>, 2> {
    if (j >= end) {
        return acc;
    }
    return weigh_value(acc, j - first, w);
}

// Tree reduction (max or sum) over the workgroup, any WORKGROUP_SIZE; every invocation gets the result.
fn reduce_workgroup(value: f32, take_max: bool, lane: u32) -> f32 {
    reduction[lane].x = value;
    workgroupBarrier();
    var active_count = WORKGROUP_SIZE;
    while (active_count > 1u) {
        let upper_half_start = (active_count + 1u) / 2u;
        if (lane + upper_half_start < active_count) {
            let other = reduction[lane + upper_half_start].x;
            reduction[lane].x = select(reduction[lane].x + other, max(reduction[lane].x, other), take_max);
        }
        workgroupBarrier();
        active_count = upper_half_start;
    }
    let result = reduction[0].x;
    workgroupBarrier();  // reduction[] is reused next
    return result;
}

// A round's scores: each member's partial sums for its team's 4 slots j, added in member order into weights[] by
// the team's member p for slot p (p + team_size ... where the team has fewer than 4 members: four short chains of
// adds, not one long one); returns local_max raised by them (call in uniform control flow: barriers).
fn round_scores(partial: vec4<f32>, j: vec4<u32>, first: u32, end: u32, lane: u32, in_team: bool, member: u32,
                team_size: u32, local_max: f32) -> f32 {
    reduction[lane] = partial;
    workgroupBarrier();
    var result = local_max;
    if (in_team) {
        let leader = lane - member;
        for (var p = member; p < 4u; p += team_size) {
            if (j[p] < end) {
                var score = 0.0;
                for (var m = 0u; m < team_size; m++) {
                    score += reduction[leader + m][p];
                }
                weights[j[p] - first] = score;
                result = max(result, score);
            }
        }
    }
    workgroupBarrier();
    return result;
}

// The softmax numerators exp(score - score_max) of slots [first, end), in place in weights[]; returns their sum
// (call in uniform control flow: its reduction's barriers also publish weights[]).
fn softmax_numerators(first: u32, end: u32, score_max: f32, lane: u32) -> f32 {
    var local_sum = 0.0;
    for (var j = first + lane; j < end; j += WORKGROUP_SIZE) {
        let numerator = exp(weights[j - first] - score_max);
        weights[j - first] = numerator;
        local_sum += numerator;
    }
    return reduce_workgroup(local_sum, false, lane);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let head = workgroup.x;
    let split = workgroup.y;
    let stream = workgroup.z;
    let dim = HEADS * HEAD_DIM;
    let vectors = HEAD_DIM / 4u;  // vec4 per key, value or output row
    let per_unit = unit_vectors();
    let units = vectors / per_unit;  // ring units per key or value row
    let slots_per_split = (CONTEXT + SPLITS - 1u) / SPLITS;

    let position = positions[POSITION_INDEX + stream];
    let slot = position % CONTEXT;
    let valid = min(position, CONTEXT - 1u) + 1u;
    let first = split * slots_per_split;
    let end = min(first + slots_per_split, valid);  // this workgroup's slots: [first, end), maybe empty
    let cache_base = (stream * HEADS + head) * CONTEXT * units;  // cache[stream, head, j] = cache_base + j * units
    let q_in = (stream * 3u * dim + head * HEAD_DIM) / 4u;       // this head's q in qkv; k at + dim/4, v at + dim/2
    let owns_slot = slot / slots_per_split == split;

    // RoPE on q (kept in workgroup memory, pre-scaled by 1/sqrt(HEAD_DIM)) and, by the owner of the slot, on k;
    // the owner also stores v.
    let scale = inverseSqrt(f32(HEAD_DIM));
    for (var i = lane; i < vectors; i += WORKGROUP_SIZE) {
        q_rotated[i] = rotate(qkv[q_in + i], rotation_at(i, position)) * scale;
    }
    if (owns_slot) {
        for (var u = lane; u < units; u += WORKGROUP_SIZE) {
            let i = u * per_unit;
            let i_next = min(i + 1u, vectors - 1u);  // f16's second vec4 (unused in f32)
            let k_unit = to_unit(rotate(qkv[q_in + dim / 4u + i], rotation_at(i, position)),
                                 rotate(qkv[q_in + dim / 4u + i_next], rotation_at(i_next, position)));
            k_cache[cache_base + slot * units + u] = k_unit;
            v_cache[cache_base + slot * units + u] = to_unit(qkv[q_in + dim / 2u + i], qkv[q_in + dim / 2u + i_next]);
        }
    }
    storageBarrier();    // the new key and value are visible to the whole workgroup
    workgroupBarrier();  // and so is q_rotated

    // Scores: teams of SCORE_TEAM invocations per slot, each member reading a few units of the key; a round scores
    // 4 slots per team, every key load of the round issued before any is used (the driver does not overlap the
    // loads of successive loop iterations: docs/architecture.md). Each score adds its members' sums in order.
    let team_size = min(SCORE_TEAM, WORKGROUP_SIZE);
    let teams = WORKGROUP_SIZE / team_size;
    let team = lane / team_size;
    let member = lane % team_size;
    let last_slot = CONTEXT - 1u;       // loads past `end` read a slot of the ring, unused
    var local_max = LOWEST;
    for (var round_first = first; round_first < first + slots_per_split; round_first += 4u * teams) {
        let j = vec4<u32>(round_first + team) + vec4<u32>(0u, 1u, 2u, 3u) * teams;
        var partial = vec4<f32>(0.0);    // [slot of the round]
        if (team < teams) {
            for (var u = member; u < units; u += 2u * team_size) {
                let u_next = u + team_size;
                let v = min(u_next, units - 1u);
                let row = cache_base + min(j, vec4<u32>(last_slot)) * units;
                let w0 = k_cache[row.x + u];
                let w1 = k_cache[row.y + u];
                let w2 = k_cache[row.z + u];
                let w3 = k_cache[row.w + u];
                let n0 = k_cache[row.x + v];
                let n1 = k_cache[row.y + v];
                let n2 = k_cache[row.z + v];
                let n3 = k_cache[row.w + v];
                partial = vec4<f32>(key_dot(partial.x, u, w0), key_dot(partial.y, u, w1), key_dot(partial.z, u, w2),
                                    key_dot(partial.w, u, w3));
                if (u_next < units) {
                    partial = vec4<f32>(key_dot(partial.x, u_next, n0), key_dot(partial.y, u_next, n1),
                                        key_dot(partial.z, u_next, n2), key_dot(partial.w, u_next, n3));
                }
            }
        }
        local_max = round_scores(partial, j, first, end, lane, team < teams, member, team_size, local_max);
    }
    let score_max = reduce_workgroup(local_max, true, lane);
    let denominator = softmax_numerators(first, end, score_max, lane);

    // Weighted sum of the values: slot groups of one invocation per ring unit of a row (one or two vec4 of the
    // output each), over every groups-th slot; then the groups' sums are added.
    let groups = max(WORKGROUP_SIZE / units, 1u);
    let group = lane / units;
    if (group < groups) {
        for (var u = lane % units; u < units; u += WORKGROUP_SIZE) {
            var acc = array<vec4<f32>, 2>(vec4<f32>(0.0), vec4<f32>(0.0));  // the unit's low and high vec4
            // Eight slots a round, every load issued before any is used (see merged()); in slot order.
            for (var j = first + group; j < end; j += 8u * groups) {
                let at = cache_base + u;
                let last = end - 1u;
                let w0 = v_cache[at + j * units];
                let w1 = v_cache[at + min(j + groups, last) * units];
                let w2 = v_cache[at + min(j + 2u * groups, last) * units];
                let w3 = v_cache[at + min(j + 3u * groups, last) * units];
                let w4 = v_cache[at + min(j + 4u * groups, last) * units];
                let w5 = v_cache[at + min(j + 5u * groups, last) * units];
                let w6 = v_cache[at + min(j + 6u * groups, last) * units];
                let w7 = v_cache[at + min(j + 7u * groups, last) * units];
                acc = weigh_value(acc, j - first, w0);
                acc = weigh_next(acc, j + groups, first, end, w1);
                acc = weigh_next(acc, j + 2u * groups, first, end, w2);
                acc = weigh_next(acc, j + 3u * groups, first, end, w3);
                acc = weigh_next(acc, j + 4u * groups, first, end, w4);
                acc = weigh_next(acc, j + 5u * groups, first, end, w5);
                acc = weigh_next(acc, j + 6u * groups, first, end, w6);
                acc = weigh_next(acc, j + 7u * groups, first, end, w7);
            }
            let low = acc[0];
            let high = acc[1];
            reduction[group * vectors + u * per_unit] = low;
            if (KV_F16) {
                reduction[group * vectors + u * per_unit + 1u] = high;
            }
        }
    }
    workgroupBarrier();
    let out_base = ((stream * SPLITS + split) * dim + head * HEAD_DIM) / 4u;
    for (var i = lane; i < vectors; i += WORKGROUP_SIZE) {
        var sum = vec4<f32>(0.0);
        for (var g = 0u; g < groups; g++) {
            sum += reduction[g * vectors + i];
        }
        partial_out[out_base + i] = select(sum, sum / denominator, SPLITS == 1u);
    }
    if (SPLITS > 1u && lane == 0u) {
        partial_stats[(stream * SPLITS + split) * HEADS + head] = vec2<f32>(score_max, denominator);
    }
}

// Split k's output vec4 i; k past the last split reads the last (callers ignore it).
fn split_output(head: u32, stream: u32, k: u32, i: u32) -> vec4<f32> {
    return partial_out[((stream * SPLITS + min(k, SPLITS - 1u)) * HEADS * HEAD_DIM + head * HEAD_DIM) / 4u + i];
}

// Outputs i of splits k .. k + 3, loaded together.
fn split_outputs4(head: u32, stream: u32, k: u32, i: u32) -> array<vec4<f32>, 4> {
    return array<vec4<f32>, 4>(split_output(head, stream, k, i), split_output(head, stream, k + 1u, i),
                               split_output(head, stream, k + 2u, i), split_output(head, stream, k + 3u, i));
}

struct Merge {
    denominator: f32,
    sum: vec4<f32>,
}

// Split k's share of the merge (nothing past the last split), added in split order.
fn merge_split(m: Merge, k: u32, output: vec4<f32>, score_max: f32) -> Merge {
    if (k >= SPLITS) {
        return m;
    }
    let stats = merge_stats[k];
    let weight = exp(stats.x - score_max);
    return Merge(m.denominator + weight * stats.y, m.sum + weight * output);
}

// Splits k .. k + 3's shares, in order.
fn merge4(m: Merge, k: u32, outputs: array<vec4<f32>, 4>, score_max: f32) -> Merge {
    var next = merge_split(m, k, outputs[0], score_max);
    next = merge_split(next, k + 1u, outputs[1], score_max);
    next = merge_split(next, k + 2u, outputs[2], score_max);
    return merge_split(next, k + 3u, outputs[3], score_max);
}

// The combine entries' first step: every split's (m, l) of (head, stream) into workgroup memory, one load per
// invocation (call in uniform control flow: it has a barrier).
fn load_merge_stats(head: u32, stream: u32, lane: u32) {
    for (var k = lane; k < SPLITS; k += WORKGROUP_SIZE) {
        merge_stats[k] = partial_stats[(stream * SPLITS + k) * HEADS + head];
    }
    workgroupBarrier();
}

// The merged output vec4 i of (head, stream): sum_k e_k o_k / sum_k e_k l_k (see the header), after
// load_merge_stats. The splits' outputs are read 16 at a time, every load of a round issued before any is used:
// the driver does not overlap the loads of successive loop iterations (BENCHMARKS.md).
fn merged(head: u32, stream: u32, i: u32) -> vec4<f32> {
    var score_max = LOWEST;
    for (var k = 0u; k < SPLITS; k++) {
        score_max = max(score_max, merge_stats[k].x);
    }
    var m = Merge(0.0, vec4<f32>(0.0));
    for (var k = 0u; k < SPLITS; k += 16u) {
        let a = split_outputs4(head, stream, k, i);
        let b = split_outputs4(head, stream, k + 4u, i);
        let c = split_outputs4(head, stream, k + 8u, i);
        let d = split_outputs4(head, stream, k + 12u, i);
        m = merge4(m, k, a, score_max);
        m = merge4(m, k + 4u, b, score_max);
        m = merge4(m, k + 8u, c, score_max);
        m = merge4(m, k + 12u, d, score_max);
    }
    return m.sum / m.denominator;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn combine(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let head = workgroup.x;
    let stream = workgroup.z;
    load_merge_stats(head, stream, lane);
    for (var i = lane; i < HEAD_DIM / 4u; i += WORKGROUP_SIZE) {
        out[(stream * HEADS * HEAD_DIM + head * HEAD_DIM) / 4u + i] = merged(head, stream, i);
    }
}

// 127 / amax for a 32-block whose largest |value| is amax (0 for an all-zero block): its integers are
// round(value * this), in -127..127. The one rounding of the int8 path and the int8 KV rings (quantize_input.wgsl,
// attention.wgsl, attention_int8.wgsl).
fn int8_inverse(amax: f32) -> f32 {
    return select(0.0, 127.0 / amax, amax > 0.0);
}

// Four integers in -127..127 as the bytes of one word, the first in the low byte (quantize_input.wgsl's pack_int8).
fn pack_int8(v: vec4<i32>) -> u32 {
    let bytes = bitcast<vec4<u32>>(v) & vec4<u32>(0xFFu);
    return bytes.x | (bytes.y << 8u) | (bytes.z << 16u) | (bytes.w << 24u);
}

// combine_int8, combine_f16: the head's merged output into merged_values, each vec4's largest |value| into largest
// (every invocation returns after the barrier that makes them visible).
fn merge_to_workgroup(head: u32, stream: u32, lane: u32) {
    load_merge_stats(head, stream, lane);
    for (var i = lane; i < HEAD_DIM / 4u; i += WORKGROUP_SIZE) {
        let value = merged(head, stream, i);
        merged_values[i] = value;
        let m = abs(value);
        largest[i] = max(max(m.x, m.y), max(m.z, m.w));
    }
    workgroupBarrier();
}

// (1 / scale, scale) of a block whose largest |value| is amax, for the f16 path: scale = 2^e, the least power of
// two above amax (amax = m 2^e with m in [0.5, 1)); (0, 0) for an all-zero block.
fn f16_block_scale(amax: f32) -> vec2<f32> {
    let exponent = frexp(amax).exp;
    return select(vec2<f32>(0.0), vec2<f32>(ldexp(1.0, -exponent), ldexp(1.0, exponent)), amax > 0.0);
}

// Inputs 8g .. 8g+7 (low, high: already scaled) as the f16 path's 4 words: pairs (8g + i, 8g + 4 + i), i < 4.
fn f16_pairs(low: vec4<f32>, high: vec4<f32>) -> vec4<u32> {
    return vec4<u32>(pack2x16float(vec2<f32>(low.x, high.x)), pack2x16float(vec2<f32>(low.y, high.y)),
                     pack2x16float(vec2<f32>(low.z, high.z)), pack2x16float(vec2<f32>(low.w, high.w)));
}

// The largest |value| of the 32-block holding merged vec4 i (8 vec4s), after merge_to_workgroup.
fn block_largest(i: u32) -> f32 {
    let first = i & ~7u;
    var amax = 0.0;
    for (var k = 0u; k < 8u; k++) {
        amax = max(amax, largest[first + k]);
    }
    return amax;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn combine_int8(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let head = workgroup.x;
    let stream = workgroup.z;
    merge_to_workgroup(head, stream, lane);
    let vectors = HEAD_DIM / 4u;
    let column = stream * HEADS * HEAD_DIM + head * HEAD_DIM;   // of this head's first output, stream-major
    for (var i = lane; i < vectors; i += WORKGROUP_SIZE) {
        let amax = block_largest(i);
        let inverse = int8_inverse(amax);
        integers[i] = vec4<i32>(round(merged_values[i] * inverse));
    }
    workgroupBarrier();
    for (var i = lane; i < vectors; i += WORKGROUP_SIZE) {
        if (i % 2u == 0u) {
            // vec4 i and i + 1 are a group of 8 inputs: the even ones in one word, the odd ones in the next
            let low = integers[i];
            let high = integers[i + 1u];
            out_q[column / 4u + i] = pack_int8(vec4<i32>(low.x, low.z, high.x, high.z));
            out_q[column / 4u + i + 1u] = pack_int8(vec4<i32>(low.y, low.w, high.y, high.w));
        }
        if (i % 8u == 0u) {
            var total = vec4<i32>(0);
            for (var k = 0u; k < 8u; k++) {
                total += integers[i + k];
            }
            out_scales[(column + 4u * i) / 32u] = vec2<f32>(block_largest(i) / 127.0,
                                                            f32(total.x + total.y + total.z + total.w));
        }
    }
}

// combine_f16: as combine_int8, the output rounded as quantize_input.wgsl's OUTPUT_F16 writes it (out_q: u32[STREAMS,
// D / 2] of f16 pairs (8j + i, 8j + 4 + i) per group of 8, out_scales: (2^e, 0) per 32-block, 2^e the least power
// of two above the block's largest |value|): bit for bit what combine + quantize_input give.
@compute @workgroup_size(WORKGROUP_SIZE)
fn combine_f16(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let head = workgroup.x;
    let stream = workgroup.z;
    merge_to_workgroup(head, stream, lane);
    let vectors = HEAD_DIM / 4u;
    let column = stream * HEADS * HEAD_DIM + head * HEAD_DIM;   // of this head's first output, stream-major
    for (var i = lane; i < vectors; i += WORKGROUP_SIZE) {
        if (i % 2u == 0u) {
            let scale = f16_block_scale(block_largest(i));
            // vec4 i and i + 1 are a group of 8 inputs: pairs (i, i + 4) of it in four words
            let words = f16_pairs(merged_values[i] * scale.x, merged_values[i + 1u] * scale.x);
            let word = column / 2u + 2u * i;
            out_q[word] = words.x;
            out_q[word + 1u] = words.y;
            out_q[word + 2u] = words.z;
            out_q[word + 3u] = words.w;
            if (i % 8u == 0u) {
                out_scales[(column + 4u * i) / 32u] = vec2<f32>(scale.y, 0.0);
            }
        }
    }
}
