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


def test_lead_in_replaces_the_prefix_silence_in_every_stream():
    """An audio prompt's stream start (streaming/prompt.py): the lead-in's samples, then the caller's, and again
    after a flush; a lead-in of another length than the prefix is refused."""
    lead = np.arange(1, 6, dtype=np.float32)                         # 5 samples, frames of 3
    framer = Framer(3, 5, lead_in=lead)
    for _ in range(2):
        assert [f.tolist() for f in framer.push(np.array([9.0], np.float32))] == [[1, 2, 3], [4, 5, 9]]
        assert [f.tolist() for f in framer.flush(1)] == [[0, 0, 0]]
    with pytest.raises(ValueError):
        Framer(3, 4, lead_in=lead)
