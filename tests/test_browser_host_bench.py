"""benchmarks/browser_host.py: web/runtime.js run by Node on Dawn (the `webgpu` npm package, installed by the
benchmark with `npm ci` from the root package.json) over an exported site, timed as `kyutai-stt bench` times the
native host. Here on Chromium's SwiftShader Vulkan driver (lavapipe lacks a feature Dawn needs): the numbers are
BENCHMARKS.md's on a GPU; this checks that the line is what it claims (the browser's own variant rules chose the
plan, every dispatch of it ran, its timings are consistent) and that bad input is refused."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kyutai_stt.cli.bench import dispatch_group
from kyutai_stt.models.lm import lm_plan
from kyutai_stt.models.variants import tunings

ROOT = Path(__file__).resolve().parents[1]
SWIFTSHADER = Path("/usr/lib/chromium/vk_swiftshader_icd.json")     # Debian's chromium package (./dev.sh installs it)


def bench(*args: str) -> subprocess.CompletedProcess:
    if not SWIFTSHADER.is_file():
        pytest.fail(f"{SWIFTSHADER} is missing: install Chromium (apt-get install chromium; ./dev.sh does)")
    env = {**os.environ, "VK_DRIVER_FILES": str(SWIFTSHADER)}
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "browser_host.py"), *args], capture_output=True,
                          text=True, env=env, timeout=600)


def test_lm_step_in_the_browser_host_prints_one_line(tiny_packages):
    package = tiny_packages("q4")
    done = bench("--package", str(package.root), "--steps", "4", "--warmup", "1", "--position", "7")
    assert done.returncode == 0, done.stderr
    line = json.loads(done.stdout.strip().splitlines()[-1])
    assert line["bench"] == "lm_step" and line["host"] == "browser" and line["start_position"] == 7
    assert line["variant"] == "cpu" and "SwiftShader" in line["adapter"]     # a CPU adapter, by the rules
    assert line["dispatches_per_step"] == len(lm_plan(package, tunings()["cpu"]).dispatches)
    assert 0 < line["p50_ms"] <= line["p95_ms"] and line["mean_ms"] > 0 and line["frame_latency_p50_ms"] > 0
    # The GPU time of a frame, from timestamp queries, cannot exceed the wall time between frames by much.
    assert 0 < line["gpu_mean_ms"] <= 1.5 * line["mean_ms"]
    assert line["realtime_streams"] == pytest.approx(80 / line["mean_ms"], rel=1e-3, abs=0.051)


def test_compare_native_takes_the_browser_hosts_frames(tiny_packages):
    """--compare-native: the plan the browser's rules chose, run by the native engine on the frames the browser host
    took, from the same position: the two hosts' text tokens, step by step (here both on SwiftShader's Vulkan)."""
    package = tiny_packages("q4")
    done = bench("--package", str(package.root), "--steps", "6", "--warmup", "2", "--position", "7",
                 "--compare-native")
    assert done.returncode == 0, done.stderr
    line = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(line["tokens"]) == 6 and len(set(line["tokens"])) > 1     # steps that differ: a test that can fail
    assert line["native_tokens"] == line["tokens"] and line["native_tokens_equal"] == 6


def test_profile_groups_every_dispatch(tiny_packages):
    """--profile: each dispatch timed in a pass of its own (runtime.js dispatchTimes), summed by label with its
    numbers starred as `kyutai-stt bench --profile` groups them: every group of the chosen plan, each timed."""
    package = tiny_packages("q4")
    done = bench("--package", str(package.root), "--steps", "3", "--warmup", "1", "--profile")
    assert done.returncode == 0, done.stderr
    line = json.loads(done.stdout.strip().splitlines()[-1])
    groups = {dispatch_group(d.label) for d in lm_plan(package, tunings()[line["variant"]]).dispatches}
    assert set(line["profile_ms"]) == groups and all(ms > 0 for ms in line["profile_ms"].values())
    # Each dispatch in a pass of its own: together at least most of a frame's pass.
    assert sum(line["profile_ms"].values()) > 0.5 * line["gpu_mean_ms"]


def test_bad_dawn_toggle_exits_2_naming_it(tiny_packages):
    done = bench("--package", str(tiny_packages("q4").root), "--dawn-toggle", "vulkan_enable_f16_on_nvidia")
    assert done.returncode == 2 and "--dawn-toggle 'vulkan_enable_f16_on_nvidia'" in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_package_exits_2_naming_it(tmp_path):
    done = bench("--package", str(tmp_path / "nowhere"))
    assert done.returncode == 2 and "not a model package directory" in done.stderr
    assert "Traceback" not in done.stderr
