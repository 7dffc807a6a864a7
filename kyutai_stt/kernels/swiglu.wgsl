// SwiGLU gate of the FFN: h = silu(gate) * up, from the FFN's first projection [gate | up].
//
//   x: [STREAMS, 2 * WIDTH] f32   (gate rows first: x[s, :WIDTH] = gate, x[s, WIDTH:] = up)
//   h[s, f] = silu(x[s, f]) * x[s, WIDTH + f],   silu(g) = g * sigmoid(g) = g / (1 + exp(-g)),   f < WIDTH
// The LM step fuses this into the FFN's output matvec (INPUT_MODE 2 of matvec_*.wgsl); this kernel is for hosts or
// tests that want h itself.
//
// Bindings (group 0): 0 = x (read), 1 = h (read_write, [STREAMS, WIDTH] f32).
// Dispatch: (ceil(WIDTH / WORKGROUP_SIZE), STREAMS, 1).

// F: 5632 for the LM.
override WIDTH: u32;
// Elementwise: any size up to 256 works.
override WORKGROUP_SIZE: u32 = 256u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> h: array<f32>;

// g * sigmoid(g), taking exp of a non-positive argument only (no overflow for large |g|).
fn silu(g: f32) -> f32 {
    let e = exp(-abs(g));
    return g * select(e / (1.0 + e), 1.0 / (1.0 + e), g >= 0.0);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let f = id.x;
    let stream = id.y;
    if (f >= WIDTH) {
        return;
    }
    let gate = x[stream * 2u * WIDTH + f];
    let up = x[stream * 2u * WIDTH + WIDTH + f];
    h[stream * WIDTH + f] = silu(gate) * up;
}
