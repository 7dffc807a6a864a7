"""Two plans of one LM on the same package, teacher-forced with the same inputs: the numeric effect of a fast path
(the int8 path of q4 matrices, f16 KV rings) measured against the portable path (test_lm_int8, test_lm_kv_f16);
and which kernel each of a plan's dispatches runs."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from kyutai_stt.engine import device as gpu
from kyutai_stt.engine.runtime import Engine
from kyutai_stt.models.lm import Tuning, build_lm_plan, tensors_of


def teacher_forced(package, tuning: Tuning, inputs: np.ndarray,
                   first_frame: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(logits [steps, text_card], tokens [steps]) with inputs[step] = (text token, codes...) fed at every step,
    from step index first_frame (rings empty, as after a reset)."""
    engine = Engine(build_lm_plan(package.config, tensors_of(package), tuning), package.read_stream)
    engine.reset(first_frame=first_frame)
    logits, tokens = [], []
    for step in inputs:
        engine.submit({"codes": step[1:].astype(np.uint32), "token": np.array([step[0]], np.uint32)})
        (result,) = engine.drain()
        logits.append(engine.read("lm.logits").view(np.float32))
        tokens.append(int(result.outputs["results"][0]))
    return np.stack(logits), np.array(tokens)


# (package path, tuning, inputs' bytes, first frame) -> teacher_forced's result: the full-size tests of the int8 and
# f16 paths run in one process (tests/conftest.py: the full-size group) and share their portable run (~35 s on
# lavapipe).
_RUNS: dict = {}


def teacher_forced_once(package, tuning: Tuning, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """teacher_forced, remembered for the process: for a reference run that several comparisons share."""
    key = (str(package.root), repr(tuning), inputs.tobytes())
    if key not in _RUNS:
        _RUNS[key] = teacher_forced(package, tuning, inputs)
    return _RUNS[key]


def kernels_by_label(plan) -> dict[str, str]:
    """Each dispatch's label -> the kernel file its pipeline runs (a matrix's dispatch is labelled by its tensor)."""
    kernel = {p.name: p.kernel for p in plan.pipelines}
    return {d.label: kernel[d.pipeline] for d in plan.dispatches}


def random_inputs(cfg, steps: int, seed: int = 0) -> np.ndarray:
    """[steps, 1 + n_q]: random text tokens and audio codes (a comparison of two paths needs no official run)."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.integers(0, cfg.text_card, (steps, 1)), rng.integers(0, cfg.card, (steps, cfg.n_q))],
                          axis=1)


@dataclass
class Comparison:
    worst: float              # max |logit error| / max |logit|, over the steps
    relative_rms: float
    tokens_equal: float       # share of steps
    decided: np.ndarray       # steps whose top two logits are further apart than 2 x the tolerance
    decided_equal: bool       # the tokens of those steps are equal

    def line(self) -> str:
        return (f"logits: max error {self.worst:.2e} of max |logit|, relative RMS {self.relative_rms:.2e}; tokens "
                f"equal {self.tokens_equal:.0%} ({self.decided.sum()} steps beyond the near-tie margin)")


def compare(reference: tuple[np.ndarray, np.ndarray], other: tuple[np.ndarray, np.ndarray],
            tolerance: float) -> Comparison:
    (ref_logits, ref_tokens), (logits, tokens) = reference, other
    scale = np.abs(ref_logits).max(axis=1, keepdims=True)
    top2 = np.sort(ref_logits, axis=1)[:, -2:]
    decided = (top2[:, 1] - top2[:, 0]) > 2 * tolerance * scale[:, 0]
    return Comparison(float((np.abs(logits - ref_logits) / scale).max()),
                      float(np.sqrt(((logits - ref_logits) ** 2).mean() / (ref_logits**2).mean())),
                      float(np.mean(tokens == ref_tokens)), decided,
                      bool((tokens[decided] == ref_tokens[decided]).all()))


def open_full_q4_package(request):
    """The q4 package FULL_Q4_PACKAGE names (on a lent GPU: benchmarks/gpu_run.sh makes one), else the default q4
    package of the cached full-size synthetic checkpoint (the full_q4_package fixture, made only then)."""
    from kyutai_stt.weights.package import open_package

    path = os.environ.get("FULL_Q4_PACKAGE") or request.getfixturevalue("full_q4_package").path
    return open_package(path, verify_hashes=False)


def full_size_against_portable(request, capsys, label: str, gpu_pair: tuple[Tuning, Tuning],
                               cpu_pair: tuple[Tuning, Tuning], tolerance: float) -> Comparison:
    """A fast path against the portable one ((portable, fast) tunings) on the full-size q4 package over random codes
    and text tokens: 4 steps with the CPU launch shapes on a CPU adapter, 24 with the GPU ones on a GPU. The portable
    run is shared by the fast paths' tests (teacher_forced_once). Prints the comparison's line."""
    package = open_full_q4_package(request)
    adapter = gpu.adapter_summary()
    (portable, fast), steps = (cpu_pair, 4) if adapter["adapter_type"].lower() == "cpu" else (gpu_pair, 24)
    inputs = random_inputs(package.config, steps)
    c = compare(teacher_forced_once(package, portable, inputs), teacher_forced(package, fast, inputs), tolerance)
    with capsys.disabled():
        print(f"\n[{label} vs portable, full size q4, {steps} steps, {adapter['name']}] {c.line()}")
    return c
