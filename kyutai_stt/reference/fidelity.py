"""What a precision policy does to the model's output: the numpy references on a package's dequantised weights vs
on the source checkpoint's values (f32), over an audio file. `kyutai-stt convert --report` prints it.

- Mimi: the streaming encode of `frames` frames (mimi_reference.encode, float64) with each weight set: the share of
  codes equal (all 32 levels, and level 0, the semantic codes the LM leans on most).
- LM: `steps` teacher-forced steps (lm_reference, float32) with each weight set, both fed the reference run's
  inputs (codes of frame k - 1 and the reference's own token of step k - 1 at step k, start tokens at step 0), so
  one flipped token does not derail the rest: the share of greedy tokens equal.
LM weights are read one tensor at a time when a step needs them (a full-size LM in f32 is 4 GB), so each step
of the full model re-reads and dequantises ~1 B values: seconds per step.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kyutai_stt.reference import lm as lm_reference
from kyutai_stt.reference import mimi as mimi_reference
from kyutai_stt.weights.package import Package

FRAME_SIZE = 1920


@dataclass
class Effect:
    frames: int
    codes_equal: float          # share of the frames x 32 codes equal to the reference encode's
    level0_equal: float         # the same over level 0 only
    steps: int
    tokens_equal: float         # share of greedy tokens equal to the reference run's

    def describe(self, quant: str) -> str:
        return (f"end to end, {quant} policy vs the source weights in f32 (numpy references): Mimi codes equal "
                f"{self.codes_equal:.1%} (level 0: {self.level0_equal:.1%}) over {self.frames} frames; "
                f"LM greedy tokens equal {self.tokens_equal:.1%} over {self.steps} teacher-forced steps")


class _Lazy(dict):
    """A read-only mapping that computes each value when it is looked up, and keeps none."""

    def __init__(self, names, get: Callable[[str], np.ndarray]):
        super().__init__()
        self._names, self._get = set(names), get

    def __contains__(self, name) -> bool:
        return name in self._names

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._names:
            raise KeyError(name)
        return self._get(name)


def measure(package: Package, source: Callable[[str], np.ndarray], pcm: np.ndarray, frames: int = 150,
            steps: int = 12) -> Effect:
    """pcm: float32 mono 24 kHz samples; source(name): the package tensor's values before quantisation."""
    frames = min(frames, len(pcm) // FRAME_SIZE)
    steps = min(steps, frames)            # step k >= 1 is fed the codes of frame k - 1
    mimi_names = [n for n in package.tensor_names() if n.startswith("mimi.")]
    reference = {n: source(n) for n in mimi_names}
    _, ref_codes, _ = mimi_reference.encode(reference, pcm, package.mimi_config, frames=frames)
    del reference
    _, codes, _ = mimi_reference.encode({n: package.dequantize(n) for n in mimi_names}, pcm, package.mimi_config,
                                        frames=frames)
    equal = codes == ref_codes

    cfg = package.config
    lm_names = [n for n in package.tensor_names() if not n.startswith("mimi.")]
    ref_weights, weights = _Lazy(lm_names, source), _Lazy(lm_names, package.dequantize)
    ref_state = lm_reference.LMState.new(cfg, np.float32)
    state = lm_reference.LMState.new(cfg, np.float32)
    step_codes, token = lm_reference.initial_inputs(cfg)
    same = 0
    for k in range(steps):
        *_, ref_token = lm_reference.lm_step_reference(ref_weights, cfg, ref_state, step_codes, token, np.float32)
        *_, ours = lm_reference.lm_step_reference(weights, cfg, state, step_codes, token, np.float32)
        same += ours == ref_token
        step_codes, token = ref_codes[k], ref_token
    return Effect(frames, float(equal.mean()), float(equal[:, 0].mean()), steps, same / steps if steps else 0.0)
