"""A stream's audio as model frames: `prefix` samples of silence first, then the caller's samples cut into whole
frames; flush() pads the last frame with silence and appends `tail` silent frames (the text lags the audio), then
starts the next stream. The browser's twin is web/framing.js; both are held to tests/vectors/framing.json."""
from __future__ import annotations

import numpy as np


class Framer:
    def __init__(self, frame_size: int, prefix: int):
        if frame_size < 1 or prefix < 0:
            raise ValueError(f"frame_size {frame_size} must be >= 1 and prefix {prefix} >= 0")
        self.frame_size, self.prefix = int(frame_size), int(prefix)
        self._pending = np.zeros(self.prefix, np.float32)         # [< frame_size after each push] not yet framed

    @property
    def pending(self) -> int:
        """Samples held back until they fill a frame (the prefix, before the first push)."""
        return self._pending.size

    def push(self, samples: np.ndarray) -> list[np.ndarray]:
        """Append samples; return every frame [frame_size] f32 now whole, in order."""
        pending = np.concatenate([self._pending, np.asarray(samples, np.float32).reshape(-1)])
        whole = pending.size // self.frame_size
        frames = [pending[k * self.frame_size:(k + 1) * self.frame_size] for k in range(whole)]
        self._pending = pending[whole * self.frame_size:].copy()
        return frames

    def flush(self, tail: int) -> list[np.ndarray]:
        """The last frame padded with silence, then `tail` silent frames; the next push starts a new stream."""
        frames = -(-self._pending.size // self.frame_size) + int(tail)
        out = self.push(np.zeros(frames * self.frame_size - self._pending.size, np.float32))
        self._pending = np.zeros(self.prefix, np.float32)
        return out
