"""Synthetic checkpoints in exactly the official layout (names, shapes, dtypes, byte sizes), from a seed.

The real weights cannot be downloaded here; our engine is held to the official implementation running on these.
Every tensor is drawn from its own generator seeded by (seed, crc32(name)), so a file is deterministic and the
order of writing does not matter. How the weights are scaled, and why, is in docs/synthetic.md.
"""
from __future__ import annotations

import json
import os
import zlib
from importlib import resources
from pathlib import Path

import numpy as np

from kyutai_stt.config import (
    FULL_2_6B_LM,
    FULL_LM,
    LM_FILE,
    MIMI,
    REAL_MIMI_NAMES,
    TINY_2_6B_LM,
    TINY_LM,
    TINY_MIMI,
    TINY_MIMI_NAMES,
    LMConfig,
    MimiConfig,
    replace,
)
from kyutai_stt.weights import checkpoint, safetensors_io

# Text-head rows are scaled by 2**u, u ~ U(-1, 2): a few dozen large-norm rows dominate the argmax, so the winning
# logit usually leads by several units and token-exact comparisons do not hinge on rounding noise.
TEXT_ROW_SCALE_EXPONENTS = (-1.0, 2.0)
# Rows 0 (word boundary) and 3 (padding) get STRUCTURAL_ROW_NORM x the largest row norm: with plain random rows
# the model never emits them, and words, timestamps and ends of turn would only ever appear at flush. With it,
# the tiny model's transcripts of the fixture speech have several words and ends of turn, like a real stream.
STRUCTURAL_TOKENS = (0, 3)
STRUCTURAL_ROW_NORM = 2.0
TEXT_LOGIT_GAIN = 2.0
VAD_LOGIT_GAIN = 2.0
# Codebook entries get a per-entry norm in [0.5, 1.5] so nearest-neighbour margins are wider than for equal norms.
CODEBOOK_NORM_RANGE = (0.5, 1.5)
TOKENIZER_VOCAB = 8000                                   # the 1B's; write_checkpoint uses the config's text_card
SPECIAL_PIECES = ("<unk>", "<s>", "</s>", "<pad>")       # ids 0..3, as in the official tokenizer
# Written next to the official files: the converter copies it into the package manifest ("synthetic"), so every
# tool can say that a package's transcripts are meaningless. Official checkpoints have no such file.
MARKER_FILE = "SYNTHETIC.json"


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _normal(rng: np.random.Generator, shape, std: float) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)


def lm_tensor(cfg: LMConfig, name: str, shape, seed: int) -> np.ndarray:
    """One LM tensor in fp32 (the caller rounds to bf16)."""
    rng = _rng(seed, name)
    fan_in = shape[-1]
    if name.endswith(".alpha"):                                        # RMSNorm scales
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if name == "text_emb.weight" or name.startswith("emb."):
        return _normal(rng, shape, 1.0)
    if name == "text_linear.weight":
        w = _normal(rng, shape, TEXT_LOGIT_GAIN / np.sqrt(fan_in))
        w *= (2.0 ** rng.uniform(*TEXT_ROW_SCALE_EXPONENTS, (shape[0], 1))).astype(np.float32)
        norms = np.linalg.norm(w, axis=1)
        rows = list(STRUCTURAL_TOKENS)
        w[rows] *= (STRUCTURAL_ROW_NORM * norms.max() / norms[rows])[:, None]
        return w
    if name.startswith("extra_heads."):
        return _normal(rng, shape, VAD_LOGIT_GAIN / np.sqrt(fan_in))
    return _normal(rng, shape, 1.0 / np.sqrt(fan_in))                  # linear layers


def mimi_tensor(cfg: MimiConfig, name: str, shape, seed: int) -> np.ndarray:
    rng = _rng(seed, name)
    if name.endswith("._initialized"):
        return np.ones(shape, np.float32)
    if name.endswith(".cluster_usage"):
        return rng.uniform(0.5, 2.0, shape).astype(np.float32)
    if name.endswith(".embedding_sum"):
        # codebook = embedding_sum / cluster_usage; draw the codebook, then multiply by that entry's usage.
        usage = mimi_tensor(cfg, name.replace("embedding_sum", "cluster_usage"), (shape[0],), seed)
        norms = rng.uniform(*CODEBOOK_NORM_RANGE, (shape[0], 1)).astype(np.float32)
        return _normal(rng, shape, 1.0) * norms * usage[:, None]
    if name.endswith(".bias"):
        return _normal(rng, shape, 0.02)
    if ".norm1." in name or ".norm2." in name:                         # LayerNorm weight
        return rng.uniform(0.8, 1.2, shape).astype(np.float32)
    if name.endswith(".scale"):                                        # LayerScale
        return rng.uniform(0.05, 0.2, shape).astype(np.float32)
    if name.startswith("upsample."):                                   # depthwise: one input channel each
        return _normal(rng, shape, 0.5)
    fan_in = int(np.prod(shape[1:]))
    if ".convtr." in name:                                             # (c_in, c_out, k)
        fan_in = shape[0] * shape[2]
    return _normal(rng, shape, 1.0 / np.sqrt(fan_in))


def lm_specs(cfg: LMConfig) -> list[tuple[str, str, tuple[int, ...]]]:
    """model.safetensors' (name, dtype, shape) entries: the official layout, all bf16."""
    return [(n, checkpoint.LM_DTYPE, s) for n, s in checkpoint.lm_layout(cfg).items()]


def lm_file_bytes(cfg: LMConfig) -> int:
    """The size write_lm writes for cfg, computed without writing (the 2.6B file is 5.2 GB)."""
    return safetensors_io.file_size(lm_specs(cfg))


def write_lm(path: Path, cfg: LMConfig, seed: int) -> int:
    layout = checkpoint.lm_layout(cfg)
    return safetensors_io.write(
        path, lm_specs(cfg), lambda n: safetensors_io.f32_to_bf16_bits(lm_tensor(cfg, n, layout[n], seed)))


def write_mimi(path: Path, cfg: MimiConfig, seed: int) -> int:
    layout = checkpoint.mimi_layout(cfg)
    specs = [(n, checkpoint.MIMI_DTYPE, s) for n, s in layout.items()]
    return safetensors_io.write(path, specs, lambda n: mimi_tensor(cfg, n, layout[n], seed))


def tokenizer_pieces(vocab_size: int = TOKENIZER_VOCAB) -> list[str]:
    """Ordinary pieces of the stand-in tokenizer, from the shipped word list: single characters, '▁word',
    then the most frequent fragments (2 characters or more) of the words, until the vocabulary is full."""
    text = resources.files("kyutai_stt").joinpath("data/tokenizer_words.txt").read_text(encoding="utf-8")
    words = [w for line in text.splitlines() if not line.startswith("#") for w in line.split()]
    budget = vocab_size - len(SPECIAL_PIECES) - 256
    chars = sorted({c for w in words for c in w} | {"▁"})
    pieces = list(dict.fromkeys(chars + ["▁" + w for w in words]))
    counts: dict[str, int] = {}
    for w in ["▁" + w for w in words]:
        for n in range(2, len(w) + 1):
            for i in range(len(w) - n + 1):
                counts[w[i:i + n]] = counts.get(w[i:i + n], 0) + 1
    seen = set(pieces)
    for frag, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if frag not in seen:
            pieces.append(frag)
            seen.add(frag)
    # The word list yields ~2800 pieces; the rest are syllables (onset + nucleus + optional coda), both as word
    # starts and as continuations, like the pieces a learned English/French vocabulary holds.
    onsets = "b c ch d f g gr j l m n p pl qu r s st t tr v".split()
    nuclei = "a e i o u ou ai au eu é è an on in".split()
    codas = [""] + "l m n r s t x nt st rs".split()
    for coda in codas:
        for onset in onsets:
            for nucleus in nuclei:
                for piece in (onset + nucleus + coda, "▁" + onset + nucleus + coda):
                    if piece not in seen:
                        pieces.append(piece)
                        seen.add(piece)
    if len(pieces) < budget:
        raise ValueError(f"word list too small for a {vocab_size}-piece tokenizer")
    return pieces[:budget]


def write_tokenizer(path: Path, vocab_size: int = TOKENIZER_VOCAB) -> None:
    """A SentencePiece unigram model with the official special ids (0..3 = unk, bos, eos, pad) and byte fallback."""
    from sentencepiece import sentencepiece_model_pb2 as spm_pb

    model = spm_pb.ModelProto()
    kinds = spm_pb.ModelProto.SentencePiece
    for i, piece in enumerate(SPECIAL_PIECES):
        entry = model.pieces.add()
        entry.piece, entry.score = piece, 0.0
        entry.type = kinds.UNKNOWN if i == 0 else kinds.CONTROL
    for byte in range(256):
        entry = model.pieces.add()
        entry.piece, entry.score, entry.type = f"<0x{byte:02X}>", 0.0, kinds.BYTE
    for rank, piece in enumerate(tokenizer_pieces(vocab_size)):
        entry = model.pieces.add()
        # Longer pieces score higher, so the unigram search prefers whole words over fragments.
        entry.piece, entry.score, entry.type = piece, -10.0 + len(piece) - rank * 1e-4, kinds.NORMAL
    spec = model.trainer_spec
    spec.model_type, spec.vocab_size, spec.byte_fallback = spm_pb.TrainerSpec.UNIGRAM, vocab_size, True
    spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id = 0, 1, 2, 3
    spec.unk_piece, spec.bos_piece, spec.eos_piece, spec.pad_piece = SPECIAL_PIECES
    model.normalizer_spec.name = "identity"
    model.normalizer_spec.add_dummy_prefix = True
    model.normalizer_spec.remove_extra_whitespaces = True
    model.normalizer_spec.escape_whitespaces = True
    path.write_bytes(model.SerializeToString())


# "full" is the real 1B (kyutai/stt-1b-en_fr-candle), "2.6b" the real kyutai/stt-2.6b-en; "tiny" and "tiny-2.6b"
# are their small siblings for tests (config.py says what each keeps).
SIZES = {"tiny": TINY_LM, "full": FULL_LM, "tiny-2.6b": TINY_2_6B_LM, "2.6b": FULL_2_6B_LM}
# A checkpoint's Mimi: moshi's ("real") or the tests' ("tiny"), and the names config.json gives its files. A size
# gets the one its LM config names (the tiny sizes: tiny) unless asked otherwise.
MIMIS = {"real": MIMI, "tiny": TINY_MIMI}
MIMI_NAMES = {"real": REAL_MIMI_NAMES, "tiny": TINY_MIMI_NAMES}
DEFAULT_MIMI = {size: "tiny" if cfg.mimi_config_name else "real" for size, cfg in SIZES.items()}


def size_config(size: str, vad_heads: bool = True) -> LMConfig:
    """The LM config a size writes; vad_heads=False drops the semantic-VAD heads (the 2.6B family has none)."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}: choose one of {', '.join(SIZES)}")
    return SIZES[size] if vad_heads else replace(SIZES[size], extra_heads_num_heads=0)


def checkpoint_config(size: str, vad_heads: bool, mimi: str) -> tuple[LMConfig, MimiConfig]:
    """(LM config, Mimi config) of a synthetic checkpoint; mimi: a key of MIMIS."""
    cfg = size_config(size, vad_heads)
    if mimi not in MIMIS:
        raise ValueError(f"unknown Mimi {mimi!r}: choose one of {', '.join(MIMIS)}")
    return replace(cfg, **MIMI_NAMES[mimi]), MIMIS[mimi]


def write_checkpoint(out_dir: str | Path, size: str = "tiny", seed: int = 0, vad_heads: bool = True,
                     mimi: str | None = None) -> dict[str, Path]:
    """Write config.json, model.safetensors, the Mimi file (and its config, for a Mimi other than moshi's) and the
    tokenizer into out_dir (created if needed).

    vad_heads=False writes the plain `kyutai/stt-1b-en_fr` variant, without the 4 extra_heads tensors (the 2.6B
    sizes have none either way). mimi: "real" or "tiny" (MIMIS; default per size). The tokenizer has the config's
    text_card pieces."""
    mimi = DEFAULT_MIMI.get(size, "real") if mimi is None else mimi
    cfg, mimi_cfg = checkpoint_config(size, vad_heads, mimi)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"config": out / "config.json", "lm": out / LM_FILE, "mimi": out / cfg.mimi_name,
             "tokenizer": out / cfg.tokenizer_name}
    write_lm(paths["lm"], cfg, seed)
    write_mimi(paths["mimi"], mimi_cfg, seed)
    if cfg.mimi_config_name:
        paths["mimi_config"] = out / cfg.mimi_config_name
        paths["mimi_config"].write_text(json.dumps(mimi_cfg.to_moshi_json(), indent=2) + "\n")
    write_tokenizer(paths["tokenizer"], cfg.text_card)
    (out / MARKER_FILE).write_text(json.dumps({"size": size, "seed": seed, "vad_heads": cfg.has_vad_heads,
                                               "mimi": mimi,
                                               "note": "random weights: any transcript is meaningless"}) + "\n")
    tmp = paths["config"].with_suffix(".json.partial")
    tmp.write_text(json.dumps(cfg.to_official_json(), indent=2) + "\n")
    os.replace(tmp, paths["config"])
    return paths
