"""The `kyutai-stt` command. Each subcommand lives in its own module exposing add_arguments(parser) and run(args).

Errors that are the user's to fix (bad files, missing packages, no GPU) print one clear message and exit 2 (as
argparse does for a bad option). Anything else is a bug in kyutai-stt: one line on stderr says so and where the
full traceback was written (a file under the cache folder, else the temporary folder), exit 3. SIGTERM is turned
into SystemExit, so that every command cleans up (temporary files and directories) as it does on Ctrl-C.
"""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

from kyutai_stt import __version__
from kyutai_stt.errors import UserError

USER_ERROR_EXIT = 2
INTERNAL_ERROR_EXIT = 3

# subcommand -> (module, one-line help).
COMMANDS = {
    "doctor": ("kyutai_stt.cli.doctor", "check this machine: Python, wgpu, the WebGPU adapter, its limits, Chromium"),
    "synth": ("kyutai_stt.cli.synth", "write a synthetic checkpoint in the official layout (random weights)"),
    "convert": ("kyutai_stt.cli.convert", "convert an official checkpoint into a quantised model package"),
    "bench": ("kyutai_stt.cli.bench", "time the LM step on this machine's WebGPU adapter (one JSON line)"),
    "transcribe": ("kyutai_stt.cli.transcribe", "transcribe audio files to text, json, srt or vtt"),
    "mic": ("kyutai_stt.cli.mic", "transcribe the microphone live: words as they come, ends of turn marked"),
    "serve": ("kyutai_stt.cli.serve", "serve the browser app and a model package here (--https for a phone)"),
    "export-web": ("kyutai_stt.cli.export_web", "write the browser app and a model package as a static site"),
    "eval": ("kyutai_stt.cli.evaluate", "word error rate and real-time factor on a dataset folder (e.g. LibriSpeech)"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every subcommand is listed; only COMMAND's module is imported (for its options): a command imports what it
    runs on (wgpu, numpy, ...) at its top, and `kyutai-stt --help` or one command should not load them all."""
    parser = argparse.ArgumentParser(
        prog="kyutai-stt",
        description="Private, real-time speech-to-text (Kyutai STT) on your own GPU through WebGPU.")
    parser.add_argument("--version", action="version", version=f"kyutai-stt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        subparser = sub.add_parser(name, help=help_text, description=help_text)
        subparser.set_defaults(module=module_name)
        add = getattr(importlib.import_module(module_name), "add_arguments", None) if name == command else None
        if add:
            add(subparser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(next((a for a in argv if not a.startswith("-")), None))
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    module = importlib.import_module(args.module)
    previous = _exit_on_sigterm()
    try:
        return int(module.run(args) or 0)
    except UserError as e:
        print(f"kyutai-stt {args.command}: error: {e}", file=sys.stderr)
        return USER_ERROR_EXIT
    except KeyboardInterrupt:
        return 130
    except Exception as e:          # noqa: BLE001 - a bug: one line here, the traceback in a file
        where = _write_traceback(args.command)
        print(f"kyutai-stt {args.command}: internal error ({type(e).__name__}: {str(e)[:300]}); this is a bug in "
              f"kyutai-stt; the full traceback is in {where}", file=sys.stderr)
        return INTERNAL_ERROR_EXIT
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm():
    """SIGTERM -> SystemExit(143) in the main thread: `finally` blocks and `except BaseException` clean-ups run as
    they do for Ctrl-C (the default action would kill the process with temporary files left behind). Returns the
    previous handler (None when not on the main thread: signals can only be handled there)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def terminate(signum, frame):
        raise SystemExit(128 + signum)
    return signal.signal(signal.SIGTERM, terminate)


def _write_traceback(command: str) -> str:
    text = f"kyutai-stt {__version__} {command}, argv {sys.argv!r}\n{traceback.format_exc()}"
    name = f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    folders = [Path(tempfile.gettempdir())]
    try:
        from kyutai_stt.weights.cache import cache_root
        folders.insert(0, cache_root() / "crashes")
    except Exception:           # noqa: BLE001 - the report must not fail for want of a cache folder
        pass
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text, encoding="utf-8")
            return str(folder / name)
        except OSError:
            continue
    return "(nowhere: no writable folder; traceback follows)\n" + text


if __name__ == "__main__":
    sys.exit(main())
