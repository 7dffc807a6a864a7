"""npm and the Node tools the tests use (TypeScript, ESLint): installed from the npm registry into .cache/npm-tools/
of the repository (ignored by git) the first time, then reused. A machine without npm fails these tests
(./dev.sh installs Node.js and npm); they are never skipped."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / ".cache" / "npm-tools"


def npm(*args, cwd: Path, timeout: int = 300) -> str:
    if not shutil.which("npm"):
        pytest.fail("npm not found: install Node.js and npm (Debian: apt-get install nodejs npm); the npm package "
                    "and lint tests need it")
    done = subprocess.run(["npm", "--no-audit", "--no-fund", "--loglevel=error", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"npm {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def install_tools(name: str, *specs: str) -> Path:
    """The npm packages `specs` installed together into .cache/npm-tools/<name>/ (whole or not at all: a
    temporary directory renamed into place); returns that directory. `name` should change with the versions."""
    home = TOOLS / name
    if not (home / "node_modules").is_dir():
        TOOLS.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=TOOLS))
        try:
            (partial / "package.json").write_text('{"private": true, "type": "module"}\n')
            npm("install", *specs, cwd=partial)
            partial.rename(home)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return home
