"""`kyutai-stt doctor`: what this machine offers (Python, wgpu, the WebGPU adapter, Chromium) in one report."""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys

import kyutai_stt

# Limits measured in bytes are shown in KiB/MiB/GiB; the rest are counts.
_BYTE_LIMITS = {
    "max-storage-buffer-binding-size",
    "max-buffer-size",
    "max-uniform-buffer-binding-size",
    "max-compute-workgroup-storage-size",
}
_CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_LABEL_WIDTH = 16


def _bytes(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.4g} {unit}"
    return f"{size} B"


def _line(label: str, value: str, indent: int = 2) -> str:
    return f"{' ' * indent}{label:<{_LABEL_WIDTH}} {value}"


def _wgpu_versions() -> str:
    try:
        import wgpu
    except Exception as error:  # a missing or broken wgpu install is itself a finding
        return f"not importable ({error})"
    try:
        from wgpu.backends.wgpu_native import __version__ as native_version
        return f"{wgpu.__version__} (wgpu-native {native_version})"
    except Exception:
        return wgpu.__version__


def find_chromium() -> str | None:
    """Path of a Chromium-family browser (the browser tests drive one), or None."""
    candidates = ["/usr/bin/chromium", *(shutil.which(name) for name in _CHROMIUM_NAMES)]
    return next((path for path in candidates if path and shutil.which(path)), None)


def _chromium_line() -> str:
    path = find_chromium()
    if path is None:
        return _line("Chromium", "not found (needed only for the browser tests: apt-get install chromium)")
    try:
        # stdout only: Debian's wrapper script prints shell noise on stderr.
        result = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
        version = result.stdout.strip() or f"--version exited {result.returncode}"
    except (OSError, subprocess.TimeoutExpired) as error:
        version = f"--version failed ({error})"
    return _line("Chromium", f"{version} ({path})")


def _adapter_lines() -> tuple[list[str], bool]:
    try:
        from kyutai_stt.engine import device as gpu
        summary = gpu.adapter_summary()
    except Exception as error:  # NoAdapterError (its message says what to install), or wgpu failing to load
        return [_line("WebGPU adapter", "NONE"), *("    " + row for row in str(error).splitlines())], False
    lines = [
        _line("WebGPU adapter", summary["name"]),
        _line("", f"{summary['adapter_type']} via {summary['backend']}, vendor {summary['vendor']}, "
                  f"{summary['description']}"),
    ]
    if summary["adapter_type"] == "CPU":
        lines.append(_line("", "software rendering: fine for tests, far too slow for real-time transcription"))
    missing = sorted(set(gpu.WANTED_FEATURES) - set(summary["features"]))
    features = ", ".join(summary["features"]) or "none"
    if missing:
        features += f" (missing: {', '.join(missing)}; slower fallback kernels are used)"
    lines.append(_line("features", features))
    lines.append(_line("limits", ""))
    for name, value in summary["limits"].items():
        shown = _bytes(value) if name in _BYTE_LIMITS else str(value)
        lines.append(f"    {name.replace('-', ' '):<40} {shown}")
    return lines, True


def _collect() -> tuple[str, bool]:
    adapter_lines, has_adapter = _adapter_lines()
    lines = [
        "kyutai-stt doctor",
        _line("Python", f"{platform.python_version()} ({sys.executable})"),
        _line("kyutai-stt", kyutai_stt.__version__),
        _line("wgpu", _wgpu_versions()),
        *adapter_lines,
        _chromium_line(),
    ]
    return "\n".join(lines), has_adapter


def report() -> str:
    """The readable multi-line report (never raises for a missing adapter: it says so)."""
    return _collect()[0]


def run(args=None) -> int:
    """Print the report; 0 when a WebGPU adapter is available, 1 when not (the CLI's exit code)."""
    text, has_adapter = _collect()
    print(text)
    return 0 if has_adapter else 1
