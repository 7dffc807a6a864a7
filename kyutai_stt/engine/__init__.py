"""The native host: the WebGPU device (wgpu-py), the plan format, and the runtime that interprets a plan."""
