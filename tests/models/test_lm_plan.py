"""The LM plan on the native engine vs the numpy whole-step reference, on a tiny q4 package, across the ring wrap."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from kyutai_stt.engine.runtime import Engine
from kyutai_stt.models.lm import MatvecTuning, Tuning, build_lm_plan, tensors_of
from kyutai_stt.models.variants import tunings
from kyutai_stt.reference import lm as ref

STEPS = 20          # > 2 x the tiny context (8): the KV ring wraps twice


@pytest.fixture(scope="module")
def tiny_package(tiny_packages):
    return tiny_packages("q4")


# Launch shapes change speed, never results: the GPU profile (with f32 rings: its f16 rings round the keys and
# values, tests/models/test_lm_kv_f16.py), and one with 3 attention splits over the ring of 8 (some empty early on)
# and small matvec teams, so the split + combine path runs too.
# The third uses matvec_q4_subgroup for every matrix, with teams of 4 (any subgroup size here is >= 4).
@pytest.mark.parametrize("tuning", [replace(tunings()["gpu"], kv_f16=False),
                                    Tuning({"default": MatvecTuning(64, 16, 2)}, 3),
                                    Tuning({"default": MatvecTuning(64, 4, 2, subgroup=True)}, 8)],
                         ids=["gpu-tuning", "split-attention", "subgroup-matvec"])
def test_plan_matches_numpy_reference(tiny_package, tuning):
    cfg = tiny_package.config
    plan = build_lm_plan(cfg, tensors_of(tiny_package), tuning)
    engine = Engine(plan, tiny_package.read_stream)
    weights = {name: tiny_package.dequantize(name) for name in tiny_package.tensor_names()
               if not name.startswith("mimi.")}
    weights = {k: v.reshape(-1) if v.ndim == 1 or v.shape[0] == 1 else v for k, v in weights.items()}
    rng = np.random.default_rng(1)
    all_codes = [np.full(cfg.n_q, cfg.card)] + [rng.integers(0, cfg.card, cfg.n_q) for _ in range(STEPS - 1)]
    results = []
    for codes in all_codes:
        results += engine.submit({"codes": codes.astype(np.uint32)})
    results += engine.drain()
    state, token, compared = ref.LMState.new(cfg), cfg.text_card, 0
    for step, (codes, result) in enumerate(zip(all_codes, results)):
        logits, vad, expected = ref.lm_step_reference(weights, cfg, state, codes, token)
        gpu_token = int(result.outputs["results"][0])
        gpu_vad = result.outputs["results"][1:].view(np.float32)
        top2 = np.sort(logits)[-2:]
        if top2[1] - top2[0] > 1e-4 * np.abs(logits).max():
            assert gpu_token == expected, f"step {step}"
            compared += 1
        np.testing.assert_allclose(gpu_vad, vad, atol=1e-5, err_msg=f"VAD at step {step}")
        token = gpu_token
    assert compared >= STEPS - 2, "too many near-ties: the comparison says little"
