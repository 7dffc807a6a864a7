"""kyutai-stt: Kyutai's streaming STT on WebGPU, natively (wgpu-py) and in the browser, from one plan."""

__version__ = "0.1.0"
