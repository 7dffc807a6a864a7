"""Plan variants as data (models/variants.py, data/variants.json, data/host.json): the native choice on the vectors
the browser's chooseVariant meets too (tests/vectors/variant_choice.json), and the data's own consistency."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kyutai_stt.engine import host
from kyutai_stt.engine.plan import INT8_DOT
from kyutai_stt.errors import UserError
from kyutai_stt.models import variants
from kyutai_stt.models.lm import MIMI_FRAMES_MOST, MatvecTuning

CASES = json.loads((Path(__file__).parent / "vectors" / "variant_choice.json").read_text())["cases"]


def native_traits(adapter: dict) -> tuple:
    """What engine/device.device_traits() would report for an adapter WebGPU describes so (wgpu-py names)."""
    info = adapter.get("info", {})
    kind = "CPU" if info.get("isFallbackAdapter") else "DiscreteGPU"
    description = " ".join(str(info.get(k, "")) for k in ("architecture", "description", "device"))
    features = tuple("subgroup" if f == "subgroups" else f for f in adapter.get("features", []))
    subgroup = info.get("subgroupMinSize", 0) if "subgroup" in features else 0
    return kind, features, subgroup, description, tuple(adapter.get("languageFeatures", ()))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["variant"])
def test_native_choice_matches_vector(case):
    kind, features, subgroup, description, language = native_traits(case["adapter"])
    assert variants.choose(kind, description, features, subgroup, language) == case["variant"]


def test_every_rule_names_a_variant_and_the_last_always_holds():
    names = set(variants.tunings())
    assert [r["variant"] for r in variants.rules()] and {r["variant"] for r in variants.rules()} <= names
    assert set(variants.rules()[-1]) == {"variant"}, "the last rule has no condition"
    for tuning in variants.tunings().values():
        assert "default" in tuning.matvec and all(isinstance(m, MatvecTuning) for m in tuning.matvec.values())
        for m in tuning.matvec.values():                # teams fit the workgroup, rows are whole
            assert m.workgroup_size % m.threads_per_row == 0 and m.workgroup_size <= 256


def test_host_constants_in_both_spellings():
    assert host.READBACK_DEPTH == host.document()["readback_depth"] >= 1
    assert "max-storage-buffer-binding-size" in host.WANTED_LIMITS
    assert len(host.WANTED_LIMITS) == len(host.document()["wanted_limits"])


def test_mimi_frames_for_files_spread_the_rows_over_the_streams():
    """Tuning.mimi_frames: about mimi_rows frames a Mimi submission for files, spread over the streams, at most
    MIMI_FRAMES_MOST a stream, at least 1 (1: the whole-frame plan, one pass)."""
    every = variants.tunings()
    assert {name: t.mimi_rows for name, t in every.items()} == {
        **{name: 320 for name in every if name != "cpu"}, "cpu": 8}
    gpu, cpu = every["gpu"], every["cpu"]
    assert [gpu.mimi_frames(s) for s in (1, 10, 40, 64, 256)] == [MIMI_FRAMES_MOST, 32, 8, 5, 2]
    assert [cpu.mimi_frames(s) for s in (1, 2, 3, 8, 64)] == [8, 4, 3, 1, 1]


def test_the_variant_environment_variable_overrides_the_rules(monkeypatch):
    """KYUTAI_STT_VARIANT: every command's way around a fast path this device's driver rejects."""
    monkeypatch.setenv(variants.VARIANT_ENV, "gpu")
    assert variants.choose("DiscreteGPU", "", ("subgroup", "shader-f16"), 32, ("packed_4x8_integer_dot_product",)) \
        == "gpu"
    assert variants.tuning_for("CPU", ()).rounded_inputs is None
    monkeypatch.setenv(variants.VARIANT_ENV, "fastest")
    with pytest.raises(UserError, match="KYUTAI_STT_VARIANT='fastest' is not a kernel variant: use one of gpu, "):
        variants.choose("DiscreteGPU", "")
    monkeypatch.delenv(variants.VARIANT_ENV)
    assert variants.choose("CPU", "") == "cpu"


def test_kv_rings():
    """--kv-rings / kv_rings: auto keeps the variant's rings; int8 replaces f16 and needs dot4I8Packed."""
    gpu_tuning = variants.tunings()["gpu-int8-subgroup"]
    assert variants.with_kv_rings(gpu_tuning, "auto") is gpu_tuning
    int8 = variants.with_kv_rings(gpu_tuning, "int8", (INT8_DOT,))
    assert int8.kv_int8 and not int8.kv_f16 and int8.int8_matvec == gpu_tuning.int8_matvec
    assert variants.with_kv_rings(variants.tunings()["cpu"], "int8", (INT8_DOT,)).kv_int8   # lavapipe has it too
    with pytest.raises(UserError, match="need WGSL's dot4I8Packed"):
        variants.with_kv_rings(gpu_tuning, "int8", ())
    with pytest.raises(ValueError, match="kv_rings must be one of auto, int8, not 'f16'"):
        variants.with_kv_rings(gpu_tuning, "f16")
    assert not any(t.kv_int8 for t in variants.tunings().values()), "int8 rings are the user's choice, never a default"
