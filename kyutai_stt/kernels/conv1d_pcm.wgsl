// The first conv of a streaming encoder: raw mono PCM (one channel) -> C_OUT channels, kernel TAPS, stride 1, with
// its own history of the last TAPS - 1 samples, writing a time-major output with history regions (as conv1d.wgsl).
//
//   pcm:     f32[FRAME]                    this frame's samples (host- or plan-written input)
//   history: f32[2 * HISTORY_REGION]       region r holds TAPS - 1 samples; this frame reads region `parity`
//   in[i] = i < TAPS - 1 ? history[parity * HISTORY_REGION + i] : pcm[i - (TAPS - 1)],   i < FRAME + TAPS - 1
//   y[t, o] = params[BIAS_OFFSET + o] + sum_{j < TAPS} w[o * TAPS + j] * in[t + j],   t < FRAME, o < C_OUT
//   written as conv1d.wgsl writes (consumer history Y_HISTORY rows, double-buffered regions of Y_REGION floats):
//     y[Y_OFFSET + parity * Y_REGION + (Y_HISTORY + t) * C_OUT + o], and for t >= FRAME - Y_HISTORY also
//     y[Y_OFFSET + (1 - parity) * Y_REGION + (t - FRAME + Y_HISTORY) * C_OUT + o]
//   history[(1 - parity) * HISTORY_REGION + i] = pcm[FRAME - (TAPS - 1) + i]   (next frame's history)
//   parity = frame_values[PARITY_INDEX] % 2.
// Streams (a plan of several, docs/plan.md): workgroup z is the stream s, whose pcm, history and y start
//   s * PCM_STREAM, s * HISTORY_STREAM, s * Y_STREAM floats in, and whose parity is frame_values[PARITY_INDEX + s].
//
// Bindings (group 0): 0 = w (read, f32 [C_OUT, TAPS]: the package's f32 `w` stream), 1 = params (read, f32),
//   2 = pcm (read), 3 = history (read_write), 4 = y (read_write), 5 = frame_values (read, u32: the step buffer).
// Dispatch: (ceil(FRAME / STEPS_PER_WORKGROUP), 1, STREAMS) workgroups of WORKGROUP_SIZE invocations; invocation i
//   computes channels i, i + WORKGROUP_SIZE, ... (neighbours write neighbouring floats) for the workgroup's steps.
// Structure, for latency: the workgroup's STEPS_PER_WORKGROUP + TAPS - 1 input samples go to workgroup memory (one
//   round of loads where WORKGROUP_SIZE covers them), and each invocation loads its channel's taps as MAX_TAPS
//   written-out loads (the driver does not overlap the loads of successive loop iterations: docs/architecture.md);
//   the taps are still added in order.
// Constraints: FRAME >= TAPS - 1, FRAME >= Y_HISTORY, HISTORY_REGION >= TAPS - 1, TAPS <= MAX_TAPS.

override C_OUT: u32;
override TAPS: u32;
override FRAME: u32;
override HISTORY_REGION: u32 = TAPS - 1u;
override Y_OFFSET: u32 = 0u;
override Y_REGION: u32 = 0u;
override Y_HISTORY: u32 = 0u;
override BIAS_OFFSET: u32 = 0u;
override PARITY_INDEX: u32 = 0u;
override PCM_STREAM: u32 = 0u;
override HISTORY_STREAM: u32 = 0u;
override Y_STREAM: u32 = 0u;
override STEPS_PER_WORKGROUP: u32 = 16u;
override WORKGROUP_SIZE: u32 = 64u;

const MAX_TAPS = 8u;

@group(0) @binding(0) var<storage, read> w: array<f32>;
@group(0) @binding(1) var<storage, read> params: array<f32>;
@group(0) @binding(2) var<storage, read> pcm: array<f32>;
@group(0) @binding(3) var<storage, read_write> history: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> frame_values: array<u32>;

// The input samples of the workgroup's steps: window[i] = in[first step + i].
var<workgroup> window: array<f32, STEPS_PER_WORKGROUP + MAX_TAPS>;

// The taps of channel o (entries past TAPS repeat the last one, unused).
fn channel_taps(o: u32) -> array<f32, MAX_TAPS> {
    let at = o * TAPS;
    return array(w[at], w[at + min(1u, TAPS - 1u)], w[at + min(2u, TAPS - 1u)], w[at + min(3u, TAPS - 1u)],
                 w[at + min(4u, TAPS - 1u)], w[at + min(5u, TAPS - 1u)], w[at + min(6u, TAPS - 1u)],
                 w[at + min(7u, TAPS - 1u)]);
}

fn sample(i: u32, parity: u32, stream: u32) -> f32 {
    if (i < TAPS - 1u) {
        return history[stream * HISTORY_STREAM + parity * HISTORY_REGION + i];
    }
    return pcm[stream * PCM_STREAM + i - (TAPS - 1u)];
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let stream = workgroup.z;
    let parity = frame_values[PARITY_INDEX + stream] % 2u;
    let y_base = Y_OFFSET + stream * Y_STREAM;
    let first = workgroup.x * STEPS_PER_WORKGROUP;
    let end = min(first + STEPS_PER_WORKGROUP, FRAME);
    for (var i = lane; i < end - first + TAPS - 1u; i += WORKGROUP_SIZE) {
        window[i] = sample(first + i, parity, stream);
    }
    workgroupBarrier();
    for (var o = lane; o < C_OUT; o += WORKGROUP_SIZE) {
        let bias = params[BIAS_OFFSET + o];
        let taps = channel_taps(o);
        for (var t = first; t < end; t++) {
            let k = t - first;
            var acc = taps[0] * window[k];   // 0.0 + the first product, exactly
            for (var j = 1u; j < MAX_TAPS; j++) {
                if (j < TAPS) {
                    acc += taps[j] * window[k + j];
                }
            }
            let v = acc + bias;
            y[y_base + parity * Y_REGION + (Y_HISTORY + t) * C_OUT + o] = v;
            if (Y_REGION > 0u && t + Y_HISTORY >= FRAME) {
                y[y_base + (1u - parity) * Y_REGION + (t + Y_HISTORY - FRAME) * C_OUT + o] = v;
            }
        }
    }
    // The next frame's history: read by no workgroup of this frame (they read region `parity`).
    if (workgroup.x == 0u) {
        for (var i = lane; i < TAPS - 1u; i += WORKGROUP_SIZE) {
            history[stream * HISTORY_STREAM + (1u - parity) * HISTORY_REGION + i] =
                pcm[stream * PCM_STREAM + FRAME - (TAPS - 1u) + i];
        }
    }
}
