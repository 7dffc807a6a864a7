"""How ./dev.sh test hands tests to its test processes (pytest-xdist --dist loadgroup, tests/conftest.py): a test
process takes a whole group at a time, groups start longest first by their recorded durations (docs/testing.md)."""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DURATIONS = ROOT / "tests" / "durations.json"       # group -> seconds, written by --record-durations
FULL_SIZE_GROUP = "full-size"                          # every `full_size` test: one full-size model at a time


def group(file: str, full_size: bool) -> str:
    """A test's group: "full-size", or its file relative to the repository (module fixtures are made once)."""
    return FULL_SIZE_GROUP if full_size else file


def group_of(item) -> str:
    return group(item.path.relative_to(ROOT).as_posix(), item.get_closest_marker("full_size") is not None)


def report_group(nodeid: str, keywords) -> str:
    """The group of a test report: under --dist loadgroup xdist appends it to the test id after an `@` (the last
    one: a parameter's id may hold an `@` too)."""
    nodeid, _, suffix = nodeid.rpartition("@") if "@" in nodeid else (nodeid, "", "")
    return suffix or group(nodeid.split("::")[0], "full_size" in keywords)


def recorded() -> dict[str, float]:
    return json.loads(DURATIONS.read_text()) if DURATIONS.is_file() else {}


def longest_first(items: list) -> None:
    """Sort the items in place by their group's recorded seconds, longest first; a group not recorded yet first
    (it may be long). The sort is stable: a group's tests keep their order."""
    seconds = recorded()
    items.sort(key=lambda item: -seconds.get(group_of(item), float("inf")))
