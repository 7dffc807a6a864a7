"""Write tests/vectors/framing.json: a stream's operations (push N samples, flush with T tail frames) -> the frames
each returns. Both framers (kyutai_stt/streaming/framing.py, kyutai_stt/web/framing.js) are tested against it.

The expected frames do not come from either framer: each stream is written out whole (prefix zeros, the caller's
samples numbered 1, 2, ... so that every sample is traceable, zero padding to a whole frame, tail zero frames) and
an operation returns the frames that became complete with the samples it added.

    .venv/bin/python tools/make_framing_vectors.py       # rewrite the file; tests/test_framing.py checks it
"""
from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "tests" / "vectors" / "framing.json"
CASES = [  # (name, frame_size, prefix, operations: ("push", n) | ("flush", tail))
    ("exact_frames", 4, 0, [("push", 8), ("flush", 0)]),
    ("prefix_then_small_chunks", 4, 3, [("push", 1), ("push", 2), ("push", 5), ("flush", 2)]),
    ("prefix_longer_than_a_frame", 4, 9, [("push", 2), ("flush", 1)]),
    ("empty_pushes", 5, 2, [("push", 0), ("push", 3), ("push", 0), ("flush", 1)]),
    ("two_streams", 3, 2, [("push", 4), ("flush", 1), ("push", 2), ("flush", 2)]),
    ("flush_on_a_frame_boundary", 4, 0, [("push", 4), ("flush", 3)]),
    ("one_big_push", 6, 5, [("push", 40), ("flush", 2)]),
]


def expected(frame_size: int, prefix: int, operations) -> list[list[list[float]]]:
    stream, framed, out, counter = [0.0] * prefix, 0, [], 0
    for op, n in operations:
        if op == "push":
            stream += [float(counter + i + 1) for i in range(n)]
            counter += n
        else:
            stream += [0.0] * ((-len(stream)) % frame_size + n * frame_size)
        whole = len(stream) // frame_size
        out.append([stream[k * frame_size:(k + 1) * frame_size] for k in range(framed, whole)])
        framed = whole
        if op == "flush":
            stream, framed = [0.0] * prefix, 0
    return out


def operations(ops) -> list:
    """("push", n) -> ["push", [the n samples]] (numbered on from the case's previous push); flush as is."""
    out, counter = [], 0
    for op, n in ops:
        out.append([op, [float(counter + i + 1) for i in range(n)]] if op == "push" else [op, n])
        counter += n if op == "push" else 0
    return out


def vectors() -> list[dict]:
    return [{"name": name, "frame_size": size, "prefix": prefix, "operations": operations(ops),
             "frames": expected(size, prefix, ops)} for name, size, prefix, ops in CASES]


def render() -> str:
    return json.dumps({"about": "framing vectors: tools/make_framing_vectors.py", "cases": vectors()}) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
