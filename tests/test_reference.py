"""The reference fixtures and the official implementation behind them (tools/make_reference.py, docs/reference.md).

Two kinds of tests:
- on the committed fixture alone (numpy only): alignment, sanity of the synthetic model, Mimi streaming vs offline;
- with the official implementation (torch + moshi, installed by the README's test command; skipped without them):
  strict loading of synthetic checkpoints, LMGen's alignment, and that the committed fixture is reproduced.
"""
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from kyutai_stt.config import FULL_LM, TINY_LM, TINY_MIMI, replace
from kyutai_stt.weights.synthetic import write_checkpoint

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
AUDIO = FIXTURES / "speech_en_fr_24k.wav"
TINY_FIXTURE = FIXTURES / "reference_tiny_seed0"           # .npz + .json: tiny LM seed 0, tiny Mimi seed 0
TINY_STEPS = 40                                            # > 2 x TINY_LM.context: the KV ring wraps 4 times
# Frames whose transformer steps (2 each) all see their whole window in moshi's streaming ring: 9 for the tiny
# Mimi's context of 19 steps (125 for the real one's 250: 10 s).
MIMI_CONTEXT_FRAMES = TINY_MIMI.context // 2
# Re-running on another CPU may change float rounding (BLAS kernels differ by ISA), never a token or a code:
# floats must agree within this fraction of the array's largest magnitude. Same machine: bit-exact (checked
# separately, reported rather than required).
REPRODUCE_RELATIVE_TOLERANCE = 1e-4
TINY_SYNTHETIC = {"size": "tiny", "seed": 0, "vad_heads": True, "mimi": "tiny"}


@pytest.fixture(scope="module")
def fixture():
    with np.load(TINY_FIXTURE.with_suffix(".npz")) as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, json.loads(TINY_FIXTURE.with_suffix(".json").read_text())


# ------------------------------------------------------------------------------------ committed fixture (numpy)
def test_fixture_shapes_and_provenance(fixture):
    a, meta = fixture
    frames, steps = 150, TINY_STEPS
    assert a["mimi_codes"].shape == a["mimi_offline_codes"].shape == (frames, 32)
    assert a["mimi_latents"].shape == a["mimi_offline_latents"].shape == (frames, TINY_MIMI.dimension)
    assert a["lm_input_tokens"].shape == (steps, 33)
    assert a["lm_text_logits"].shape == (steps, 8000) and a["lm_text_logits"].dtype == np.float32
    assert a["lm_hidden"].shape == (steps, TINY_LM.dim)
    assert a["lm_vad_probs"].shape == (steps, 4) and a["lm_extra_heads_probs"].shape == (steps, 4, 6)
    assert meta["checkpoint"]["synthetic"] == TINY_SYNTHETIC
    assert meta["audio"]["sha256"] == sha256(AUDIO)
    assert meta["versions"]["moshi"] == "0.2.13" and meta["runtime"]["dtype"] == "float32"
    assert steps > 2 * meta["lm"]["context"]
    assert 2 * frames > TINY_MIMI.context                  # the Mimi encoder transformer's context is crossed


def test_fixture_alignment(fixture):
    """step 0: start tokens; step k >= 1: (token of step k-1, codes of frame k-1): recorded from the embeddings'
    actual inputs inside the official model, so this checks what moshi did, not what we meant to do."""
    a, _ = fixture
    inputs, tokens, codes = a["lm_input_tokens"], a["lm_tokens"], a["mimi_codes"]
    assert inputs[0, 0] == TINY_LM.text_card and (inputs[0, 1:] == TINY_LM.card).all()
    assert np.array_equal(inputs[1:, 0], tokens[:-1])
    assert np.array_equal(inputs[1:, 1:], codes[:TINY_STEPS - 1])
    assert np.array_equal(tokens, a["lm_text_logits"].argmax(axis=1))
    assert np.array_equal(a["lm_vad_probs"], a["lm_extra_heads_probs"][:, :, 0])
    np.testing.assert_allclose(a["lm_extra_heads_probs"].sum(axis=2), 1.0, rtol=1e-6)


def test_synthetic_model_is_not_degenerate(fixture):
    """Codes and tokens vary, VAD probabilities are not saturated, the argmax is mostly clear (docs/synthetic.md)."""
    a, meta = fixture
    codes = a["mimi_codes"]
    assert not (codes == 0).all()
    assert min(len(np.unique(codes[:, q])) for q in range(32)) >= 8          # every codebook varies over time
    assert min(len(np.unique(frame)) for frame in codes) >= 16              # codebooks differ within a frame
    tokens = a["lm_tokens"]
    assert len(np.unique(tokens)) >= TINY_STEPS // 2
    vad = a["lm_vad_probs"]
    assert 0.0 < vad.min() and vad.max() < 1.0 and vad.max() - vad.min() > 0.5
    top2 = np.sort(a["lm_text_logits"], axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    assert np.median(margin) > 0.5 and margin.min() > 1e-3
    assert meta["sanity"]["tokens"]["logit_margin_min"] == pytest.approx(float(margin.min()))


def test_official_mimi_streaming_equals_offline_only_within_the_context(fixture):
    """A quirk of the official implementation: streaming 1920-sample chunks equals the offline encode (to fp32
    rounding) only until the context fills (10 s for the real Mimi). Each chunk feeds the encoder transformer 2
    steps at once into a KV ring of capacity = its context; both are written before attending, so once the ring is
    full the first query of each chunk has lost the oldest key of its window, which the offline pass still sees
    (docs/reference.md, quirk 1)."""
    a, meta = fixture
    diff = np.abs(a["mimi_latents"] - a["mimi_offline_latents"]).max(axis=1)    # [F]
    before, after = slice(0, MIMI_CONTEXT_FRAMES), slice(MIMI_CONTEXT_FRAMES, None)
    assert diff[before].max() < 1e-5
    assert np.array_equal(a["mimi_codes"][before], a["mimi_offline_codes"][before])
    assert diff[after].min() > 1e-4                          # every later frame differs, not rounding noise
    assert meta["mimi_streaming_vs_offline"]["codes_equal"] is False


# ------------------------------------------------------------------------------------ official implementation
@pytest.fixture(scope="module")
def ref():
    """tools/make_reference.py as a module (it imports torch and moshi)."""
    pytest.importorskip("torch", reason="the official implementation needs torch (see README: test command)")
    pytest.importorskip("moshi", reason="the official implementation needs moshi 0.2.13 (see README)")
    spec = importlib.util.spec_from_file_location("make_reference", ROOT / "tools" / "make_reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_reference"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny-seed0")
    write_checkpoint(directory, "tiny", seed=0)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def scratch(tmp_path):
    """tmp_path, deleted after the test: checkpoints are 0.4-2.4 GB and pytest keeps its last 3 runs' tmp dirs."""
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_official_loader_loads_tiny_strictly(ref, tiny_dir, scratch):
    _, lm, mimi = ref.load_official(tiny_dir)
    assert sum(p.numel() for p in lm.parameters()) == TINY_LM.num_params
    assert len(lm.extra_heads) == 4 and lm.depformer is None and lm.dep_q == 0
    assert mimi.num_codebooks == 32
    novad = write_checkpoint(scratch / "novad", "tiny", seed=0, vad_heads=False)["config"].parent
    _, lm, _ = ref.load_official(novad, with_mimi=False)
    assert len(lm.extra_heads) == 0
    assert sum(p.numel() for p in lm.parameters()) == replace(TINY_LM, extra_heads_num_heads=0).num_params


def test_official_loader_is_strict(ref, tiny_dir, scratch):
    """A config announcing VAD heads over weights without them must fail, not load half a model."""
    mixed = scratch / "mixed"
    novad = write_checkpoint(scratch / "novad", "tiny", seed=0, vad_heads=False)
    mixed.mkdir()
    (mixed / "config.json").symlink_to(tiny_dir / "config.json")
    for key in ("lm", "mimi", "mimi_config", "tokenizer"):
        (mixed / novad[key].name).symlink_to(novad[key])
    with pytest.raises(RuntimeError, match="extra_heads"):
        ref.load_official(mixed, with_mimi=False)


def test_lmgen_ignores_the_codes_of_its_first_call(ref, tiny_dir, fixture):
    """Why moshi.run_inference (and make_reference) give LMGen frame 0 twice: the codes of call 0 never reach
    the model (LMGen feeds the start tokens at offset 0), so one call per frame would drop frame 0."""
    import torch

    a, _ = fixture
    _, lm, _ = ref.load_official(tiny_dir, with_mimi=False)
    codes = a["mimi_codes"][:5]
    with ref.deterministic_torch(threads=1):
        shifted = ref.run_lm(lm, codes, steps=6)                            # calls get frames 0, 0, 1, 2, ...
        gen = ref.LMGen(lm, use_sampling=False, temp=0.0, temp_text=0.0)
        tokens, rng = [], torch.Generator().manual_seed(0)
        with gen.streaming(1), torch.no_grad():
            for k in range(6):                                              # call 0 gets random codes
                if k == 0:
                    audio = torch.randint(0, 2048, (1, 32, 1), generator=rng)
                else:
                    audio = torch.from_numpy(codes[k - 1]).long().view(1, 32, 1)
                tokens.append(int(gen.step(audio)[0, 0, 0]))
    assert tokens == shifted["lm_tokens"].tolist() == a["lm_tokens"][:6].tolist()


def test_committed_fixture_is_reproduced(ref, tiny_dir, fixture):
    """Regenerate the committed fixture from a freshly synthesised checkpoint: same tokens and codes, floats
    bit-exact on the same machine, within REPRODUCE_RELATIVE_TOLERANCE elsewhere."""
    committed, committed_meta = fixture
    arrays, meta = ref.make_reference(tiny_dir, AUDIO, steps=TINY_STEPS, threads=1,
                                      synthetic=TINY_SYNTHETIC)
    assert sorted(arrays) == sorted(committed)
    assert meta["checkpoint"]["files"] == committed_meta["checkpoint"]["files"], (
        "checkpoint files differ from those the committed fixture was made from: kyutai_stt/weights/synthetic.py "
        "changed? Regenerate the fixture (docs/reference.md)")
    inexact = []
    for name, want in committed.items():
        got = arrays[name]
        assert got.shape == want.shape and got.dtype == want.dtype, name
        if want.dtype.kind == "i":
            assert np.array_equal(got, want), name
        elif not np.array_equal(got, want):
            inexact.append(name)
            scale = max(float(np.abs(want).max()), 1e-30)
            np.testing.assert_allclose(got, want, rtol=0, atol=REPRODUCE_RELATIVE_TOLERANCE * scale, err_msg=name)
    # Not bit-exact is allowed (another CPU), but say so in the test log.
    print(f"not bit-exact: {inexact}" if inexact else "bit-exact reproduction")


@pytest.mark.slow
@pytest.mark.full_size
def test_official_loader_loads_the_full_checkpoint_strictly(ref):
    """Full size (the cached seed-0 checkpoint the other full-size tests read, written by write_checkpoint): bf16 in
    memory (~2 GB, not 4 GB in fp32), LM only, freed before returning."""
    import torch

    _, lm, _ = ref.load_official(ref.synth_checkpoint("full", 0), lm_dtype=torch.bfloat16, with_mimi=False)
    assert sum(p.numel() for p in lm.parameters()) == FULL_LM.num_params
    assert lm.dtype == torch.bfloat16 and len(lm.transformer.layers) == 16 and len(lm.extra_heads) == 4
    assert lm.transformer.layers[0].gating.linear_out.weight.shape == (2048, 5632)


def sha256(path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
