"""Inputs shared by the model, transcription and browser tests: the tiny seed-0 checkpoint the committed
fixtures were made from, and its packages, each written once per test session."""
from __future__ import annotations

import json
import os
import resource
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import scheduling
from measured import Measured, run_measured

from kyutai_stt.engine.host import VARIANT_ENV
from kyutai_stt.weights.convert import convert
from kyutai_stt.weights.package import open_package
from kyutai_stt.weights.synthetic import write_checkpoint

FIXTURE = scheduling.ROOT / "tests" / "fixtures" / "reference_tiny_seed0"
# A developer's forced kernel variant (engine/host.py VARIANT_ENV) would change what every test runs.
os.environ.pop(VARIANT_ENV, None)
CONVERT_KILL_SECONDS = 600     # a converter still running then is stuck (benchmarks/convert.py: ~36 s alone)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    synthetic = json.loads(FIXTURE.with_suffix(".json").read_text())["checkpoint"]["synthetic"]
    assert synthetic["size"] == "tiny"
    path = tmp_path_factory.mktemp("tiny") / "ckpt"
    write_checkpoint(path, "tiny", seed=synthetic["seed"])
    return path


@pytest.fixture(scope="session")
def tiny_packages(tiny_checkpoint):
    """tiny_packages(quant) -> the opened package of the tiny checkpoint in that --quant policy."""
    return _packages_of(tiny_checkpoint)


@pytest.fixture(scope="session")
def tiny26_checkpoint(tmp_path_factory) -> Path:
    """The tiny 2.6B-family seed-0 checkpoint of fixtures/reference_tiny26_seed0 (no VAD heads, 4000 pieces)."""
    path = tmp_path_factory.mktemp("tiny26") / "ckpt"
    write_checkpoint(path, "tiny-2.6b", seed=0)
    return path


@pytest.fixture(scope="session")
def tiny26_packages(tiny26_checkpoint):
    """tiny26_packages(quant) -> the opened package of the tiny 2.6B-family checkpoint in that --quant policy."""
    return _packages_of(tiny26_checkpoint)


@dataclass(frozen=True)
class MeasuredPackage:
    path: Path                 # the package directory
    checkpoint: Path           # what it was converted from
    report: Path               # the converter's output (--report: one row per tensor)
    measured: Measured         # the converter's own wall and CPU time and peak RSS


@pytest.fixture(scope="session")
def full_q4_package(tmp_path_factory) -> MeasuredPackage:
    """The default (q4) package of the cached full-size seed-0 checkpoint, converted once per test process by the
    CLI in a child process whose cost is measured: tests/test_convert.py checks the package and that cost, the
    full-size int8 test runs it. Both are `full_size` tests, so one test process makes it once."""
    import make_reference
    checkpoint = make_reference.synth_checkpoint("full", 0)
    root = tmp_path_factory.mktemp("full-q4")
    report = root / "convert.txt"
    measured = run_measured([sys.executable, "-m", "kyutai_stt.cli", "convert", str(checkpoint), str(root / "pkg"),
                             "--report", "--report-frames", "0"], report, timeout=CONVERT_KILL_SECONDS)
    return MeasuredPackage(root / "pkg", checkpoint, report, measured)


def _packages_of(checkpoint: Path):
    """get(quant) -> the checkpoint converted in that --quant policy (once, beside it) and opened."""
    opened = {}

    def get(quant: str = "q4"):
        if quant not in opened:
            out = checkpoint.parent / f"pkg-{quant}"
            convert(str(checkpoint), out, quant)
            opened[quant] = open_package(out)
        return opened[quant]
    return get


def pytest_addoption(parser):
    parser.addoption("--record-durations", metavar="PATH", type=Path,
                     help="write each test group's seconds (setup, call and teardown summed) to PATH as JSON; "
                          f"{scheduling.DURATIONS.relative_to(scheduling.ROOT)} orders the groups, longest first")


@pytest.hookimpl(tryfirst=True)          # before xdist reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    """Every test under tests/web/ drives headless Chromium: `-m "not browser"` leaves them out of a quick loop.
    Tests marked `huge` run only when a -m expression asks for them; the summary names what was left out.

    Scheduling (./dev.sh test runs xdist with --dist loadgroup): a test process takes a whole group at a time, and
    a group is a file, except that every `full_size` test is in the one group "full-size", so no two test
    processes hold a full-size model at once. Groups start longest first, by the last recorded durations
    (tests/durations.json; a group not recorded yet goes first): the longest file never starts last."""
    for item in items:
        if "/web/" in item.path.as_posix() and "/tests/" in item.path.as_posix():
            item.add_marker(pytest.mark.browser)
        item.add_marker(pytest.mark.xdist_group(scheduling.group_of(item)))
    scheduling.longest_first(items)
    if not config.option.markexpr:
        huge = [item for item in items if item.get_closest_marker("huge")]
        if huge:
            config.hook.pytest_deselected(items=huge)
            items[:] = [item for item in items if not item.get_closest_marker("huge")]
            config.stash[_HUGE_LEFT_OUT] = [item.nodeid for item in huge]


def _peaks() -> tuple[float, float]:
    """(this process's peak RSS, the largest peak RSS of its finished child processes), in GiB."""
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,            # KiB -> GiB
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20)


def pytest_sessionfinish(session):
    split = sorted(g for g, workers in _GROUP_WORKERS.items() if len(workers) > 1)
    if split:     # module fixtures were made twice, two full-size models could meet in memory: fail the run
        session.config.stash[_SPLIT_GROUPS] = split
        if session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if hasattr(session.config, "workeroutput"):                  # an xdist worker: report to the controller
        session.config.workeroutput["peak_rss_gib"] = _peaks()
        session.config.workeroutput["huge_left_out"] = session.config.stash.get(_HUGE_LEFT_OUT, [])


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    output = getattr(node, "workeroutput", {})
    node.config.stash.setdefault(_WORKER_PEAKS, []).append(output.get("peak_rss_gib"))
    left_out = node.config.stash.setdefault(_HUGE_LEFT_OUT, [])
    left_out += [n for n in output.get("huge_left_out", []) if n not in left_out]


def pytest_runtest_logreport(report):
    """Sum each group's seconds for --record-durations (under xdist the controller sees every worker's reports;
    a test id carries its group after an `@`)."""
    group = scheduling.report_group(report.nodeid, report.keywords)
    _DURATIONS[group] = _DURATIONS.get(group, 0.0) + report.duration
    worker = getattr(getattr(report, "node", None), "gateway", None)
    if worker is not None:                           # the controller: which test process ran each group
        _GROUP_WORKERS.setdefault(group, set()).add(worker.id)


_DURATIONS: dict[str, float] = {}
_GROUP_WORKERS: dict[str, set[str]] = {}
_WORKER_PEAKS = pytest.StashKey[list]()
_SPLIT_GROUPS = pytest.StashKey[list]()
_HUGE_LEFT_OUT = pytest.StashKey[list]()


def pytest_terminal_summary(terminalreporter):
    """The suite's memory, for docs/testing.md: the largest peak of a test process (each xdist worker is one), and
    the largest peak of any child process they waited for (the official implementation at full size, the
    converter, Chromium)."""
    peaks = [p for p in terminalreporter.config.stash.get(_WORKER_PEAKS, []) if p] or [_peaks()]
    own, child = max(p[0] for p in peaks), max(p[1] for p in peaks)
    terminalreporter.write_line(f"peak RSS: test process {own:.1f} GiB, largest child process {child:.1f} GiB"
                                f" ({len(peaks)} test process{'es' if len(peaks) > 1 else ''})")
    record = terminalreporter.config.getoption("record_durations")
    if record and not hasattr(terminalreporter.config, "workerinput"):
        record.write_text(json.dumps({g: round(s, 1) for g, s in sorted(_DURATIONS.items())}, indent=1) + "\n")
        terminalreporter.write_line(f"test group durations written to {record}")
    for group in terminalreporter.config.stash.get(_SPLIT_GROUPS, []):
        terminalreporter.write_line(f"FAILED scheduling: the group {group} ran in more than one test process "
                                    "(./dev.sh test's --dist loadgroup, docs/testing.md)", red=True, bold=True)
    for nodeid in terminalreporter.config.stash.get(_HUGE_LEFT_OUT, []):
        terminalreporter.write_line(f"NOT RUN (marked huge: more memory and time than this suite's budget; "
                                    f"./dev.sh test -m huge runs it): {nodeid}", yellow=True, bold=True)
