"""`kyutai-stt synth`: write a synthetic checkpoint in the official layout (see synthetic.py)."""
from __future__ import annotations

import time
from pathlib import Path

from kyutai_stt.weights.synthetic import SIZES, write_checkpoint


def add_arguments(parser) -> None:
    parser.add_argument("out_dir", type=Path, help="directory to write (created if needed)")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny",
                        help="tiny: small dimensions for tests; full: exactly the real files' sizes (2.4 GB)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (the same seed writes the same bytes)")
    parser.add_argument("--no-vad-heads", action="store_true",
                        help="write the plain kyutai/stt-1b-en_fr variant, without the 4 semantic-VAD heads")


def run(args) -> int:
    start = time.perf_counter()
    paths = write_checkpoint(args.out_dir, args.size, args.seed, vad_heads=not args.no_vad_heads)
    for path in paths.values():
        print(f"{path}  {path.stat().st_size:,} bytes")
    print(f"synthetic {args.size} checkpoint (random weights: any transcript is meaningless) "
          f"written in {time.perf_counter() - start:.1f} s")
    return 0
