"""Host constants as data (kyutai_stt/data/host.json): the browser host reads the same values from plans.json."""
from __future__ import annotations

import json
import re
from pathlib import Path

HOST_FILE = Path(__file__).parents[1] / "data" / "host.json"
HOST: dict = json.loads(HOST_FILE.read_text(encoding="utf-8"))

READBACK_DEPTH: int = HOST["readback_depth"]
# WebGPU's names (maxBufferSize); wgpu-py spells them max-buffer-size.
WANTED_LIMITS: tuple[str, ...] = tuple(re.sub(r"[A-Z]", lambda m: "-" + m.group(0).lower(), name)
                                       for name in HOST["wanted_limits"])
CPU_ADAPTER_PATTERN: str = HOST["cpu_adapter_pattern"]
# Names the kernel variant every native command takes instead of the rules' choice (models/variants.py choose): the
# way around a fast path's kernel this device's driver rejects (engine/runtime.py names it then), as the browser's
# load({variant}).
VARIANT_ENV = "KYUTAI_STT_VARIANT"


def document() -> dict:
    """What plans.json carries for the browser host."""
    return {k: v for k, v in HOST.items() if k != "about"}
