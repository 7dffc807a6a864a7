"""The stream framing (streaming/framing.py) on the shared vectors; web/framing.js meets the same vectors in
tests/web/test_host_logic.py."""
from __future__ import annotations

import json
from pathlib import Path

import make_framing_vectors
import numpy as np
import pytest

from kyutai_stt.streaming.framing import Framer

VECTORS = Path(__file__).parent / "vectors" / "framing.json"
CASES = json.loads(VECTORS.read_text())["cases"]


def test_vectors_are_what_the_tool_writes():
    assert VECTORS.read_text() == make_framing_vectors.render(), "run tools/make_framing_vectors.py"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_framer_matches_vector(case):
    framer = Framer(case["frame_size"], case["prefix"])
    for (op, arg), frames in zip(case["operations"], case["frames"], strict=True):
        got = framer.push(np.array(arg, np.float32)) if op == "push" else framer.flush(arg)
        assert [f.tolist() for f in got] == frames, (op, arg)


def test_framer_refuses_nonsense():
    with pytest.raises(ValueError):
        Framer(0, 0)
    with pytest.raises(ValueError):
        Framer(4, -1)
