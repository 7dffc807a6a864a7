"""The 2.6B family on the native engine vs the official implementation: the tiny 2.6B-family model (8 heads of
16, 3 layers, context 9, 4000 text tokens, no VAD heads) teacher-forced with the official run's inputs, 40 steps:
the KV ring wraps 4 times. Same tolerances as the 1B (test_lm_parity.py, docs/validation.md)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_lm_parity import assert_matches_official, engine_for, make_reference_tool, package_of, run_teacher_forced

from kyutai_stt.config import TINY_2_6B_LM

FIXTURE = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "reference_tiny26_seed0"


@pytest.fixture(scope="module")
def arrays():
    return dict(np.load(FIXTURE.with_suffix(".npz")))


def test_tiny_2_6b_f16_engine_equals_official_across_the_ring_wrap(tiny26_packages, arrays):
    package = tiny26_packages("f16")
    assert package.config == TINY_2_6B_LM and package.manifest["variant"] == "plain"
    steps = len(arrays["lm_tokens"])
    assert steps > 4 * TINY_2_6B_LM.context
    ours = run_teacher_forced(engine_for(package), arrays["lm_input_tokens"], steps)
    assert all(len(vad) == 0 for _, _, vad in ours)          # no VAD heads: the results hold the token alone
    assert_matches_official(ours, arrays, steps)
    assert [t for _, t, _ in ours] == arrays["lm_tokens"].tolist()


def test_tiny_2_6b_q4_package_runs_close_to_official(tiny26_packages, arrays):
    steps = len(arrays["lm_tokens"])
    q4 = run_teacher_forced(engine_for(tiny26_packages("q4")), arrays["lm_input_tokens"], steps)
    logits = np.stack([s[0] for s in q4])
    expected = arrays["lm_text_logits"][:steps]
    relative_rms = float(np.sqrt(((logits - expected) ** 2).mean() / (expected ** 2).mean()))
    agreement = float(np.mean([s[1] for s in q4] == arrays["lm_tokens"][:steps]))
    print(f"\n[q4 vs bf16, tiny 2.6B family, {steps} steps] logits relative RMS error {relative_rms:.4f}, "
          f"greedy token agreement {agreement:.0%}")
    assert relative_rms < 0.3 and agreement > 0.5


@pytest.mark.slow
@pytest.mark.huge
@pytest.mark.full_size
def test_full_2_6b_engine_equals_official_for_8_steps(tmp_path):
    """Full size, teacher-forced: the official run needs ~10 GB in fp32 (a child process), the f16 package 5 GB."""
    tool = make_reference_tool()
    steps = 8
    arrays, _ = tool.load(tool.cached_reference("2.6b", seed=0, steps=steps + 1, frames=steps))
    package = package_of(tmp_path, tool.synth_checkpoint("2.6b", 0), "f16")
    assert_matches_official(run_teacher_forced(engine_for(package), arrays["lm_input_tokens"], steps), arrays, steps)
