"""`kyutai-stt synth`: write a synthetic checkpoint in the official layout (see synthetic.py)."""
from __future__ import annotations

import time
from pathlib import Path

from kyutai_stt.weights.synthetic import MIMIS, SIZES, write_checkpoint


def add_arguments(parser) -> None:
    parser.add_argument("out_dir", type=Path, help="directory to write (created if needed)")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny",
                        help="tiny: small dimensions for tests; full: exactly the real 1B's files (2.4 GB); "
                             "2.6b: exactly the real kyutai/stt-2.6b-en's files (5.6 GB); tiny-2.6b: the 2.6B "
                             "family's small sibling (no VAD heads, 4000-piece vocabulary, 2.5 s delay)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (the same seed writes the same bytes)")
    parser.add_argument("--mimi", choices=sorted(MIMIS),
                        help="real: moshi's Mimi (384 MB); tiny: the tests' small Mimi, named in config.json with "
                             "its config file (default: tiny for the tiny sizes, real for the others)")
    parser.add_argument("--no-vad-heads", action="store_true",
                        help="write the plain kyutai/stt-1b-en_fr variant, without the 4 semantic-VAD heads "
                             "(the 2.6B sizes have none either way)")


def run(args) -> int:
    start = time.perf_counter()
    paths = write_checkpoint(args.out_dir, args.size, args.seed, vad_heads=not args.no_vad_heads, mimi=args.mimi)
    for path in paths.values():
        print(f"{path}  {path.stat().st_size:,} bytes")
    print(f"synthetic {args.size} checkpoint (random weights: any transcript is meaningless) "
          f"written in {time.perf_counter() - start:.1f} s")
    return 0
