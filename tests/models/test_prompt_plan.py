"""The text prompt on the GPU (argmax.wgsl, the plan's "prompt" input) vs the official prompting script.

The LM plan runs free (each token fed back on the GPU, the prompt position advanced on the GPU) on the f16 package
(its weights equal the bf16 checkpoint's), with the official run's Mimi codes fed by the host: the token stream must
equal the official one at every step, the prompt position its count of emitted ids. For both families: the tiny
1B and the tiny 2.6B-family model (no VAD heads, 4000 pieces, 31 frames of delay). Fixtures:
tools/make_reference.py --prompts (tests/fixtures/prompt_tiny_seed0, prompt_tiny26_seed0; docs/reference.md).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kyutai_stt.engine import device as gpu
from kyutai_stt.engine.runtime import Engine
from kyutai_stt.models.lm import lm_plan
from kyutai_stt.models.variants import tuning_for

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MODELS = {"tiny": ("tiny_packages", "prompt_tiny_seed0", "reference_tiny_seed0"),           # packages fixture,
          "tiny26": ("tiny26_packages", "prompt_tiny26_seed0", "reference_tiny26_seed0")}   # prompt and LM fixtures
# The tiny model's logits are a few units to tens: engine-vs-official logit differences are ~1e-4 of that
# (test_lm_parity.py), so a margin above this between the two best allowed logits is decided, not a near-tie.
DECIDED_MARGIN = 1e-2


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request):
    return request.param


@pytest.fixture(scope="module")
def fixture(model):
    path = FIXTURES / MODELS[model][1]
    return dict(np.load(path.with_suffix(".npz"))), json.loads(path.with_suffix(".json").read_text())


@pytest.fixture(scope="module")
def engine(model, request):
    package = request.getfixturevalue(MODELS[model][0])("f16")
    return Engine(lm_plan(package, tuning_for(*gpu.device_traits())),
                  package.read_stream)


def prompt_words(ids, capacity: int) -> np.ndarray:
    """The plan's prompt input: [n, e = 0, ids, zeros] u32."""
    words = np.zeros(2 + capacity, np.uint32)
    words[0], words[2:2 + len(ids)] = len(ids), ids
    return words


def run_free(engine: Engine, codes: np.ndarray, ids, steps: int, script: bool = False) -> list[int]:
    """Step 0 start codes, step k the codes of frame k-1 (the engine's alignment), or with script=True those of
    frame k (the prompting script's: frame 0 never reaches the model); the prompt written with the first frame."""
    engine.reset()
    start = np.full(codes.shape[1], engine.plan.buffer("lm.codes").reset_fill, np.uint32)
    capacity = engine.plan.buffer(engine.plan.inputs["prompt"]).shape[0] - 2
    out = []
    for k in range(steps):
        inputs = {"codes": start if k == 0 else codes[k if script else k - 1].astype(np.uint32)}
        if k == 0 and ids is not None:          # None: the prompt buffer as reset left it
            inputs["prompt"] = prompt_words(ids, capacity)
        out += engine.submit(inputs)
    return [int(r.outputs["results"][0]) for r in out + engine.drain()]


@pytest.mark.parametrize("case", ["text", "audio_text", "long_text"])
def test_token_stream_equals_the_official_prompt_script(engine, fixture, case):
    arrays, meta = fixture
    ids, tokens = arrays[f"{case}_prompt_ids"], arrays[f"{case}_tokens"]
    assert meta["cases"][case]["min_margin"] > DECIDED_MARGIN, "near-ties: the comparison would be luck"
    assert run_free(engine, arrays[f"{case}_codes"], ids, len(tokens)) == tokens.tolist()
    emitted = int(engine.read("lm.prompt")[1])
    assert emitted == meta["cases"][case]["emitted_at_end"]
    if case == "long_text":
        assert emitted < len(ids), "the fixture's long prompt is still enforced when the audio ends"
    else:
        assert emitted == len(ids)


@pytest.mark.parametrize("case", ["text", "audio_text", "long_text"])
def test_token_stream_equals_the_script_fed_as_the_script_feeds_it(engine, fixture, case):
    """The script calls LMGen once per frame (frame k's codes at step k): fed that way, the plan gives the script's
    own token stream, token for token ({case}_script_tokens)."""
    arrays, meta = fixture
    tokens = arrays[f"{case}_script_tokens"]
    assert meta["cases"][case]["script_min_margin"] > DECIDED_MARGIN, "near-ties: the comparison would be luck"
    got = run_free(engine, arrays[f"{case}_codes"], arrays[f"{case}_prompt_ids"], len(tokens), script=True)
    assert got == tokens.tolist()
    assert int(engine.read("lm.prompt")[1]) == meta["cases"][case]["script_emitted_at_end"]


def test_without_a_prompt_the_stream_is_the_unprompted_one(engine, fixture):
    """The audio-only case has no text prompt: a zero prompt input changes nothing; and a reset drops a prompt
    (the next stream, without one, equals the official unprompted run)."""
    arrays, _ = fixture
    codes, tokens = arrays["audio_codes"], arrays["audio_tokens"]
    run_free(engine, arrays["text_codes"], arrays["text_prompt_ids"], 5)
    assert run_free(engine, codes, None, len(tokens)) == tokens.tolist()
    assert run_free(engine, codes, [], len(tokens)) == tokens.tolist()


def test_fixture_was_made_from_the_tiny_checkpoint_of_the_other_fixtures(model, fixture):
    """The prompt fixture and the model's LM fixture (reference_tiny_seed0, reference_tiny26_seed0: their
    checkpoints are pinned to synthetic.py by tests/test_reference.py and tests/test_model_family.py) come from the
    same checkpoint files: regenerate both after a change to the synthetic weights."""
    _, meta = fixture
    other = json.loads((FIXTURES / f"{MODELS[model][2]}.json").read_text())["checkpoint"]["files"]
    assert {k: v["sha256"] for k, v in meta["checkpoint"]["files"].items()} == \
        {k: v["sha256"] for k, v in other.items()}
