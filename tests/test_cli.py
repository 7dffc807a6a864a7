"""The README's commands exist and run; the CLI reports user errors without a traceback."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from kyutai_stt import cli

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def readme_commands() -> list[str]:
    """Every command line in the README's sh blocks, without comments."""
    blocks = re.findall(r"```sh\n(.*?)```", README, re.S)
    return [line.split("#")[0].strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_readme_gives_exactly_two_setup_commands_that_dev_sh_implements():
    setup = [c for c in readme_commands() if c.startswith("./dev.sh")]
    assert setup == ["./dev.sh start", "./dev.sh test"]
    script = (ROOT / "dev.sh").read_text()
    for command in setup:
        assert re.search(rf"^\s+{command.split()[1]}\)", script, re.M), f"dev.sh has no '{command}' case"


def test_ci_runs_the_readme_test_command_and_nothing_else():
    lines = [line for line in (ROOT / ".ci/run").read_text().splitlines()
             if line.strip() and not line.startswith("#") and not line.startswith("set ")
             and not line.startswith("cd ")]
    assert lines == ["exec ./dev.sh test"]


def test_readme_kyutai_stt_subcommands_exist():
    used = {c.split()[1] for c in readme_commands() if c.startswith(".venv/bin/kyutai-stt")}
    assert used, "the README shows no kyutai-stt command"
    assert used <= set(cli.COMMANDS), f"README mentions unknown subcommands {used - set(cli.COMMANDS)}"


def test_help_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "kyutai_stt.cli", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for name in cli.COMMANDS:
        assert name in out


def test_synth_command_writes_a_checkpoint(tmp_path, capsys):
    assert cli.main(["synth", "--size", "tiny", "--seed", "3", str(tmp_path / "m")]) == 0
    names = {p.name for p in (tmp_path / "m").iterdir()}
    assert names == {"config.json", "model.safetensors", "mimi-tiny.safetensors", "mimi-tiny.json",
                     "tokenizer_en_fr_audio_8000.model", "SYNTHETIC.json"}
    assert json.loads((tmp_path / "m" / "SYNTHETIC.json").read_text())["seed"] == 3
    assert "meaningless" in capsys.readouterr().out


def test_doctor_finds_the_adapter():
    proc = subprocess.run([sys.executable, "-m", "kyutai_stt.cli", "doctor"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WebGPU adapter" in proc.stdout and "NONE" not in proc.stdout


@pytest.mark.parametrize("argv", [["synth", "--size", "huge", "x"], ["nonsense"]])
def test_bad_arguments_exit_with_usage_error(argv):
    proc = subprocess.run([sys.executable, "-m", "kyutai_stt.cli", *argv], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_readme_main_command_runs(tmp_path):
    """`./dev.sh start` on this machine (already set up by `./dev.sh test`, so it installs nothing): it checks the
    machine, then serves the app on the address it prints; offline, with the synthetic model."""
    env = {**os.environ, "KYUTAI_STT_CACHE": str(tmp_path / "cache"), "PORT": "0", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(["bash", str(ROOT / "dev.sh"), "start"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)
    try:
        lines = []
        while not any(line.startswith("open ") for line in lines):
            line = proc.stdout.readline()
            assert line, "dev.sh start ended early:\n" + "".join(lines) + proc.stderr.read()[-3000:]
            lines.append(line)
        assert any("WebGPU adapter" in line for line in lines)
        url = re.search(r"open (http://localhost:\d+/)", lines[-1]).group(1)
        page = urllib.request.urlopen(url, timeout=30).read().decode()
        assert "<title>Private speech-to-text" in page
        manifest = json.loads(urllib.request.urlopen(url + "model/manifest.json", timeout=30).read())
        assert manifest["synthetic"], "offline, the main command serves the labelled synthetic model"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_the_test_command_schedules_groups_by_their_recorded_durations():
    """./dev.sh test hands out the groups of tests/conftest.py (a file, or "full-size") in the order of
    tests/durations.json: every group it lists exists (a renamed file would otherwise silently lose its place)."""
    import scheduling
    assert "--dist loadgroup --no-loadscope-reorder" in (ROOT / "dev.sh").read_text()
    recorded = scheduling.recorded()
    assert scheduling.FULL_SIZE_GROUP in recorded
    assert all(group == scheduling.FULL_SIZE_GROUP or (ROOT / group).is_file() for group in recorded), recorded
    assert all(seconds >= 0 for seconds in recorded.values())
    # The group after the last `@`: a parameter's id may hold one (test_mimi_kernels' "TILE_K@16" cases).
    assert scheduling.report_group("tests/a.py::test[x@16-2]@tests/a.py", ()) == "tests/a.py"
    assert scheduling.report_group("tests/a.py::test[x]", ()) == "tests/a.py"
    assert scheduling.report_group("tests/a.py::test[x]", ("full_size",)) == scheduling.FULL_SIZE_GROUP
