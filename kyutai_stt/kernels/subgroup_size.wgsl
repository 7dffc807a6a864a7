enable subgroups;
// Probe: the subgroup size a 256-invocation compute pipeline gets on this device (NVIDIA 32, lavapipe 8,
// SwiftShader 4). WebGPU reports only the range the API allows, and matvec_q4_subgroup's teams must fit in one
// subgroup, so hosts measure it once.
//
// Bindings (group 0): 0 = size (read_write, u32[1]). Dispatch: (1, 1, 1).
@group(0) @binding(0) var<storage, read_write> size: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(subgroup_size) subgroup_size: u32, @builtin(local_invocation_index) lane: u32) {
    if (lane == 0u) { size[0] = subgroup_size; }
}
