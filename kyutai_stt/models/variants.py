"""Plan variants as data (kyutai_stt/data/variants.json): launch shapes per kind of device and the rules that pick
one. The browser host reads the same rules from plans.json (web/runtime.js chooseVariant)."""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from pathlib import Path

from kyutai_stt.engine.host import CPU_ADAPTER_PATTERN, VARIANT_ENV
from kyutai_stt.engine.plan import INT8_DOT
from kyutai_stt.errors import UserError
from kyutai_stt.models.lm import MatvecTuning, Tuning

VARIANTS_FILE = Path(__file__).parents[1] / "data" / "variants.json"


@functools.cache
def _data() -> dict:
    return json.loads(VARIANTS_FILE.read_text(encoding="utf-8"))


def rules() -> list[dict]:
    """In order, the first that holds names the variant: {"variant", and conditions that must all hold:
    "cpu_adapter": bool, "features": [...], "min_subgroup_size": n, "language_features": [...]}."""
    return _data()["rules"]


def tunings() -> dict[str, Tuning]:
    """Variant name -> its launch shapes."""
    return {name: Tuning({role: MatvecTuning(**shape) for role, shape in v["matvec"].items()},
                         v["attention_slots_per_split"], v["mimi"],
                         {role: MatvecTuning(**shape) for role, shape in v.get("int8_matvec", {}).items()},
                         f16_matvec={role: MatvecTuning(**shape) for role, shape in v.get("f16_matvec", {}).items()},
                         kv_f16=v.get("kv_f16", False),
                         attention_slots_per_split_many=v.get("attention_slots_per_split_many"),
                         attention_slots_per_split_many_int8=v.get("attention_slots_per_split_many_int8"),
                         mimi_rows=v.get("mimi_rows", 1))
            for name, v in _data()["variants"].items()}


def choose(adapter_type: str, description: str, features=(), subgroup_size: int = 0, language_features=()) -> str:
    """The variant for a device, by the rules, or the one KYUTAI_STT_VARIANT names. A CPU adapter: its type says
    so, or its description matches the host's pattern (SwiftShader, llvmpipe...)."""
    forced = os.environ.get(VARIANT_ENV)
    if forced:
        if forced not in _data()["variants"]:
            raise UserError(f"{VARIANT_ENV}={forced!r} is not a kernel variant: use one of "
                            f"{', '.join(_data()['variants'])}, or unset it for the one this device gets")
        return forced
    cpu = "cpu" in adapter_type.lower() or bool(re.search(CPU_ADAPTER_PATTERN, description, re.IGNORECASE))
    for rule in rules():
        if (rule.get("cpu_adapter", cpu) == cpu and set(rule.get("features", ())) <= set(features)
                and subgroup_size >= rule.get("min_subgroup_size", 0)
                and set(rule.get("language_features", ())) <= set(language_features)):
            return rule["variant"]
    raise AssertionError("variants.json: no rule holds (the last must have no condition)")


def tuning_for(adapter_type: str, features=(), subgroup_size: int = 0, description: str = "",
               language_features=()) -> Tuning:
    """The launch shapes for a device, from what it reports (engine/device.device_traits() natively)."""
    return tunings()[choose(adapter_type, description, features, subgroup_size, language_features)]


# What the KV rings may hold (kyutai-stt transcribe / eval / bench --kv-rings; Transcriber and the batch and live
# classes' kv_rings): "auto" the variant's (f16 on GPUs, f32 on CPU adapters); "int8" (Tuning.kv_int8) a scale per 32
# values, for many streams: the attention reads 56 % of f16's bytes (BENCHMARKS.md), with more rounding error
# (docs/validation.md). Every stream of a plan holds the same, so results per stream never depend on the streams.
KV_RINGS = ("auto", "int8")


def with_kv_rings(tuning: Tuning, kv_rings: str, language_features=()) -> Tuning:
    """tuning with the KV rings asked for (KV_RINGS); int8 needs WGSL's dot4I8Packed, among the device's
    language_features (engine/device.device_traits())."""
    if kv_rings not in KV_RINGS:
        raise ValueError(f"kv_rings must be one of {', '.join(KV_RINGS)}, not {kv_rings!r}")
    if kv_rings == "auto":
        return tuning
    if INT8_DOT not in language_features:
        raise UserError(f"int8 KV rings (--kv-rings int8, kv_rings='int8') need WGSL's dot4I8Packed ({INT8_DOT}), "
                        "which this device lacks: leave them out for this device's rings")
    return dataclasses.replace(tuning, kv_int8=True, kv_f16=False)
