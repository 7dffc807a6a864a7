"""The q4 engine vs the official implementation on the *same* weights: the package's dequantised q4 values.

kyutai_stt.reference.dequantized writes the q4 package's LM weights back into the official layout (F32); the official
implementation (moshi, fp32, CPU, through tools/make_reference.py) runs on that checkpoint, and our engine runs on
the q4 package, teacher-forced with the official run's input tokens. Both then compute with identical weights, so
the tolerances are those of the f16 rung (docs/validation.md): logits within 1e-4 of the largest |logit|, tokens
identical wherever the official top-2 margin exceeds twice that, VAD probabilities within 1e-4; over 40 steps,
5x the tiny context of 8 (the KV ring wraps 4 times).
"""
from __future__ import annotations

import numpy as np
import pytest

# Shared with the f16 rung (same directory; pytest puts it on sys.path): one definition of the run and tolerances.
from test_lm_parity import (
    FIXTURE,
    LOGIT_TOLERANCE,
    assert_matches_official,
    engine_for,
    make_reference_tool,
    run_teacher_forced,
)

from kyutai_stt.config import LMConfig
from kyutai_stt.reference.dequantized import official_sources, write_dequantized_checkpoint
from kyutai_stt.weights import checkpoint, safetensors_io

STEPS = 40                      # steps - 1 Mimi frames of the committed audio feed them


@pytest.fixture(scope="module")
def dequantized(tmp_path_factory, tiny_checkpoint, tiny_packages):
    """(source checkpoint, q4 package, dequantised checkpoint paths, official arrays, official metadata)."""
    tmp = tmp_path_factory.mktemp("dequantized")
    package = tiny_packages("q4")
    paths = write_dequantized_checkpoint(package, tiny_checkpoint, tmp / "dequantized")
    tool = make_reference_tool()
    arrays, meta = tool.make_reference(tmp / "dequantized", tool.DEFAULT_AUDIO, steps=STEPS, frames=STEPS - 1)
    return tiny_checkpoint, package, paths, arrays, meta


def test_dequantized_checkpoint_is_the_official_layout_holding_the_package_values(dequantized):
    source, package, paths, _, _ = dequantized
    cfg = LMConfig.load(paths["config"])
    layout = checkpoint.lm_layout(cfg)
    index = safetensors_io.read_index(paths["lm"])
    assert {n: (i.dtype, i.shape) for n, i in index.items()} == {n: ("F32", s) for n, s in layout.items()}
    for package_name, parts in official_sources(cfg).items():
        values = np.concatenate([safetensors_io.load_tensor(paths["lm"], index[n]).reshape(-1) for n, _ in parts])
        np.testing.assert_array_equal(values, package.dequantize(package_name).reshape(-1), err_msg=package_name)
    assert len(official_sources(cfg)["vad_heads"]) == cfg.extra_heads_num_heads == 4
    for key in ("config", "mimi", "mimi_config", "tokenizer"):
        assert paths[key].read_bytes() == (source / paths[key].name).read_bytes(), key


def test_q4_engine_equals_official_on_dequantized_weights_across_the_ring_wrap(dequantized, capsys):
    _, package, _, arrays, meta = dequantized
    assert STEPS > 2 * meta["lm"]["context"]
    # The Mimi file is copied unchanged: the official codes are the committed fixture's (streaming is causal).
    fixture = dict(np.load(FIXTURE.with_suffix(".npz")))
    np.testing.assert_array_equal(arrays["mimi_codes"], fixture["mimi_codes"][:STEPS - 1])
    ours = run_teacher_forced(engine_for(package), arrays["lm_input_tokens"], STEPS)

    logits = np.stack([s[0] for s in ours])
    expected = arrays["lm_text_logits"]
    relative = float((np.abs(logits - expected).max(axis=1) / np.abs(expected).max(axis=1)).max())
    vad_error = float(np.abs(np.stack([s[2] for s in ours]) - arrays["lm_vad_probs"]).max())
    same = int(np.sum([s[1] for s in ours] == arrays["lm_tokens"]))
    with capsys.disabled():
        print(f"\n[q4 engine vs official on the dequantised q4 weights, tiny, {STEPS} steps] max logit error "
              f"{relative:.2e} of max |logit| (tolerance {LOGIT_TOLERANCE:.0e}), VAD max error {vad_error:.2e}, "
              f"greedy tokens equal on {same}/{STEPS} steps")
    assert_matches_official(ours, arrays, STEPS)
