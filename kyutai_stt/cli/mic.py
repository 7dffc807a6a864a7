"""`kyutai-stt mic`: transcribe the microphone live, printing words as they come and marking ends of turn.

Capture is PortAudio through `sounddevice` at the device's own rate (the Transcriber resamples); its callback only
queues blocks, and the main thread feeds them to the GPU, so a slow frame never drops audio. On a terminal the
line being recognised is redrawn in place (the Partial text); finished words stay. Ctrl-C stops: the last words
are flushed at once and the command exits 0.
"""
from __future__ import annotations

import queue
import sys
from collections.abc import Iterable
from typing import TextIO

import numpy as np

from kyutai_stt.cli.common import synthetic_note
from kyutai_stt.errors import UserError
from kyutai_stt.streaming.decoder import DecoderConfig
from kyutai_stt.streaming.transcriber import Transcriber
from kyutai_stt.weights.cache import resolve_model

BLOCK_S = 0.08                 # PortAudio block: one model frame of audio per callback
QUEUE_BLOCKS = 1000            # 80 s of audio may wait for a slow GPU before capture reports an overflow
END_OF_TURN_MARK = "  ⏎"


class MicError(UserError):
    pass


def add_arguments(parser) -> None:
    parser.add_argument("--model", metavar="PACKAGE_DIR|URL|HF_ID",
                        help="model package (default: the official model, downloaded and converted once)")
    parser.add_argument("--device", help="input device index or name substring (see --list-devices)")
    parser.add_argument("--list-devices", action="store_true", help="list the input devices and exit")
    parser.add_argument("--timestamps", action="store_true", help="print one word per line with its times")
    parser.add_argument("--eot-threshold", type=float, default=0.5,
                        help="end-of-turn probability threshold of the semantic VAD (default 0.5)")
    parser.add_argument("--silence-prefix", type=float, default=None,
                        help="seconds of silence fed before the microphone's audio (default: the model's config, at "
                             "least 1)")


def _sounddevice():
    try:
        import sounddevice
    except OSError as e:           # the wheel is there, the PortAudio library is not
        raise MicError(f"the microphone needs the PortAudio library ({e}). Install it: "
                       f"sudo apt-get install libportaudio2 (Debian/Ubuntu), brew install portaudio (macOS)") from None
    except ImportError:
        raise MicError("the microphone needs the sounddevice package: pip install sounddevice") from None
    return sounddevice


def input_devices(sd) -> list[dict]:
    return [{**d, "index": i} for i, d in enumerate(sd.query_devices()) if d["max_input_channels"] > 0]


def pick_device(sd, wanted: str | None) -> dict:
    devices = input_devices(sd)
    if not devices:
        raise MicError("no microphone found: PortAudio lists no input device. Plug one in, check that this user "
                       "may use audio devices (e.g. the 'audio' group), or transcribe a file: kyutai-stt transcribe")
    if wanted is None:
        default = sd.default.device[0]
        return next((d for d in devices if d["index"] == default), devices[0])
    matches = [d for d in devices if str(d["index"]) == wanted or wanted.lower() in d["name"].lower()]
    if not matches:
        raise MicError(f"no input device matches {wanted!r}; see kyutai-stt mic --list-devices")
    return matches[0]


class LivePrinter:
    """Words as they come; on a terminal the not-yet-final text is redrawn in place after them."""

    def __init__(self, out: TextIO, timestamps: bool, tty: bool | None = None):
        self.out, self.timestamps = out, timestamps
        self.tty = out.isatty() if tty is None else tty
        self.partial = ""

    def show(self, events: Iterable) -> None:
        for e in events:
            if e.type == "word":
                self._clear()
                self.out.write(f"[{e.start:7.2f} - {e.end:7.2f}] {e.text}\n" if self.timestamps else e.text + " ")
            elif e.type == "endOfTurn":
                self._clear()
                self.out.write(f"{END_OF_TURN_MARK} (end of turn at {e.time:.2f} s)\n")
            elif e.type == "partial":
                self._clear()
                self.partial = e.text
            else:
                continue
            if self.tty and self.partial:
                self.out.write(f"\x1b[2m{self.partial}\x1b[0m")
            self.out.flush()

    def _clear(self) -> None:
        if self.tty and self.partial:
            self.out.write("\b" * len(self.partial) + "\x1b[K")


def run_live(transcriber, blocks: Iterable[np.ndarray], rate: int, printer: LivePrinter) -> None:
    """Feed blocks of [n, channels] PCM until they end or Ctrl-C, then flush."""
    try:
        for block in blocks:
            printer.show(transcriber.feed(block, rate))
    except KeyboardInterrupt:
        pass
    printer.show(transcriber.flush())
    printer.out.write("\n")


def _capture(sd, device: dict, rate: int):
    """Blocks from the microphone; a status (overflow) is reported once per occurrence on stderr."""
    blocks: queue.Queue = queue.Queue(QUEUE_BLOCKS)

    def callback(data, frames, time_info, status):
        if status:
            print(f"kyutai-stt mic: {status}", file=sys.stderr)
        try:
            blocks.put_nowait(data.copy())
        except queue.Full:
            print("kyutai-stt mic: the GPU falls behind; audio dropped", file=sys.stderr)

    try:
        stream = sd.InputStream(device=device["index"], channels=1, samplerate=rate, dtype="float32",
                                blocksize=int(rate * BLOCK_S), callback=callback)
    except sd.PortAudioError as e:
        raise MicError(f"cannot open the microphone {device['name']!r} ({e}); is it in use or access denied?") from None
    with stream:
        while True:
            yield blocks.get()


def run(args) -> int:
    sd = _sounddevice()
    try:
        if args.list_devices:
            if not input_devices(sd):
                print("no input device found", file=sys.stderr)
            for d in input_devices(sd):
                print(f"{d['index']:3d}  {d['name']}  ({d['max_input_channels']} ch, {d['default_samplerate']:.0f} Hz)")
            return 0
        device = pick_device(sd, args.device)
    except sd.PortAudioError as e:
        raise MicError(f"no microphone can be opened: the audio system failed ({e}); check that a sound "
                       f"server or ALSA device is available") from None
    package_dir = resolve_model(args.model, progress=lambda m: print(m, file=sys.stderr, flush=True))
    transcriber = Transcriber(package_dir, silence_prefix=args.silence_prefix,
                              decoder=DecoderConfig(eot_threshold=args.eot_threshold))
    if transcriber.synthetic:
        print(synthetic_note(str(package_dir)), file=sys.stderr)
    if not transcriber.package.config.has_vad_heads:
        print("this model has no semantic VAD (only the 1B has one): no end-of-turn marks", file=sys.stderr)
    rate = int(device["default_samplerate"])
    print(f"listening on {device['name']} ({rate} Hz); Ctrl-C to stop", file=sys.stderr)
    run_live(transcriber, _capture(sd, device, rate), rate, LivePrinter(sys.stdout, args.timestamps))
    return 0
