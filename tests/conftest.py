"""Inputs shared by the model, transcription and browser tests: the tiny seed-0 checkpoint the committed
fixtures were made from, and its packages, each written once per test session."""
from __future__ import annotations

import json
import resource
from pathlib import Path

import pytest

from kyutai_stt.weights.convert import convert
from kyutai_stt.weights.package import open_package
from kyutai_stt.weights.synthetic import write_checkpoint

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "reference_tiny_seed0"


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


def pytest_collection_modifyitems(config, items):
    """Every test under tests/web/ drives headless Chromium: `-m "not browser"` leaves them out of a quick loop.
    Tests marked `huge` run only when a -m expression asks for them; the summary names what was left out."""
    for item in items:
        if "/web/" in item.path.as_posix() and "/tests/" in item.path.as_posix():
            item.add_marker(pytest.mark.browser)
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
    if hasattr(session.config, "workeroutput"):                  # an xdist worker: report to the controller
        session.config.workeroutput["peak_rss_gib"] = _peaks()
        session.config.workeroutput["huge_left_out"] = session.config.stash.get(_HUGE_LEFT_OUT, [])


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    output = getattr(node, "workeroutput", {})
    node.config.stash.setdefault(_WORKER_PEAKS, []).append(output.get("peak_rss_gib"))
    left_out = node.config.stash.setdefault(_HUGE_LEFT_OUT, [])
    left_out += [n for n in output.get("huge_left_out", []) if n not in left_out]


_WORKER_PEAKS = pytest.StashKey[list]()
_HUGE_LEFT_OUT = pytest.StashKey[list]()


def pytest_terminal_summary(terminalreporter):
    """The suite's memory, for docs/testing.md: the largest peak of a test process (each xdist worker is one), and
    the largest peak of any child process they waited for (the official implementation at full size, the
    converter, Chromium)."""
    peaks = [p for p in terminalreporter.config.stash.get(_WORKER_PEAKS, []) if p] or [_peaks()]
    own, child = max(p[0] for p in peaks), max(p[1] for p in peaks)
    terminalreporter.write_line(f"peak RSS: test process {own:.1f} GiB, largest child process {child:.1f} GiB"
                                f" ({len(peaks)} test process{'es' if len(peaks) > 1 else ''})")
    for nodeid in terminalreporter.config.stash.get(_HUGE_LEFT_OUT, []):
        terminalreporter.write_line(f"NOT RUN (marked huge: more memory and time than this suite's budget; "
                                    f"./dev.sh test -m huge runs it): {nodeid}", yellow=True, bold=True)
