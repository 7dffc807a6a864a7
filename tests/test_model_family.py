"""The model family: the 2.6B layout (byte-exact), its tiny sibling, and the official loader on both.

The full 2.6B checkpoint is 5.6 GB: its byte count is checked here from the layout without writing anything
(the writer and the size computation share one layout function); writing it and loading it with the official
loader is the slow test at the end.
"""
import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from kyutai_stt import cli
from kyutai_stt.config import (
    FULL_2_6B_LM,
    FULL_LM,
    MIMI,
    TINY_2_6B_LM,
    TINY_LM,
    TINY_MIMI,
    LMConfig,
    replace,
    stream_settings,
)
from kyutai_stt.models import variants
from kyutai_stt.models.lm import Tensor
from kyutai_stt.models.stt import build_stt_plan
from kyutai_stt.weights import checkpoint, convert, safetensors_io
from kyutai_stt.weights.synthetic import lm_file_bytes, lm_specs, write_checkpoint
from kyutai_stt.weights.tokenizer import read_sentencepiece

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "reference_tiny26_seed0"
AUDIO = ROOT / "tests" / "fixtures" / "speech_en_fr_24k.wav"
# The real kyutai/stt-2.6b-en files (reference/kyutai-stt-1b.md §2): model.safetensors and config.json as
# json.dumps(indent=2) + newline.
FULL_2_6B_LM_BYTES = 5_234_275_128
FULL_2_6B_CONFIG_BYTES = 1_257
FULL_1B_LM_BYTES = 1_978_522_200
STEPS = 40                                    # > 4 x TINY_2_6B_LM.context: the KV ring wraps 4 times


@pytest.fixture(scope="module")
def tiny26(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny26")
    yield write_checkpoint(directory, "tiny-2.6b", seed=0)
    shutil.rmtree(directory, ignore_errors=True)


def test_2_6b_layout_has_the_real_byte_count_without_writing_it():
    layout = checkpoint.lm_layout(FULL_2_6B_LM)
    assert lm_file_bytes(FULL_2_6B_LM) == FULL_2_6B_LM_BYTES
    assert len(layout) == 323 and not any(n.startswith("extra_heads.") for n in layout)
    assert layout["text_emb.weight"] == (4001, 2048) and layout["text_linear.weight"] == (4000, 2048)
    assert layout["transformer.layers.47.gating.linear_in.weight"] == (2 * 5632, 2048)
    assert layout["out_norm.alpha"] == (1, 1, 2048)
    assert lm_file_bytes(FULL_LM) == FULL_1B_LM_BYTES           # the same computation on the 1B
    text = json.dumps(FULL_2_6B_LM.to_official_json(), indent=2) + "\n"
    assert len(text.encode()) == FULL_2_6B_CONFIG_BYTES
    assert FULL_2_6B_LM.num_params == 2_617_118_720 and FULL_2_6B_LM.head_dim == 64


def test_size_computation_is_what_the_writer_writes(tiny26):
    assert tiny26["lm"].stat().st_size == lm_file_bytes(TINY_2_6B_LM)
    specs = {"b": ("F32", (3, 5)), "a": ("BF16", (7,)), "c": ("I64", (2,))}
    path = tiny26["lm"].parent / "x.safetensors"
    size = safetensors_io.write(path, [(n, d, s) for n, (d, s) in specs.items()],
                                lambda n: np.zeros(specs[n][1], safetensors_io.DTYPES[specs[n][0]][0]))
    assert size == safetensors_io.file_size([(n, d, s) for n, (d, s) in specs.items()])
    path.unlink()


def test_tiny_2_6b_checkpoint_is_a_member_of_the_family(tiny26):
    cfg = LMConfig.load(tiny26["config"])
    assert cfg == TINY_2_6B_LM
    # What the family shares with the real 2.6B; what differs from the tiny 1B.
    for key in ("text_card", "extra_heads_num_heads", "audio_delay_seconds", "audio_silence_prefix_seconds",
                "tokenizer_name"):
        assert getattr(cfg, key) == getattr(FULL_2_6B_LM, key), key
    assert (cfg.num_heads, cfg.num_layers, cfg.context) != (TINY_LM.num_heads, TINY_LM.num_layers, TINY_LM.context)
    on_disk = {n: (t.dtype, t.shape) for n, t in safetensors_io.read_index(tiny26["lm"]).items()}
    assert on_disk == {n: ("BF16", s) for n, s in checkpoint.lm_layout(cfg).items()}
    assert len(on_disk) == 1 + 32 + 3 * 6 + 1 + 1
    assert len(read_sentencepiece(tiny26["tokenizer"])) == 4000 == cfg.text_card
    assert tiny26["tokenizer"].name == "tokenizer_en_audio_4000.model"
    marker = json.loads((tiny26["config"].parent / "SYNTHETIC.json").read_text())
    assert marker["size"] == "tiny-2.6b" and marker["vad_heads"] is False


def test_synth_command_writes_the_tiny_2_6b(tmp_path, capsys):
    assert cli.main(["synth", str(tmp_path), "--size", "tiny-2.6b"]) == 0
    assert "tokenizer_en_audio_4000.model" in capsys.readouterr().out
    assert LMConfig.load(tmp_path / "config.json") == TINY_2_6B_LM


# ------------------------------------------------------------------------------------ official implementation
@pytest.fixture(scope="module")
def ref():
    pytest.importorskip("torch", reason="the official implementation needs torch (see README: test command)")
    pytest.importorskip("moshi", reason="the official implementation needs moshi 0.2.13 (see README)")
    spec = importlib.util.spec_from_file_location("make_reference", ROOT / "tools" / "make_reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_reference"] = module
    spec.loader.exec_module(module)
    return module


def test_official_loader_loads_the_tiny_2_6b_strictly(ref, tiny26):
    _, lm, _ = ref.load_official(tiny26["config"].parent, with_mimi=False)
    assert sum(p.numel() for p in lm.parameters()) == TINY_2_6B_LM.num_params
    assert len(lm.extra_heads) == 0 and len(lm.transformer.layers) == 3
    assert lm.transformer.layers[0].self_attn.num_heads == 8 and lm.text_linear.out_features == 4000


def test_committed_2_6b_family_fixture_is_reproduced(ref, tiny26):
    """The LM part of the committed fixture, regenerated from a fresh checkpoint (Mimi is the 1B fixture's,
    reproduced by tests/test_reference.py): tokens identical, floats within 1e-4 of each array's scale."""
    with np.load(FIXTURE.with_suffix(".npz")) as z:
        committed = {k: z[k] for k in z.files}
    meta = json.loads(FIXTURE.with_suffix(".json").read_text())
    assert meta["checkpoint"]["synthetic"] == {"size": "tiny-2.6b", "seed": 0, "vad_heads": False, "mimi": "tiny"}
    assert meta["checkpoint"]["files"]["lm"]["sha256"] == ref.sha256_file(tiny26["lm"]), (
        "kyutai_stt/synthetic.py changed: regenerate the fixture (docs/reference.md)")
    assert committed["lm_text_logits"].shape == (STEPS, 4000) and committed["lm_vad_probs"].shape == (STEPS, 0)
    with ref.deterministic_torch(threads=1):
        _, lm, _ = ref.load_official(tiny26["config"].parent, with_mimi=False)
        arrays = ref.run_lm(lm, committed["mimi_codes"], STEPS)
    assert np.array_equal(arrays["lm_tokens"], committed["lm_tokens"])
    assert np.array_equal(arrays["lm_input_tokens"], committed["lm_input_tokens"])
    for name in ("lm_text_logits", "lm_hidden"):
        scale = float(np.abs(committed[name]).max())
        np.testing.assert_allclose(arrays[name], committed[name], rtol=0, atol=1e-4 * scale, err_msg=name)


def test_official_2_6b_model_takes_the_synthetic_layout_strictly(ref, tmp_path):
    """moshi builds its LM from the synthetic 2.6B config.json (through its own CheckpointInfo) on the meta device,
    and takes a state dict of the synthetic file's names, shapes and dtype with load_state_dict(strict=True): what
    its loader checks once it has read the file, without the file's 5.2 GB (its byte count is checked above; the
    writer writes what lm_specs says: test_size_computation_is_what_the_writer_writes; the whole file is written and
    loaded by the huge test below)."""
    import torch
    from moshi.models import loaders

    config = tmp_path / "config.json"
    config.write_text(json.dumps(FULL_2_6B_LM.to_official_json(), indent=2) + "\n")
    absent = tmp_path / "never-read"
    info = loaders.CheckpointInfo.from_hf_repo("local/offline", moshi_weights=absent, mimi_weights=absent,
                                               tokenizer=absent, config_path=config)
    lm = info.get_moshi(device="meta", dtype=torch.bfloat16, load_weight=False)
    dtypes = {"BF16": torch.bfloat16}
    state = {name: torch.empty(shape, dtype=dtypes[dtype], device="meta")
             for name, dtype, shape in lm_specs(FULL_2_6B_LM)}
    lm.load_state_dict(state, assign=True)          # strict: a missing, unexpected or misshapen tensor raises
    assert sum(p.numel() for p in lm.parameters()) == FULL_2_6B_LM.num_params
    assert len(lm.transformer.layers) == 48 and len(lm.extra_heads) == 0
    assert lm.transformer.layers[0].self_attn.num_heads == 32 and lm.dtype == torch.bfloat16
    state.pop("out_norm.alpha")
    with pytest.raises(RuntimeError, match="out_norm.alpha"):
        info.get_moshi(device="meta", dtype=torch.bfloat16, load_weight=False).load_state_dict(state, assign=True)


@pytest.mark.huge
@pytest.mark.full_size
def test_official_loader_loads_the_full_2_6b_checkpoint_strictly(ref, tmp_path):
    """Writes the real 2.6B layout (5.2 GB LM + 0.38 GB Mimi), checks the byte count on disk, and loads the LM
    strictly in bf16 (~5.2 GB of memory), freed before returning. Huge: ~1.5 min and 5.6 GB of disk for what the
    meta-device test above checks but the file's bytes."""
    import torch

    try:
        paths = write_checkpoint(tmp_path, "2.6b", seed=0)
        assert paths["lm"].stat().st_size == FULL_2_6B_LM_BYTES
        assert paths["config"].stat().st_size == FULL_2_6B_CONFIG_BYTES
        _, lm, _ = ref.load_official(tmp_path, lm_dtype=torch.bfloat16, with_mimi=False)
        assert sum(p.numel() for p in lm.parameters()) == FULL_2_6B_LM.num_params
        assert len(lm.transformer.layers) == 48 and len(lm.extra_heads) == 0
        assert lm.transformer.layers[0].self_attn.num_heads == 32
        del lm
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


# ------------------------------------------------------------------------------------ packages and GPU memory
def test_layout_plans_are_what_convert_writes(tiny26_packages):
    """The package planned from the layout alone (the 2.6B size in docs/weights.md comes from it) is the package
    convert writes: the same tensors, types and bytes (the tiny 2.6B-family checkpoint, q4)."""
    manifest = tiny26_packages("q4").manifest["tensors"]
    planned = convert.layout_plans(TINY_2_6B_LM, TINY_MIMI, "q4")
    assert {p.name: (p.quant, list(p.shape)) for p in planned} == \
        {n: (e["quant"], e["shape"]) for n, e in manifest.items()}
    assert sum(p.nbytes for p in planned) == sum(s["nbytes"] for e in manifest.values() for s in e["streams"].values())


def plan_bytes(cfg: LMConfig, choice: str = "q4") -> int:
    """Every buffer of the whole-frame plan (the "gpu" variant) of a package of cfg, from the layout alone."""
    plans = convert.layout_plans(cfg, MIMI, choice)
    lm = {p.name: Tensor(p.quant, p.shape, {s.name: s.nbytes for s in p.streams})
          for p in plans if not p.name.startswith("mimi.")}
    manifest = {p.name: {"quant": p.quant, "shape": list(p.shape),
                         "streams": {s.name: {"nbytes": s.nbytes, "dtype": s.dtype, "shape": list(s.shape)}
                                     for s in p.streams}} for p in plans}
    plan = json.loads(build_stt_plan(cfg, MIMI, lm, manifest, variants.tunings()["gpu"]).to_json())
    return sum(b["size"] for b in plan["buffers"])


def test_which_devices_hold_which_model():
    """The page refuses a plan whose buffers exceed DEVICE_MEMORY_SHARE of navigator.deviceMemory (web/runtime.js):
    the 1B's default package fits a 4 GiB device, the 2.6B's needs 8 GiB (what desktops report)."""
    share = float(re.search(r"DEVICE_MEMORY_SHARE = ([0-9.]+);", (ROOT / "kyutai_stt/web/runtime.js").read_text())[1])
    one, two = plan_bytes(FULL_LM), plan_bytes(FULL_2_6B_LM)
    print(f"\n[GPU memory of the default (q4) package's plan] 1B {one / 1e9:.3f} GB, 2.6B {two / 1e9:.3f} GB")
    assert one < share * 4 * 2**30 < two < share * 8 * 2**30


# ------------------------------------------------------------------------------------ the streaming host
def test_stream_settings_come_from_the_config():
    """What both hosts stream with (the Transcriber, and the page through plans.json), for the two real models and
    a fine-tune that changes the delay and asks for a longer silence prefix."""
    one, two = stream_settings(FULL_LM), stream_settings(FULL_2_6B_LM)
    assert (one["delay_steps"], one["silence_prefix"], one["end_of_turn"]) == (6, 1.0, True)
    assert (two["delay_steps"], two["silence_prefix"], two["end_of_turn"]) == (31, 1.0, False)
    assert one["model"] == {"name": "Kyutai STT 1B", "languages": "English and French", "parameters": 989_253_632,
                            "layers": 16, "text_card": 8000, "delay_seconds": 0.5}
    assert two["model"]["name"] == "Kyutai STT 2.6B" and two["model"]["languages"] == "English"
    tuned = replace(FULL_2_6B_LM, audio_delay_seconds=1.0, audio_silence_prefix_seconds=2.0,
                    tokenizer_name="spm_custom.model")
    assert stream_settings(tuned)["delay_steps"] == 13 and stream_settings(tuned)["silence_prefix"] == 2.0
    assert stream_settings(tuned)["model"]["languages"] is None
    assert stream_settings(TINY_2_6B_LM)["delay_steps"] == 31 and stream_settings(TINY_LM)["delay_steps"] == 6


@pytest.mark.slow
def test_transcriber_takes_the_delay_and_the_silence_prefix_from_the_config(tiny26_packages):
    """The tiny 2.6B-family package: delay 31 frames (2.5 s), silence prefix 1 s, both from its config; a flush
    feeds the last partial frame plus 31 + 2 silent frames; no VAD, so steps carry no probabilities and no end of
    turn comes. Slow (~50 frames of the full-size Mimi on a CPU adapter, 30-100 s); the fast suite checks the same
    flush rule on the tiny 1B (test_transcriber.py) and the settings above."""
    from kyutai_stt.streaming.transcriber import FLUSH_EXTRA_FRAMES, Transcriber

    t = Transcriber(tiny26_packages("q4"))
    assert (t.decoder_config.delay_steps, t.decoder_config.silence_prefix) == (31, 1.0)
    audio = np.random.default_rng(0).uniform(-0.3, 0.3, 9600).astype(np.float32)     # 0.4 s at 24 kHz
    events = t.feed(audio, 24000) + t.flush()
    steps = [e for e in events if e.type == "step"]
    frames = -(-(24000 + 9600) // 1920)                    # prefix + audio, the last frame padded
    assert len(steps) == frames + 31 + FLUSH_EXTRA_FRAMES == t.stats.frames
    assert all(s.vad == () for s in steps) and not [e for e in events if e.type == "endOfTurn"]
    assert steps[31].time == 0.0 and steps[-1].time > 0     # times in the caller's seconds (prefix removed)
    shorter = Transcriber(tiny26_packages("q4"), silence_prefix=0.0)
    assert shorter.decoder_config.silence_prefix == 0.0 and shorter.decoder_config.delay_steps == 31
