"""Lint, as part of the test command: ruff over the Python (rules in pyproject.toml) and ESLint's recommended
rules over the browser modules (tools/eslint.config.js). Both must be clean."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from npm_tools import ROOT, install_tools

ESLINT = ("eslint@9.39.5", "@eslint/js@9.39.5", "globals@15.15.0")
JS_DIRS = ("kyutai_stt/web", "tests/web/harness", "benchmarks/browser_host.mjs")


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


def test_every_script_imports():
    """Lint cannot see a stale import: each benchmark and tool is imported (its main() not run), so a module moved
    under it fails here rather than in the next benchmark run (benchmarks/mimi.py once imported a removed module)."""
    import importlib.util

    broken = []
    for path in sorted([*(ROOT / "benchmarks").glob("*.py"), *(ROOT / "tools").glob("*.py")]):
        spec = importlib.util.spec_from_file_location(f"script_{path.stem}", path)
        sys.modules[spec.name] = module = importlib.util.module_from_spec(spec)      # dataclasses look it up
        try:
            spec.loader.exec_module(module)
        except Exception as e:      # noqa: BLE001 - any failure to import is the finding
            broken.append(f"{path.relative_to(ROOT)}: {type(e).__name__}: {e}")
        finally:
            del sys.modules[spec.name]
    assert not broken, "\n".join(broken)
