"""The `kyutai-stt` command. Each subcommand lives in its own module exposing add_arguments(parser) and run(args).

Errors that are the user's to fix (bad files, missing packages, no GPU) print one clear message and exit 1;
a traceback means a bug in kyutai-stt.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import UserError

# subcommand -> (module, one-line help).
COMMANDS = {
    "doctor": ("kyutai_stt.doctor", "check this machine: Python, wgpu, the WebGPU adapter and its limits, Chromium"),
    "synth": ("kyutai_stt.synth_command", "write a synthetic checkpoint in the official layout (random weights)"),
    "convert": ("kyutai_stt.convert", "convert an official checkpoint into a quantised model package"),
    "bench": ("kyutai_stt.bench", "time the LM step on this machine's WebGPU adapter (one JSON line)"),
    "transcribe": ("kyutai_stt.transcribe_command", "transcribe audio files to text, json, srt or vtt"),
    "mic": ("kyutai_stt.mic", "transcribe the microphone live: words as they come, ends of turn marked"),
    "serve": ("kyutai_stt.serve", "serve the browser app and a model package on this machine (--https for a phone)"),
    "export-web": ("kyutai_stt.export_web", "write the browser app and a model package as a static site"),
    "eval": ("kyutai_stt.evaluate", "word error rate and real-time factor on a dataset folder (e.g. LibriSpeech)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kyutai-stt",
        description="Private, real-time speech-to-text (Kyutai STT) on your own GPU through WebGPU.")
    parser.add_argument("--version", action="version", version=f"kyutai-stt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(module=module_name)
        add = getattr(importlib.import_module(module_name), "add_arguments", None)
        if add:
            add(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    module = importlib.import_module(args.module)
    try:
        return int(module.run(args) or 0)
    except UserError as e:
        print(f"kyutai-stt {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
