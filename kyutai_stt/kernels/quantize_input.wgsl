// Rounds a matvec input to int8 (or f16) once per step, for the int8 path of q4 matrices (matvec_int8.wgsl and its
// subgroup variant; with OUTPUT_F16 the f16 path, matvec_f16.wgsl): every q4 matvec reading the vector then
// multiplies integers (dot4I8Packed) or packed f16 instead of converting each weight to f32. This file itself needs
// no language feature or `shader-f16` (it packs bytes without pack4xI8, halves with pack2x16float).
//
//   x: [BATCH, X_STRIDE] f32, one row per stream; in(x)[s, :COLUMNS] by INPUT_MODE, as matvec.wgsl:
//        0 = PLAIN: x[s, k];  1 = RMS_NORM: x[s, k] * alpha[k] * inverseSqrt(mean_k(x[s, :COLUMNS]^2) + EPS);
//        2 = SWIGLU: silu(x[s, k]) * x[s, COLUMNS + k]
//   per block b of 32 inputs (k = 32 b + i) of stream s:
//        q[s, k] = round(in(x)[s, k] * 127 / amax)   in -127..127, amax = max_{k in b} |in(x)[s, k]| (q = 0 if 0)
//   xq: u32[BATCH, COLUMNS / 4], 8 words per block: for each group j < 4 of 8 inputs (32 b + 8 j + 0..7), word
//        8 b + 2 j packs the even inputs (+0, +2, +4, +6) and word 8 b + 2 j + 1 the odd ones (+1, +3, +5, +7),
//        one int8 per byte, low byte first: the order in which a q4 word's nibbles come out of (word & 0x0F0F0F0F)
//        and ((word >> 4) & 0x0F0F0F0F) (kyutai_stt/quant.py: nibble i of word j is weight 8 j + i)
//   xs: vec2<f32>[BATCH, COLUMNS / 32]: (scale, sum) per block, in(x)[s, k] ~= scale * q[s, k] with scale =
//        amax / 127, sum = sum_{k in b} q[s, k] (an integer, exact in f32: |sum| <= 4064)
// The rounding moves each input by at most scale / 2 (tests/kernels/test_matvec_int8.py; docs/validation.md).
// OUTPUT_F16 instead, per block b of stream s:
//   xs[s, b] = (scale, 0) with scale = 2^e the least power of two above amax (0 if amax is 0): in(x) / scale is
//        exact and below 1 in magnitude, so its f16 rounding h (at most 1: values within 2^-12 of 1 round up to it)
//        keeps 11 significant bits and no product overflows
//   xq: u32[BATCH, COLUMNS / 2], 16 words per block: for each group j < 4 of 8 inputs, words 16 b + 4 j + i
//        (i < 4) pack h of inputs 32 b + 8 j + i (low half) and 32 b + 8 j + 4 + i (high half): the pairs of
//        nibbles ((word >> 4 i) & 0x000F000F) of a q4 word (matvec_f16.wgsl)
//
// Bindings (group 0): 0 = x (read, as vec4<f32>), 1 = alpha (read, [COLUMNS] f32: read only in RMS_NORM mode but
//   always bound; bind x otherwise), 2 = xq (read_write), 3 = xs (read_write).
// Dispatch: (ceil(COLUMNS / 8 / WORKGROUP_SIZE), BATCH, 1) workgroups: one invocation per 8 inputs (4 per block),
//   one stream per workgroup row. Constraints (the host checks them): COLUMNS % 64 == 0 (q4's), X_STRIDE % 4 == 0,
//   WORKGROUP_SIZE a power of two >= 4.
// Structure, for latency (it runs between two dependent matvecs): one round of loads, the block's largest value
// and integer sum exchanged through workgroup memory. In RMS_NORM mode every workgroup sums the squares of its
// stream's whole input itself (COLUMNS floats, from the cache): cheaper than a second dispatch.

override COLUMNS: u32;
override BATCH: u32 = 1u;
override X_STRIDE: u32 = select(COLUMNS, 2u * COLUMNS, INPUT_MODE == 2u);
override INPUT_MODE: u32 = 0u;
override EPS: f32 = 1e-8;
override WORKGROUP_SIZE: u32 = 256u;
// false: int8 and (scale, sum) for matvec_int8.wgsl; true: f16 and (power-of-two scale, 0) for matvec_f16.wgsl.
override OUTPUT_F16: bool = false;

const MODE_RMS_NORM = 1u;
const MODE_SWIGLU = 2u;
const BLOCK = 32u;
// Inputs per invocation: one group of the packing order, two vec4 loads.
const GROUP = 8u;

@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> alpha: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> xq: array<u32>;
@group(0) @binding(3) var<storage, read_write> xs: array<vec2<f32>>;

// Per invocation: its group's largest |input|, then its integers' sum (read by the block's 4 invocations).
var<workgroup> largest: array<f32, WORKGROUP_SIZE>;
var<workgroup> integer_sums: array<i32, WORKGROUP_SIZE>;
var<workgroup> squares: array<f32, WORKGROUP_SIZE>;

fn silu(v: vec4<f32>) -> vec4<f32> {
    // v * sigmoid(v), taking exp of non-positive arguments only (no overflow for large |v|).
    let e = exp(-abs(v));
    return v * select(e / (1.0 + e), 1.0 / (1.0 + e), v >= vec4<f32>(0.0));
}

// 127 / amax for a 32-block whose largest |value| is amax (0 for an all-zero block): its integers are
// round(value * this), in -127..127. The one rounding of the int8 path and the int8 KV rings (quantize_input.wgsl,
// attention.wgsl, attention_int8.wgsl).
fn int8_inverse(amax: f32) -> f32 {
    return select(0.0, 127.0 / amax, amax > 0.0);
}

// Four integers in -127..127 as the bytes of one word, the first in the low byte (pack4xI8 without its feature).
fn pack_int8(v: vec4<i32>) -> u32 {
    let bytes = bitcast<vec4<u32>>(v) & vec4<u32>(0xFFu);
    return bytes.x | (bytes.y << 8u) | (bytes.z << 16u) | (bytes.w << 24u);
}

// The stream's RMSNorm factor inverseSqrt(mean(x^2) + EPS), reduced over the workgroup (every lane gets it).
fn rms_factor(stream: u32, lane: u32) -> f32 {
    // Two vec4 a round, both loaded before either is used (the driver does not overlap the loads of successive
    // loop iterations: docs/architecture.md); added in the order of the one-a-round loop.
    let at = stream * X_STRIDE / 4u;
    let count = COLUMNS / 4u;
    var sum = 0.0;
    for (var i = lane; i < count; i += 2u * WORKGROUP_SIZE) {
        let v = x[at + i];
        let u = x[at + min(i + WORKGROUP_SIZE, count - 1u)];
        sum += dot(v, v);
        if (i + WORKGROUP_SIZE < count) {
            sum += dot(u, u);
        }
    }
    squares[lane] = sum;
    workgroupBarrier();
    for (var half = WORKGROUP_SIZE / 2u; half > 0u; half /= 2u) {
        if (lane < half) {
            squares[lane] += squares[lane + half];
        }
        workgroupBarrier();
    }
    return inverseSqrt(squares[0] / f32(COLUMNS) + EPS);
}

// OUTPUT_F16: inputs 8g .. 8g+7 of a stream (low, high) scaled by a power of two and packed as f16 pairs
// (8g + i, 8g + 4 + i); the block's first invocation writes its scale.
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

fn store_f16(stream: u32, g: u32, first_of_block: bool, amax: f32, low: vec4<f32>, high: vec4<f32>) {
    let scale = f16_block_scale(amax);
    let words = f16_pairs(low * scale.x, high * scale.x);
    let word = (stream * COLUMNS + g * GROUP) / 2u;
    xq[word] = words.x;
    xq[word + 1u] = words.y;
    xq[word + 2u] = words.z;
    xq[word + 3u] = words.w;
    if (first_of_block) {
        xs[stream * (COLUMNS / BLOCK) + g / 4u] = vec2<f32>(scale.y, 0.0);
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let stream = workgroup.y;
    let group = workgroup.x * WORKGROUP_SIZE + lane;
    // Past the end, a whole block of invocations repeats the last group (barriers need every invocation; blocks
    // are 4 aligned invocations and COLUMNS / 8 is a multiple of 4) and writes nothing.
    let valid = group < COLUMNS / GROUP;
    let g = min(group, COLUMNS / GROUP - 1u);
    let first = (stream * X_STRIDE + g * GROUP) / 4u;
    var low = x[first];        // inputs 8g .. 8g+3
    var high = x[first + 1u];  // inputs 8g+4 .. 8g+7
    if (INPUT_MODE == MODE_RMS_NORM) {
        let alpha_low = alpha[2u * g];     // loaded before the reduction's barriers
        let alpha_high = alpha[2u * g + 1u];
        let norm = rms_factor(stream, lane);
        low *= alpha_low * norm;
        high *= alpha_high * norm;
    } else if (INPUT_MODE == MODE_SWIGLU) {
        low = silu(low) * x[first + COLUMNS / 4u];
        high = silu(high) * x[first + 1u + COLUMNS / 4u];
    }
    let m = max(abs(low), abs(high));
    largest[lane] = max(max(m.x, m.y), max(m.z, m.w));
    workgroupBarrier();
    let base = lane & ~3u;  // the block's first invocation
    let amax = max(max(largest[base], largest[base + 1u]), max(largest[base + 2u], largest[base + 3u]));
    if (OUTPUT_F16) {
        if (valid) {
            store_f16(stream, g, lane == base, amax, low, high);
        }
        return;
    }
    let inverse = int8_inverse(amax);
    let q_low = vec4<i32>(round(low * inverse));
    let q_high = vec4<i32>(round(high * inverse));
    let total = q_low + q_high;
    integer_sums[lane] = total.x + total.y + total.z + total.w;
    workgroupBarrier();
    if (valid) {
        let word = (stream * COLUMNS + g * GROUP) / 4u;
        xq[word] = pack_int8(vec4<i32>(q_low.x, q_low.z, q_high.x, q_high.z));       // even inputs
        xq[word + 1u] = pack_int8(vec4<i32>(q_low.y, q_low.w, q_high.y, q_high.w));  // odd inputs
        if (lane == base) {
            let sum = integer_sums[base] + integer_sums[base + 1u] + integer_sums[base + 2u] + integer_sums[base + 3u];
            xs[stream * (COLUMNS / BLOCK) + g / 4u] = vec2<f32>(amax / 127.0, f32(sum));
        }
    }
}
