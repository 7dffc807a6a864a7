"""Lint, as part of the test command: ruff over the Python (rules in pyproject.toml) and ESLint's recommended
rules over the browser modules (tools/eslint.config.js). Both must be clean."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from npm_tools import ROOT, install_tools

ESLINT = ("eslint@9.39.5", "@eslint/js@9.39.5", "globals@15.15.0")
JS_DIRS = ("kyutai_stt/web", "tests/web/harness")


def test_ruff_finds_nothing():
    ruff = Path(sys.executable).with_name("ruff")
    assert ruff.exists(), "ruff is a test dependency: ./dev.sh test installs it"
    done = subprocess.run([str(ruff), "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_checks_layout_too(tmp_path):
    """The format check is pycodestyle's layout rules (preview in ruff): a badly laid out file is refused."""
    ruff = Path(sys.executable).with_name("ruff")
    (tmp_path / "bad.py").write_text("x=1\ndef f( a ):\n    return a\n")
    done = subprocess.run([str(ruff), "check", "--no-cache", "--output-format", "concise", "--config",
                           str(ROOT / "pyproject.toml"), "bad.py"], cwd=tmp_path, capture_output=True, text=True)
    found = {line.split(": ")[1] for line in done.stdout.splitlines() if line.startswith("bad.py:")}
    assert {"missing-whitespace-around-operator", "blank-lines-top-level", "whitespace-after-open-bracket"} <= found, \
        done.stdout


def test_eslint_finds_nothing():
    home = install_tools("eslint-" + ESLINT[0].split("@")[1], *ESLINT)
    shutil.copy(ROOT / "tools" / "eslint.config.js", home / "eslint.config.js")   # beside its node_modules
    done = subprocess.run([str(home / "node_modules" / ".bin" / "eslint"), "--config", str(home / "eslint.config.js"),
                           *JS_DIRS], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
