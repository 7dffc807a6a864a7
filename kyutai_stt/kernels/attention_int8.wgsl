requires packed_4x8_integer_dot_product;

// attention.wgsl's `main` over KV rings of int8: RoPE, the ring write and one step of causal self-attention, split
// over the slots the same way (its `combine` entries merge the splits). Its own file because the `requires` line
// must never reach a device without dot4I8Packed.
//
//   qkv, positions, freqs, partial_out, partial_stats: as attention.wgsl
//   k_cache:   [STREAMS, HEADS, CONTEXT, ROW] u32 words, ROW = HEAD_DIM / 4 + 4 ceil(HEAD_DIM / 128): a row (slot j
//              of head h) is HEAD_DIM int8 values, four to a word, the first in the low byte, then one f32 scale per
//              32-block (HEAD_DIM / 32 of them, padded to whole 16-byte units): value = integer * scale
//   v_cache:   the same for the values
//
// A row is rounded as quantize_input.wgsl rounds a 32-block: scale = amax / 127, integer = round(x * (127 / amax)),
// amax the block's largest |x| (0 and 0 for an all-zero block): each value within scale / 2 of the f32 one. The
// query, pre-scaled by 1 / sqrt(HEAD_DIM), is rounded the same way (once per workgroup), so a score is
//   sum_b q_scale_b k_scale_b sum_{i in block b} q_i k_i     (the integer sums by dot4I8Packed, 4 products each)
// and the output sum_j p_j v_j takes each value as integer * scale. 144 bytes a row of 128 against f16's 256
// (docs/validation.md: the error).
//
// Scores: teams of HEAD_DIM / 16 invocations per slot, a member per 16-byte unit (and its block's scale), 4 slots per
// team in a round of loads; values: groups of HEAD_DIM / 16 invocations (16 values each) over interleaved slots, 4
// slots per group a round, then the groups' sums added WORKGROUP_SIZE * 2 / (HEAD_DIM / 4) groups at a time: the
// workgroup memory stays that of f16's kernel (twice as much was 8 % slower: BENCHMARKS.md). Each invocation's 16
// sums are indexed by constants only (a loop indexing them made the kernel 1.9x slower).
//
// Bindings (group 0): 0 = qkv (read, as vec4), 1 = positions (read), 2 = freqs (read), 3 = k_cache (read_write),
//   4 = v_cache (read_write), both as 16-byte units (vec4<u32>), 5 = partial_out (read_write), 6 = partial_stats
//   (read_write; always bound, as attention.wgsl).
// Dispatch: main (HEADS, SPLITS, STREAMS), workgroups of WORKGROUP_SIZE invocations; then attention.wgsl's combine,
// combine_int8 or combine_f16 with the same constants when SPLITS > 1.

override HEADS: u32;
// A multiple of 32 (a block never spans two heads).
override HEAD_DIM: u32;
override CONTEXT: u32;
override SPLITS: u32 = 1u;
override POSITION_INDEX: u32 = 0u;
// A multiple of HEAD_DIM / 16, at least that (whole score teams and value groups).
override WORKGROUP_SIZE: u32 = 128u;

const LOWEST = -3.402823e38;  // the score of nothing (finite: exp(LOWEST - m) is 0 without inf arithmetic)
// 2 pi in seven parts: see attention.wgsl.
const TWO_PI_0 = 6.0;
const TWO_PI_1 = 0.3125;
const TWO_PI_2 = -0.03125;
const TWO_PI_3 = 0.001953125;
const TWO_PI_4 = -1.9073486328125e-05;
const TWO_PI_5 = 1.1920928955078125e-06;
const TWO_PI_6 = 6.357301884918343e-08;
const INVERSE_TWO_PI = 0.15915493667125702;
const ONE_AND_A_HALF_2_23 = 0x4B400000i;   // the bits of the f32 1.5 * 2^23 (as matmul_int8.wgsl)

@group(0) @binding(0) var<storage, read> qkv: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> positions: array<u32>;
@group(0) @binding(2) var<storage, read> freqs: array<f32>;
@group(0) @binding(3) var<storage, read_write> k_cache: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read_write> v_cache: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read_write> partial_out: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> partial_stats: array<vec2<f32>>;

// The query's integers (HEAD_DIM / 4 words) and its blocks' scales.
var<workgroup> q_words: array<u32, HEAD_DIM / 4u>;
var<workgroup> q_scales: array<f32, HEAD_DIM / 32u>;
// Scores, then softmax numerators, of this workgroup's slots.
var<workgroup> weights: array<f32, (CONTEXT + SPLITS - 1u) / SPLITS>;
// The rotated query, then (by the slot's owner) the rotated key and the value, 3 rows of HEAD_DIM / 4 (staged for
// their rounding); then per-member partial scores, max and sum, then the value groups' partial outputs.
var<workgroup> reduction: array<vec4<f32>, max(2u * WORKGROUP_SIZE, 3u * HEAD_DIM / 4u)>;

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

// The largest |value| of the 32-block of reduction[] that starts at vec4 `first`.
fn block_max(first: u32) -> f32 {
    var amax = 0.0;
    for (var k = 0u; k < 8u; k++) {
        let m = abs(reduction[first + k]);
        amax = max(amax, max(max(m.x, m.y), max(m.z, m.w)));
    }
    return amax;
}

// 127 / amax for a 32-block whose largest |value| is amax (0 for an all-zero block): its integers are
// round(value * this), in -127..127. The one rounding of the int8 path and the int8 KV rings (quantize_input.wgsl,
// attention.wgsl, attention_int8.wgsl).
fn int8_inverse(amax: f32) -> f32 {
    return select(0.0, 127.0 / amax, amax > 0.0);
}

// Four values of a block whose largest |value| is amax as integers, one word (the first in the low byte).
fn rounded_word(x: vec4<f32>, amax: f32) -> u32 {
    let inverse = int8_inverse(amax);
    return pack4xI8(vec4<i32>(round(x * inverse)));
}

// A data unit's share of a score: the query's words q (its scale q_scale) against a key's unit a of scale s.
// The integer sum (|sum| < 2^22) is taken as an f32's mantissa under 1.5 * 2^23, then that is subtracted: exact, with
// no integer-to-float conversion (a quarter-rate instruction on NVIDIA GPUs).
fn unit_score(q: vec4<u32>, q_scale: f32, a: vec4<u32>, s: u32) -> f32 {
    let bits = ONE_AND_A_HALF_2_23 + dot4I8Packed(q.x, a.x) + dot4I8Packed(q.y, a.y) + dot4I8Packed(q.z, a.z)
               + dot4I8Packed(q.w, a.w);
    return (bitcast<f32>(bits) - 1.5 * 8388608.0) * (q_scale * bitcast<f32>(s));
}

// A unit's 16 sums plus weights[j - first] times a value unit w of scale s; a slot past the end adds nothing.
fn weigh_int8_value(acc: array<vec4<f32>, 4>, j: u32, first: u32, end: u32, w: vec4<u32>, s: u32)
    -> array<vec4<f32>, 4> {
    if (j >= end) {
        return acc;
    }
    let factor = weights[j - first] * bitcast<f32>(s);
    return array<vec4<f32>, 4>(acc[0] + factor * vec4<f32>(unpack4xI8(w.x)),
                               acc[1] + factor * vec4<f32>(unpack4xI8(w.y)),
                               acc[2] + factor * vec4<f32>(unpack4xI8(w.z)),
                               acc[3] + factor * vec4<f32>(unpack4xI8(w.w)));
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
    let vectors = HEAD_DIM / 4u;                     // vec4 per key, value or output row
    let units = HEAD_DIM / 16u;                      // data units a ring row
    let stride = units + (HEAD_DIM + 127u) / 128u;   // ring units a row: the data, then the scales
    let slots_per_split = (CONTEXT + SPLITS - 1u) / SPLITS;

    let position = positions[POSITION_INDEX + stream];
    let slot = position % CONTEXT;
    let valid = min(position, CONTEXT - 1u) + 1u;
    let first = split * slots_per_split;
    let end = min(first + slots_per_split, valid);  // this workgroup's slots: [first, end), maybe empty
    let cache_base = (stream * HEADS + head) * CONTEXT * stride;  // row j of the head at cache_base + j * stride
    let q_in = (stream * 3u * dim + head * HEAD_DIM) / 4u;       // this head's q in qkv; k at + dim/4, v at + dim/2
    let owns_slot = slot / slots_per_split == split;

    // RoPE on q (pre-scaled by 1/sqrt(HEAD_DIM)) and, by the owner of the slot, on k; then each rounded to int8.
    let scale = inverseSqrt(f32(HEAD_DIM));
    for (var i = lane; i < vectors; i += WORKGROUP_SIZE) {
        reduction[i] = rotate(qkv[q_in + i], rotation_at(i, position)) * scale;
        if (owns_slot) {
            reduction[vectors + i] = rotate(qkv[q_in + dim / 4u + i], rotation_at(i, position));
            reduction[2u * vectors + i] = qkv[q_in + dim / 2u + i];
        }
    }
    workgroupBarrier();
    let row = cache_base + slot * stride;
    for (var i = lane; i < vectors; i += WORKGROUP_SIZE) {
        let block = i / 8u;
        let q_max = block_max(8u * block);
        q_words[i] = rounded_word(reduction[i], q_max);
        if (i % 8u == 0u) {
            q_scales[block] = q_max / 127.0;
        }
        if (owns_slot) {
            let k_max = block_max(vectors + 8u * block);
            let v_max = block_max(2u * vectors + 8u * block);
            k_cache[row + i / 4u][i % 4u] = rounded_word(reduction[vectors + i], k_max);
            v_cache[row + i / 4u][i % 4u] = rounded_word(reduction[2u * vectors + i], v_max);
            if (i % 8u == 0u) {
                k_cache[row + units + block / 4u][block % 4u] = bitcast<u32>(k_max / 127.0);
                v_cache[row + units + block / 4u][block % 4u] = bitcast<u32>(v_max / 127.0);
            }
        }
    }
    storageBarrier();    // the new key and value are visible to the whole workgroup
    workgroupBarrier();  // and so is the query's rounding

    // Scores: teams of a member per unit, 4 slots per team a round, every load of the round issued before any is
    // used (docs/architecture.md); each score adds its members' shares in order.
    let team_size = units;
    let teams = WORKGROUP_SIZE / team_size;
    let team = lane / team_size;
    let member = lane % team_size;
    let last_slot = CONTEXT - 1u;       // loads past `end` read a slot of the ring, unused
    var local_max = LOWEST;
    let q_unit = vec4<u32>(q_words[4u * member], q_words[4u * member + 1u], q_words[4u * member + 2u],
                           q_words[4u * member + 3u]);
    let q_scale = q_scales[member / 2u];
    let key_scale = (member / 2u) % 4u;  // the member's block's scale in its scale unit
    for (var round_first = first; round_first < first + slots_per_split; round_first += 4u * teams) {
        let j = vec4<u32>(round_first + team) + vec4<u32>(0u, 1u, 2u, 3u) * teams;
        var partial = vec4<f32>(0.0);    // [slot of the round]
        if (team < teams) {
            let at = cache_base + min(j, vec4<u32>(last_slot)) * stride + member;
            let at_scale = at - member + units + member / 8u;
            let a0 = k_cache[at.x];
            let a1 = k_cache[at.y];
            let a2 = k_cache[at.z];
            let a3 = k_cache[at.w];
            let s0 = k_cache[at_scale.x][key_scale];
            let s1 = k_cache[at_scale.y][key_scale];
            let s2 = k_cache[at_scale.z][key_scale];
            let s3 = k_cache[at_scale.w][key_scale];
            partial = vec4<f32>(unit_score(q_unit, q_scale, a0, s0), unit_score(q_unit, q_scale, a1, s1),
                                unit_score(q_unit, q_scale, a2, s2), unit_score(q_unit, q_scale, a3, s3));
        }
        local_max = round_scores(partial, j, first, end, lane, team < teams, member, team_size, local_max);
    }
    let score_max = reduce_workgroup(local_max, true, lane);
    let denominator = softmax_numerators(first, end, score_max, lane);

    // Weighted sum of the values: groups of one invocation per data unit of a row (16 values), over every
    // groups-th slot, 4 slots a round in slot order; then the groups' sums are added.
    let groups = max(WORKGROUP_SIZE / units, 1u);
    let group = lane / units;
    let u = lane % units;
    var acc = array<vec4<f32>, 4>(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    if (group < groups) {
        let at = cache_base + u;
        let at_scale = cache_base + units + u / 8u;
        let value_scale = (u / 2u) % 4u;  // the unit's block's scale in its scale unit
        for (var j = first + group; j < end; j += 4u * groups) {
            let last = end - 1u;
            let j1 = min(j + groups, last);
            let j2 = min(j + 2u * groups, last);
            let j3 = min(j + 3u * groups, last);
            let w0 = v_cache[at + j * stride];
            let w1 = v_cache[at + j1 * stride];
            let w2 = v_cache[at + j2 * stride];
            let w3 = v_cache[at + j3 * stride];
            let s0 = v_cache[at_scale + j * stride][value_scale];
            let s1 = v_cache[at_scale + j1 * stride][value_scale];
            let s2 = v_cache[at_scale + j2 * stride][value_scale];
            let s3 = v_cache[at_scale + j3 * stride][value_scale];
            acc = weigh_int8_value(acc, j, first, end, w0, s0);
            acc = weigh_int8_value(acc, j + groups, first, end, w1, s1);
            acc = weigh_int8_value(acc, j + 2u * groups, first, end, w2, s2);
            acc = weigh_int8_value(acc, j + 3u * groups, first, end, w3, s3);
        }
    }
    // The groups' sums, `held` groups at a time in reduction[] (see the header).
    let held = max(2u * WORKGROUP_SIZE / vectors, 1u);
    for (var c = 0u; c < groups; c += held) {
        if (group >= c && group < min(c + held, groups)) {
            let at = (group - c) * vectors + 4u * u;
            reduction[at] = select(acc[0], reduction[at] + acc[0], c > 0u);
            reduction[at + 1u] = select(acc[1], reduction[at + 1u] + acc[1], c > 0u);
            reduction[at + 2u] = select(acc[2], reduction[at + 2u] + acc[2], c > 0u);
            reduction[at + 3u] = select(acc[3], reduction[at + 3u] + acc[3], c > 0u);
        }
        workgroupBarrier();
    }
    let out_base = ((stream * SPLITS + split) * dim + head * HEAD_DIM) / 4u;
    for (var i = lane; i < vectors; i += WORKGROUP_SIZE) {
        var sum = vec4<f32>(0.0);
        for (var g = 0u; g < min(groups, held); g++) {
            sum += reduction[g * vectors + i];
        }
        partial_out[out_base + i] = select(sum, sum / denominator, SPLITS == 1u);
    }
    if (SPLITS > 1u && lane == 0u) {
        partial_stats[(stream * SPLITS + split) * HEADS + head] = vec2<f32>(score_max, denominator);
    }
}
