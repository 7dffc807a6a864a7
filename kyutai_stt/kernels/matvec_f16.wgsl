// Matrix-vector product with f16 weights; optional fused input transform and residual add.
//
//   W: [ROWS, COLUMNS] f16, two per u32 (even column in the low half), COLUMNS a multiple of 8
//   x: [BATCH, X_STRIDE] f32, one row per stream; in(x)[s, :COLUMNS] by INPUT_MODE:
//        0 = PLAIN:    x[s, k]
//        1 = RMS_NORM: x[s, k] * alpha[k] * inverseSqrt(mean_k(x[s, :COLUMNS]^2) + EPS)   (the LM's pre-norms)
//        2 = SWIGLU:   silu(x[s, k]) * x[s, COLUMNS + k]   (x = the FFN's [gate | up], 2*COLUMNS wide)
//   y[s * Y_STRIDE + Y_OFFSET + n] = (ACCUMULATE ? y[...] : 0) + sum_k W[n, k] * in(x)[s, k]
//        for s < BATCH, n < ROWS   (ACCUMULATE fuses the residual add: x += W h)
//
// Bindings (group 0): 0 = w (read, as vec4<u32>: one unit = 8 weights; no binding 1),
//   2 = x (read, as vec4<f32>), 3 = y (read_write), 4 = alpha (read, [COLUMNS] f32: read only in RMS_NORM mode
//   but always bound; bind any f32 buffer, e.g. x again, in the other modes).
// Dispatch: (ceil(ROWS / rows_per_workgroup), 1, 1) workgroups of WORKGROUP_SIZE invocations, where
//   rows_per_workgroup = (WORKGROUP_SIZE / THREADS_PER_ROW) * ROWS_PER_THREAD.
// Constraints (the host checks them; WGSL cannot): COLUMNS % 8 == 0, X_STRIDE % 4 == 0,
//   WORKGROUP_SIZE % THREADS_PER_ROW == 0, ROWS_PER_THREAD * BATCH (+ BATCH in RMS_NORM mode) <= MAX_SUMS.
//
// Structure, for memory bandwidth: the workgroup is split into teams of THREADS_PER_ROW invocations; a team owns
// ROWS_PER_THREAD consecutive rows and its members stride over the row's units (UNIT weights each). Per unit a
// member loads and transforms the UNIT inputs once into registers, then reads that unit of each of its rows with
// aligned 16-byte loads (neighbouring members read neighbouring units: coalesced), so ROWS_PER_THREAD independent
// loads are in flight per member. The members' partial sums are reduced over the team in workgroup memory.
// matvec_{q4,q8,f16,f32}.wgsl share everything except the part marked "format-specific".

// Problem shape: fixed per layer, so pipeline constants.
override ROWS: u32;
override COLUMNS: u32;
// Streams decoded together: each weight unit is then read from memory once for all of them.
override BATCH: u32 = 1u;
// Elements between consecutive streams' inputs (SwiGLU inputs are [gate | up], twice as wide).
override X_STRIDE: u32 = select(COLUMNS, 2u * COLUMNS, INPUT_MODE == 2u);
// Output placement: several heads (text logits, VAD) can write disjoint ranges of one buffer.
override Y_STRIDE: u32 = ROWS;
override Y_OFFSET: u32 = 0u;
// true: y += W in(x) (the residual add, fused); false: y = W in(x).
override ACCUMULATE: bool = false;
// 0 = plain x; 1 = RMSNorm(x) with alpha (saves the norm's dispatch); 2 = SwiGLU of [gate | up] (likewise).
override INPUT_MODE: u32 = 0u;
// RMSNorm epsilon of the LM (INPUT_MODE 1 only).
override EPS: f32 = 1e-8;
// Tuning (benchmarks/kernels.py sweeps these). 256 = the portable maximum of invocations per workgroup.
override WORKGROUP_SIZE: u32 = 256u;
// Members per team: 64 members x 16-byte loads coalesce 1 KiB per row and pass (a whole 2048-wide Q4 row).
override THREADS_PER_ROW: u32 = 64u;
// Rows per team: independent loads in flight per member, and reuse of the inputs it holds in registers.
override ROWS_PER_THREAD: u32 = 4u;

// Accumulators per member (a private array needs a constant size): 16 = 16 KiB of workgroup memory at 256
// invocations, the portable limit.
const MAX_SUMS = 16u;
const MODE_RMS_NORM = 1u;
const MODE_SWIGLU = 2u;

// ---- format-specific: f16 ---------------------------------------------------------------------------------------
// Weights per unit: 8 halves = one vec4<u32>. Read with unpack2x16float: no shader-f16 feature needed.
const UNIT = 8u;

@group(0) @binding(0) var<storage, read> w: array<vec4<u32>>;

// sum_{j < UNIT} W[row, UNIT * unit + j] * inputs[j].
fn unit_dot(row: u32, unit: u32, inputs: array<vec4<f32>, UNIT / 4u>) -> f32 {
    let words = w[row * (COLUMNS / UNIT) + unit];
    let low = vec4<f32>(unpack2x16float(words.x), unpack2x16float(words.y));
    let high = vec4<f32>(unpack2x16float(words.z), unpack2x16float(words.w));
    return dot(low, inputs[0]) + dot(high, inputs[1]);
}

// The UNIT inputs of unit u of stream s (see input_vector).
fn load_inputs(s: u32, u: u32, ss: ptr<function, f32>) -> array<vec4<f32>, UNIT / 4u> {
    return array(input_vector(s, u, 0u, ss), input_vector(s, u, 1u, ss));
}
// ---- end of format-specific part --------------------------------------------------------------------------------

@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> alpha: array<vec4<f32>>;

// Every member's sums, laid out [sum index][invocation] so that each reduction step reads consecutive words.
var<workgroup> partial_sums: array<f32, WORKGROUP_SIZE * (ROWS_PER_THREAD + select(0u, 1u, INPUT_MODE == 1u)) * BATCH>;

fn silu(v: vec4<f32>) -> vec4<f32> {
    // v * sigmoid(v), taking exp of non-positive arguments only (no overflow for large |v|).
    let e = exp(-abs(v));
    return v * select(e / (1.0 + e), 1.0 / (1.0 + e), v >= vec4<f32>(0.0));
}

// Inputs 4i .. 4i+3 of unit `unit` of stream `stream`, transformed by INPUT_MODE; *sum_of_squares accumulates the
// squares of the raw inputs (RMS_NORM mode). Each format's load_inputs() calls it with constant i: the inputs then
// stay in registers (no dynamically indexed private array, which some compilers leave in memory).
fn input_vector(stream: u32, unit: u32, i: u32, sum_of_squares: ptr<function, f32>) -> vec4<f32> {
    let index = (stream * X_STRIDE + unit * UNIT) / 4u + i;
    let value = x[index];
    if (INPUT_MODE == MODE_RMS_NORM) {
        *sum_of_squares += dot(value, value);
        return value * alpha[unit * (UNIT / 4u) + i];
    } else if (INPUT_MODE == MODE_SWIGLU) {
        return silu(value) * x[index + COLUMNS / 4u];
    }
    return value;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let teams = WORKGROUP_SIZE / THREADS_PER_ROW;
    let team = lane / THREADS_PER_ROW;
    let member = lane % THREADS_PER_ROW;
    let first_row = (workgroup.x * teams + team) * ROWS_PER_THREAD;
    // sums[s * ROWS_PER_THREAD + r]: dot products; then, in RMS_NORM mode, sums[dot_count + s]: sums of squares.
    let dot_count = ROWS_PER_THREAD * BATCH;
    let sum_count = select(dot_count, dot_count + BATCH, INPUT_MODE == MODE_RMS_NORM);

    var sums: array<f32, MAX_SUMS>;
    for (var unit = member; unit < COLUMNS / UNIT; unit += THREADS_PER_ROW) {
        for (var stream = 0u; stream < BATCH; stream++) {
            var sum_of_squares = 0.0;
            let inputs = load_inputs(stream, unit, &sum_of_squares);
            if (INPUT_MODE == MODE_RMS_NORM) {
                sums[dot_count + stream] += sum_of_squares;
            }
            for (var r = 0u; r < ROWS_PER_THREAD; r++) {
                // Rows past the end repeat the last row (uniform work, no branch) and are never written.
                let row = min(first_row + r, ROWS - 1u);
                sums[stream * ROWS_PER_THREAD + r] += unit_dot(row, unit, inputs);
            }
        }
    }

    for (var i = 0u; i < sum_count; i++) {
        partial_sums[i * WORKGROUP_SIZE + lane] = sums[i];
    }
    workgroupBarrier();

    // Tree reduction over the team, halving the active count (rounding up): any THREADS_PER_ROW works.
    var active_count = THREADS_PER_ROW;
    while (active_count > 1u) {
        let upper_half_start = (active_count + 1u) / 2u;
        if (member + upper_half_start < active_count) {
            for (var i = 0u; i < sum_count; i++) {
                let index = i * WORKGROUP_SIZE + lane;
                partial_sums[index] += partial_sums[index + upper_half_start];
            }
        }
        workgroupBarrier();
        active_count = upper_half_start;
    }

    let team_lane = team * THREADS_PER_ROW;  // where the team's totals ended up
    for (var i = member; i < dot_count; i += THREADS_PER_ROW) {
        let stream = i / ROWS_PER_THREAD;
        let row = first_row + i % ROWS_PER_THREAD;
        if (row < ROWS) {
            var value = partial_sums[i * WORKGROUP_SIZE + team_lane];
            if (INPUT_MODE == MODE_RMS_NORM) {
                let mean_square = partial_sums[(dot_count + stream) * WORKGROUP_SIZE + team_lane] / f32(COLUMNS);
                value *= inverseSqrt(mean_square + EPS);
            }
            let index = stream * Y_STRIDE + Y_OFFSET + row;
            if (ACCUMULATE) {
                value += y[index];
            }
            y[index] = value;
        }
    }
}
