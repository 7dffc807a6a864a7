"""Time the official implementation's LM step (moshi, bf16, CUDA graphs, batch 1) on the same GPU as our engine.

Benchmark-only twin of tools/make_reference.py: the two tools/ scripts are the project's only importers of
torch/moshi. Random weights with the stt-1b-en_fr config (timing does not depend on the values). Prints one line.

    python tools/bench_official.py [--steps 300] [--batch 1]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kyutai_stt.config import FULL_LM  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    from moshi.models import loaders
    from moshi.models.lm import LMGen

    config = FULL_LM.to_official_json()
    lm_kwargs = {k: v for k, v in config.items() if k not in
                 ("mimi_name", "tokenizer_name", "model_type", "lm_gen_config", "stt_config", "model_id")}
    torch.manual_seed(0)
    lm = loaders.get_moshi_lm(None, lm_kwargs=lm_kwargs, device="cuda", dtype=torch.bfloat16)
    gen = LMGen(lm, temp=0.0, temp_text=0.0)
    codes = torch.randint(0, FULL_LM.card, (args.batch, FULL_LM.n_q, 1), device="cuda")
    times = []
    with gen.streaming(args.batch), torch.no_grad():
        for i in range(args.warmup + args.steps):
            torch.cuda.synchronize()
            start = time.perf_counter()
            out = gen.step_with_extra_heads(codes)
            if out is not None:                 # the streaming loop needs the token on the CPU every step
                tokens, _ = out
                tokens.cpu()
            torch.cuda.synchronize()
            if i >= args.warmup:
                times.append((time.perf_counter() - start) * 1e3)
    mean = statistics.fmean(times)          # each step synchronised: the mean is the throughput here too
    times.sort()
    p50, p95 = statistics.median(times), times[int(0.95 * len(times)) - 1]
    print(json.dumps({"bench": "official_lm_step", "device": torch.cuda.get_device_name(), "batch": args.batch,
                      "torch": torch.__version__, "p50_ms": round(p50, 3), "p95_ms": round(p95, 3),
                      "mean_ms": round(mean, 3)}))


if __name__ == "__main__":
    main()
