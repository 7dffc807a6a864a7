"""`kyutai-stt bench` (cli/bench.py) runs and prints its one JSON line; --streams times a plan of several streams.
(The numbers themselves are BENCHMARKS.md's, measured on a GPU; here only that they are what they claim.)"""
from __future__ import annotations

import json

import pytest

from kyutai_stt import cli
from kyutai_stt.models.lm import MAX_STREAMS


def test_lm_step_of_two_streams_prints_its_throughput_and_profile(tiny_packages, capsys):
    package = tiny_packages("q4")
    assert cli.main(["bench", "--package", str(package.root), "--steps", "6", "--warmup", "2",
                     "--streams", "2", "--profile"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["bench"] == "lm_step" and line["streams"] == 2 and line["dispatches_per_step"] > 0
    assert cli.main(["bench", "--package", str(package.root), "--steps", "3", "--warmup", "1"]) == 0
    one = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 < one["plan_MiB"] < line["plan_MiB"], "the plan's buffers: each stream's rings and state on top"
    assert 0 < line["p50_ms"] <= line["p95_ms"]
    # The GPU's time of a frame's pass (lavapipe has timestamp queries).
    assert 0 < line["gpu_p50_ms"] <= line["gpu_p95_ms"] and line["gpu_mean_ms"] > 0
    # Both printed to 0.1, from mean_ms printed to 1e-4 ms.
    assert line["stream_frames_per_s"] == pytest.approx(2e3 / line["mean_ms"], rel=1e-3, abs=0.051)
    assert line["realtime_streams"] == pytest.approx(2 * 80 / line["mean_ms"], rel=1e-3, abs=0.051)
    # GPU time per dispatch group, slowest first: the layers' dispatches summed under one starred label.
    profile = line["profile_ms"]
    assert list(profile.values()) == sorted(profile.values(), reverse=True) and min(profile.values()) > 0
    layers = [g for g in profile if g.startswith("layers.*.")]
    assert layers and not [g for g in profile if g.startswith("layers.0.")], profile
    assert len(profile) < line["dispatches_per_step"]


@pytest.mark.parametrize("streams", ["0", str(MAX_STREAMS + 1)])
def test_streams_out_of_range_exit_2(tiny_packages, capsys, streams):
    assert cli.main(["bench", "--package", str(tiny_packages("q4").root), "--streams", streams]) == 2
    assert "--streams" in capsys.readouterr().err


def test_kernel_switches_are_named_in_the_line_and_unknown_ones_exit_2(tiny_packages, capsys):
    root = str(tiny_packages("q4").root)
    assert cli.main(["bench", "--package", root, "--steps", "3", "--warmup", "1",
                     "--kernels", "no-f16-kv,no-merge-rounding"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["kernels"] == "no-f16-kv,no-merge-rounding" and line["kv_f16"] is False
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "--package", root, "--kernels", "no-f16-kv,fast"])
    assert exit_info.value.code == 2 and "fast: not one of" in capsys.readouterr().err


def test_an_unknown_forced_variant_exits_2(tiny_packages, capsys, monkeypatch):
    monkeypatch.setenv("KYUTAI_STT_VARIANT", "fastest")
    assert cli.main(["bench", "--package", str(tiny_packages("q4").root), "--steps", "3"]) == 2
    assert "KYUTAI_STT_VARIANT='fastest' is not a kernel variant" in capsys.readouterr().err
