"""Synthetic checkpoints (kyutai_stt/weights/synthetic.py): official layout, config round trip, determinism, exact
sizes.

No torch here: tests/test_reference.py checks that the official loader accepts these files.
"""
import hashlib
import json
import shutil

import pytest

from kyutai_stt import cli
from kyutai_stt.config import FULL_LM, MIMI, TINY_LM, TINY_MIMI, ConfigError, LMConfig, MimiConfig, replace
from kyutai_stt.weights import checkpoint, safetensors_io
from kyutai_stt.weights.synthetic import write_checkpoint

# The real files' byte counts (docs: reference/kyutai-stt-1b.md §1); a checkpoint with the right names, shapes and
# dtypes written like the reference writer reproduces them exactly.
FULL_LM_BYTES = 1_978_522_200
FULL_MIMI_BYTES = 384_644_900
MIMI_FILE = "mimi-pytorch-e351c8d8@125.safetensors"      # the real Mimi's name in the official repos


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny seed-0 checkpoint with VAD heads: name -> path."""
    directory = tmp_path_factory.mktemp("tiny")
    yield write_checkpoint(directory, "tiny", seed=0)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def scratch(tmp_path):
    """tmp_path, deleted after the test: checkpoints are 0.4-2.4 GB and pytest keeps its last 3 runs' tmp dirs."""
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


def layout_on_disk(path) -> dict:
    """name -> (dtype, shape) as the file's header says."""
    return {name: (t.dtype, t.shape) for name, t in safetensors_io.read_index(path).items()}


def test_config_round_trips_through_lmconfig(tiny):
    raw = json.loads(tiny["config"].read_text())
    assert LMConfig.load(tiny["config"]) == TINY_LM
    assert LMConfig.from_official_json(raw).to_official_json() == raw
    assert raw["extra_heads_num_heads"] == 4 and raw["dep_q"] == 0 and raw["delays"] == [0] * 33


def test_tiny_checkpoint_has_the_official_layout(tiny):
    lm = layout_on_disk(tiny["lm"])
    assert lm == {name: ("BF16", shape) for name, shape in checkpoint.lm_layout(TINY_LM).items()}
    assert len(lm) == 1 + 32 + 2 * 6 + 1 + 1 + 4          # embeddings, 2 layers of 6, out_norm, text_linear, VAD
    assert lm["text_emb.weight"] == ("BF16", (8001, 128)) and lm["emb.31.weight"] == ("BF16", (2049, 128))
    assert lm["extra_heads.3.weight"] == ("BF16", (6, 128))
    mimi = layout_on_disk(tiny["mimi"])
    assert mimi == {name: ("F32", shape) for name, shape in checkpoint.mimi_layout(TINY_MIMI).items()}
    assert len(mimi) == len(checkpoint.mimi_layout(MIMI)) - 2 * 6 * 10 == 198   # 2 of 8 layers of 10 tensors, twice
    assert tiny["tokenizer"].stat().st_size > 0
    raw = json.loads(tiny["config"].read_text())        # the tiny Mimi is named as moshi's loader reads it
    assert (raw["mimi_name"], raw["mimi_config_name"]) == (tiny["mimi"].name, tiny["mimi_config"].name)
    assert MimiConfig.load(tiny["mimi_config"]) == TINY_MIMI


def test_real_mimi_in_a_tiny_checkpoint(scratch):
    assert cli.main(["synth", str(scratch), "--mimi", "real"]) == 0
    assert (scratch / MIMI_FILE).stat().st_size == FULL_MIMI_BYTES
    raw = json.loads((scratch / "config.json").read_text())
    assert raw["mimi_name"] == MIMI_FILE and "mimi_config_name" not in raw
    assert not list(scratch.glob("*.json.partial")) and not (scratch / TINY_LM.mimi_config_name).exists()


def test_same_seed_same_bytes_other_seed_other_bytes(tiny, scratch):
    again = write_checkpoint(scratch / "again", "tiny", seed=0)
    other = write_checkpoint(scratch / "other", "tiny", seed=1)
    for key in ("config", "lm", "mimi", "tokenizer"):
        assert sha256(again[key]) == sha256(tiny[key]), key
    for key in ("lm", "mimi"):                              # the weights follow the seed; config and tokenizer don't
        assert sha256(other[key]) != sha256(tiny[key]), key
        assert other[key].stat().st_size == tiny[key].stat().st_size


def test_no_vad_heads_variant_lacks_extra_heads(scratch, capsys):
    assert cli.main(["synth", str(scratch), "--no-vad-heads"]) == 0
    names = set(safetensors_io.read_index(scratch / "model.safetensors"))
    assert not any(n.startswith("extra_heads.") for n in names)
    assert names == set(checkpoint.lm_layout(replace(TINY_LM, extra_heads_num_heads=0)))
    assert len(names) == 1 + 32 + 2 * 6 + 1 + 1
    raw = json.loads((scratch / "config.json").read_text())
    assert "extra_heads_num_heads" not in raw
    assert LMConfig.load(scratch / "config.json").extra_heads_num_heads == 0


@pytest.mark.slow
@pytest.mark.full_size
def test_full_size_files_have_the_real_byte_counts():
    """On the cached seed-0 checkpoint the other full-size tests read (write_checkpoint wrote it)."""
    import make_reference
    paths = make_reference.checkpoint_paths(make_reference.synth_checkpoint("full", 0))
    assert paths["lm"].stat().st_size == FULL_LM_BYTES
    assert paths["mimi"].stat().st_size == FULL_MIMI_BYTES
    lm = layout_on_disk(paths["lm"])
    assert lm == {n: ("BF16", s) for n, s in checkpoint.lm_layout(FULL_LM).items()}
    assert len(lm) == 135 and len(layout_on_disk(paths["mimi"])) == 318
    assert LMConfig.load(paths["config"]) == FULL_LM


# ------------------------------------------------------------------------------------------------ config errors
def official_json() -> dict:
    return TINY_LM.to_official_json()


@pytest.mark.parametrize("key", ["dim", "card", "delays", "norm", "mimi_name"])
def test_missing_key_names_the_key(key):
    raw = official_json()
    del raw[key]
    with pytest.raises(ConfigError, match=f"'{key}'") as info:
        LMConfig.from_official_json(raw)
    assert info.value.key == key and "missing" in str(info.value)


@pytest.mark.parametrize("key, value", [("dim", "128"), ("num_layers", 2.0), ("causal", 1), ("delays", 0),
                                        ("card", True), ("max_period", "1e5")])
def test_wrong_type_names_the_key(key, value):
    raw = official_json()
    raw[key] = value
    with pytest.raises(ConfigError, match=f"'{key}'") as info:
        LMConfig.from_official_json(raw)
    assert info.value.key == key


@pytest.mark.parametrize("key, value", [("gating", "gelu"), ("norm", "layer_norm"), ("dep_q", 8),
                                        ("positional_embedding", "sin"), ("delays", [1] + [0] * 32),
                                        ("layer_scale", 0.01), ("model_type", "moshi")])
def test_unsupported_value_names_the_key(key, value):
    raw = official_json()
    raw[key] = value
    with pytest.raises(ConfigError, match=f"'{key}'") as info:
        LMConfig.from_official_json(raw)
    assert info.value.key == key


def test_unreadable_config_file_is_a_config_error(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        LMConfig.load(tmp_path / "config.json")
    with pytest.raises(ConfigError, match="not found"):
        LMConfig.load(tmp_path / "missing.json")
