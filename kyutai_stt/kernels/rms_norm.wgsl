// RMS norm over the last axis, fp32.
//
//   x:     [rows, ROW_LENGTH] f32
//   alpha: [ROW_LENGTH]       f32   (learned scale)
//   y:     [rows, ROW_LENGTH] f32
//   y[r, d] = x[r, d] * alpha[d] * inverseSqrt(mean_d(x[r, :]^2) + EPS)
//
// Bindings (group 0): 0 = x (read), 1 = alpha (read), 2 = y (write).
// Dispatch: (rows, 1, 1) workgroups of WORKGROUP_SIZE invocations; workgroup r normalises row r.
// Any ROW_LENGTH >= 1 and any WORKGROUP_SIZE in [1, 256] work (no multiple or power of two needed).

// Row length D: fixed per model layer, so a pipeline constant (no uniform buffer, no bounds from the host).
override ROW_LENGTH: u32;
// The LM's RMSNorm uses 1e-8; other norms (e.g. Mimi's) pass their own.
override EPS: f32 = 1e-8;
// 256 is the portable maximum of invocations per workgroup (Chrome/SwiftShader); one row of the LM (2048)
// is then 8 elements per invocation.
override WORKGROUP_SIZE: u32 = 256;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> alpha: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

// partial_sums[i]: invocation i's sum of squares, then the tree reduction's running sums.
var<workgroup> partial_sums: array<f32, WORKGROUP_SIZE>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let row_start = workgroup.x * ROW_LENGTH;

    // Strided so neighbouring invocations read neighbouring elements (coalesced loads).
    var sum_of_squares = 0.0;
    for (var d = lane; d < ROW_LENGTH; d += WORKGROUP_SIZE) {
        let value = x[row_start + d];
        sum_of_squares += value * value;
    }
    partial_sums[lane] = sum_of_squares;
    workgroupBarrier();

    // Tree reduction that halves the number of active sums (rounding up), so any workgroup size works.
    var active_count = WORKGROUP_SIZE;
    while (active_count > 1u) {
        let upper_half_start = (active_count + 1u) / 2u;
        if (lane + upper_half_start < active_count) {
            partial_sums[lane] += partial_sums[lane + upper_half_start];
        }
        workgroupBarrier();
        active_count = upper_half_start;
    }
    let inverse_rms = inverseSqrt(partial_sums[0] / f32(ROW_LENGTH) + EPS);

    for (var d = lane; d < ROW_LENGTH; d += WORKGROUP_SIZE) {
        y[row_start + d] = x[row_start + d] * alpha[d] * inverse_rms;
    }
}
