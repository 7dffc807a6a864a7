"""RoPE frequencies as the official implementation computes them: the table every attention kernel reads (the LM's
and Mimi's), shared by the plans and the numpy references."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

ROPE_TABLES_FILE = "rope_freqs.json"     # in kyutai_stt/data/: moshi's RoPE frequency tables, see rope_frequencies


def rope_frequencies(head_dim: int, theta: float) -> np.ndarray:
    """freq_i = theta^(-2i/head_dim), i < head_dim/2, in float32, bit-equal to moshi's table (torch.exp(i *
    float32(-2 ln(theta) / head_dim)) in float32): the table the attention kernels read.

    torch's float32 exp is not correctly rounded (on the Mimi and LM tables it differs from numpy's exp in 1-2 ulp
    in a third of the entries and from the correctly rounded value in ~3 %), so no numpy formula reproduces it on
    every machine: the tables of every configuration the project knows are data (data/rope_freqs.json, written by
    `tools/make_reference.py --rope-tables` with torch itself, checked by tests/test_rope.py). Other configurations
    get the correctly rounded values (float64 exp of the same float32 arguments, rounded once)."""
    bits = _rope_tables().get((int(head_dim), float(theta)))
    if bits is not None:
        return np.array(bits, dtype=np.uint32).view(np.float32)
    scale = np.float32(-np.log(theta) * 2 / head_dim)
    arguments = np.arange(head_dim // 2, dtype=np.float32) * scale                       # float32, as torch
    return np.exp(arguments.astype(np.float64)).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _rope_tables() -> dict[tuple[int, float], list[int]]:
    raw = json.loads((Path(__file__).parents[1] / "data" / ROPE_TABLES_FILE).read_text())
    return {(t["head_dim"], float(t["max_period"])): t["f32_bits"] for t in raw["tables"]}
