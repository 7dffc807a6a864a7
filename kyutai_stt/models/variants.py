"""Plan variants as data (kyutai_stt/data/variants.json): launch shapes per kind of device, the rule that picks one,
and the host constants both hosts share. The browser reads the same file's content from plans.json."""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path

from kyutai_stt.models.lm import MatvecTuning, Tuning

VARIANTS_FILE = Path(__file__).parents[1] / "data" / "variants.json"


@functools.cache
def _data() -> dict:
    return json.loads(VARIANTS_FILE.read_text(encoding="utf-8"))


def host() -> dict:
    """{"readback_depth", "wanted_limits" (WebGPU's camelCase names), "cpu_adapter_pattern"}."""
    return _data()["host"]


def rules() -> list[dict]:
    """In order, the first that holds names the variant: {"variant", "when": "cpu_adapter" | "subgroups" | "always",
    "min_subgroup_size"?}."""
    return _data()["rules"]


def tunings() -> dict[str, Tuning]:
    """Variant name -> its launch shapes."""
    return {name: Tuning({role: MatvecTuning(**shape) for role, shape in v["matvec"].items()},
                         v["attention_slots_per_split"], v["mimi"])
            for name, v in _data()["variants"].items()}


def choose(adapter_type: str, description: str, features=(), subgroup_size: int = 0) -> str:
    """The variant for a device, by the rules: a CPU adapter (its type, or a description matching the pattern),
    subgroups (the feature and at least min_subgroup_size invocations), else the last rule."""
    cpu = "cpu" in adapter_type.lower() or re.search(host()["cpu_adapter_pattern"], description, re.IGNORECASE)
    for rule in rules():
        when = rule["when"]
        if (when == "always" or (when == "cpu_adapter" and cpu)
                or (when == "subgroups" and "subgroup" in features and subgroup_size >= rule["min_subgroup_size"])):
            return rule["variant"]
    raise AssertionError("variants.json: no rule holds (the last must be 'always')")


def tuning_for(adapter_type: str, features=(), subgroup_size: int = 0, description: str = "") -> Tuning:
    """The launch shapes for a device, from what it reports (engine/device.device_traits() natively)."""
    return tunings()[choose(adapter_type, description, features, subgroup_size)]
