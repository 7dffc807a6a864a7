// Semantic VAD heads: probabilities of "no voice activity" over HEADS horizons, from the normalised output.
//
//   x:     [STREAMS, DIM] f32                 the residual stream after the last layer (not normalised)
//   alpha: [DIM] f32                          out_norm's scale
//   w:     [HEADS * CLASSES, DIM] f32         head h = rows CLASSES*h .. CLASSES*h + CLASSES - 1
//   out = x * alpha * inverseSqrt(mean(x^2) + EPS)         (the LM's output RMSNorm, recomputed here)
//   p_h = softmax_c(w[CLASSES*h + c] . out)[0]            for h < HEADS
//   results[s * RESULT_STRIDE + RESULT_OFFSET + h] = p_h
//
// Bindings (group 0): 0 = x (read, as vec4<f32>), 1 = alpha (read, as vec4<f32>), 2 = w (read, as vec4<f32>),
//   3 = results (read_write, f32: shares a buffer with argmax's u32 results when the host wants one readback).
// Dispatch: (HEADS, STREAMS, 1) workgroups of WORKGROUP_SIZE invocations, one per head and stream. Constraints:
//   DIM % 4 == 0, WORKGROUP_SIZE >= CLASSES.
//
// Each of the head's CLASSES rows gets a team of WORKGROUP_SIZE / CLASSES invocations that stride over DIM,
// accumulating the row's dot product with x * alpha and the sum of squares of x, reduced over the team.

override DIM: u32;
// The LM's 4 heads of 6 classes (extra_heads_num_heads, extra_heads_dim).
override HEADS: u32 = 4u;
override CLASSES: u32 = 6u;
override EPS: f32 = 1e-8;
override RESULT_STRIDE: u32 = HEADS;
override RESULT_OFFSET: u32 = 0u;
// 256: 6 teams of 42 for the LM's heads (4 invocations idle), ~12 vec4 of x per invocation.
override WORKGROUP_SIZE: u32 = 256u;

@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> alpha: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> results: array<f32>;

var<workgroup> dots: array<f32, WORKGROUP_SIZE>;
var<workgroup> squares: array<f32, WORKGROUP_SIZE>;
var<workgroup> head_logits: array<f32, CLASSES>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let head = workgroup.x;
    let stream = workgroup.y;
    let rows = CLASSES;
    let team_size = WORKGROUP_SIZE / rows;
    let row = lane / team_size;  // >= rows for the spare invocations, which only take part in the barriers
    let member = lane % team_size;

    var dot_sum = 0.0;
    var square_sum = 0.0;
    if (row < rows) {
        // Two items a round, their loads issued before any is used (docs/architecture.md); added in order.
        let w_at = (head * CLASSES + row) * (DIM / 4u);
        for (var i = member; i < DIM / 4u; i += 2u * team_size) {
            let j = min(i + team_size, DIM / 4u - 1u);
            let value = x[stream * (DIM / 4u) + i];
            let weight = w[w_at + i];
            let scale = alpha[i];
            let value_next = x[stream * (DIM / 4u) + j];
            let weight_next = w[w_at + j];
            let scale_next = alpha[j];
            square_sum += dot(value, value);
            dot_sum += dot(weight, value * scale);
            if (i + team_size < DIM / 4u) {
                square_sum += dot(value_next, value_next);
                dot_sum += dot(weight_next, value_next * scale_next);
            }
        }
    }
    dots[lane] = dot_sum;
    squares[lane] = square_sum;
    workgroupBarrier();

    // Tree reduction over each team, halving the active count (rounding up): any team size works.
    var active_count = team_size;
    while (active_count > 1u) {
        let upper_half_start = (active_count + 1u) / 2u;
        if (row < rows && member + upper_half_start < active_count) {
            dots[lane] += dots[lane + upper_half_start];
            squares[lane] += squares[lane + upper_half_start];
        }
        workgroupBarrier();
        active_count = upper_half_start;
    }
    if (row < rows && member == 0u) {
        head_logits[row] = dots[lane] * inverseSqrt(squares[lane] / f32(DIM) + EPS);
    }
    workgroupBarrier();

    if (lane == 0u) {
        var largest = head_logits[0];
        for (var c = 1u; c < CLASSES; c++) {
            largest = max(largest, head_logits[c]);
        }
        var denominator = 0.0;
        for (var c = 0u; c < CLASSES; c++) {
            denominator += exp(head_logits[c] - largest);
        }
        results[stream * RESULT_STRIDE + RESULT_OFFSET + head] = exp(head_logits[0] - largest) / denominator;
    }
}
