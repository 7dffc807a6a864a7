"""The one definition of a package's tensors: which official tensors make each package tensor (the name map) and
the precision each gets under each --quant choice (the policy). The converter writes packages by it; the package
reader checks packages against it (package.expected_tensors)."""
from __future__ import annotations

import fnmatch
import re

from kyutai_stt.weights import quant

# ---- 1. The name map: official name ({} = an index) -> package name --------------------------------------------
# Several official tensors mapping to one package name without {} are stacked along rows in checkpoint order.
LM_NAMES = {
    "text_emb.weight": "text_emb",                                              # [text_card + 1, D]: last = start
    "emb.{}.weight": "audio_emb.{}",                                            # [2049, D], row 2048 = start
    "transformer.layers.{}.norm1.alpha": "layers.{}.attn_norm",                 # [1, 1, D] -> [D]
    "transformer.layers.{}.self_attn.in_proj_weight": "layers.{}.attn_qkv",     # [3D, D]: q, k, v rows
    "transformer.layers.{}.self_attn.out_proj.weight": "layers.{}.attn_out",    # [D, D]
    "transformer.layers.{}.norm2.alpha": "layers.{}.ffn_norm",                  # [1, 1, D] -> [D]
    "transformer.layers.{}.gating.linear_in.weight": "layers.{}.ffn_in",        # [2F, D]: gate rows, then up rows
    "transformer.layers.{}.gating.linear_out.weight": "layers.{}.ffn_out",      # [D, F]
    "out_norm.alpha": "out_norm",                                               # [1, 1, D] -> [D]
    "text_linear.weight": "text_head",                                          # [text_card, D] (1B: 8000)
    "extra_heads.{}.weight": "vad_heads",                                       # 1B: 4 x [6, D] -> [24, D]
}
_SEANET = "encoder.model.{}.conv.conv.{}"
_BLOCK = "encoder.model.{}.block.{}.conv.conv.{}"
_MIMI_LAYER = "encoder_transformer.transformer.layers.{}."
_RVQ = "quantizer.rvq_{}.vq.layers.{{}}._codebook.embedding_sum"
# SEANet convs become [C_out, k * C_in] matrices (see _conv_matrix); stage s runs at stride 4, 5, 6, 8.
MIMI_NAMES = {
    _SEANET.format(0, "weight"): "mimi.conv_in", _SEANET.format(0, "bias"): "mimi.conv_in.bias",
    **{name: package
       for s, index in enumerate((1, 4, 7, 10))
       for name, package in (
           (_BLOCK.format(index, 1, "weight"), f"mimi.blocks.{s}.res_conv1"),        # C -> C/2, k 3
           (_BLOCK.format(index, 1, "bias"), f"mimi.blocks.{s}.res_conv1.bias"),
           (_BLOCK.format(index, 3, "weight"), f"mimi.blocks.{s}.res_conv2"),        # C/2 -> C, k 1
           (_BLOCK.format(index, 3, "bias"), f"mimi.blocks.{s}.res_conv2.bias"),
           (_SEANET.format(index + 2, "weight"), f"mimi.blocks.{s}.down"),           # C -> 2C, k 2r, stride r
           (_SEANET.format(index + 2, "bias"), f"mimi.blocks.{s}.down.bias"))},
    _SEANET.format(14, "weight"): "mimi.conv_out", _SEANET.format(14, "bias"): "mimi.conv_out.bias",
    _MIMI_LAYER + "norm1.weight": "mimi.layers.{}.attn_norm",                  # LayerNorm [512]
    _MIMI_LAYER + "norm1.bias": "mimi.layers.{}.attn_norm.bias",
    _MIMI_LAYER + "self_attn.in_proj_weight": "mimi.layers.{}.attn_qkv",       # [1536, 512]
    _MIMI_LAYER + "self_attn.out_proj.weight": "mimi.layers.{}.attn_out",      # [512, 512]
    _MIMI_LAYER + "layer_scale_1.scale": "mimi.layers.{}.attn_scale",          # [512]
    _MIMI_LAYER + "norm2.weight": "mimi.layers.{}.ffn_norm",
    _MIMI_LAYER + "norm2.bias": "mimi.layers.{}.ffn_norm.bias",
    _MIMI_LAYER + "linear1.weight": "mimi.layers.{}.ffn_in",                   # [2048, 512]
    _MIMI_LAYER + "linear2.weight": "mimi.layers.{}.ffn_out",                  # [512, 2048]
    _MIMI_LAYER + "layer_scale_2.scale": "mimi.layers.{}.ffn_scale",
    "downsample.conv.conv.conv.weight": "mimi.downsample",                     # [512, 4 * 512], stride 2
    "quantizer.rvq_first.input_proj.weight": "mimi.rvq_in",                    # rows 0..255: semantic
    "quantizer.rvq_rest.input_proj.weight": "mimi.rvq_in",                     # rows 256..511: acoustic
    _RVQ.format("first"): "mimi.codebooks",                                    # level 0: rows 0..2047
    _RVQ.format("rest"): "mimi.codebooks",                                     # level 1 + i: rows 2048 (1 + i)..
}
# Derived: per codebook entry |c|^2 of the codebook as stored (after quantisation), for argmin |x|^2 - 2 x.c + |c|^2.
SQNORMS = "mimi.codebook_sqnorms"                                              # [32, 2048] f32
# Official Mimi tensors the package leaves out: the decode path, and codebook bookkeeping (usage is folded in).
MIMI_DROPPED = re.compile(r"^(decoder\.|decoder_transformer\.|upsample\.|quantizer\.rvq_\w+\.output_proj\.)"
                          r"|\._codebook\.(_initialized|cluster_usage)$")

# ---- 2. The precision policy: first matching pattern wins; columns = --quant q4, q4-small, q8, f16 ------------
# Sizes and measured errors: docs/weights.md. The Mimi encoder is kept in f16 by q4 (the default) and q8: every code
# it gets wrong is a wrong input token of the LM (q4-small: 23.6 % of codes equal the f32 encoder's, f16: 98.6 %,
# docs/mimi.md). f16 is the exact package: Mimi in f32 as in the checkpoint, the LM's bf16 values in f16 (exact
# but for the few below f16's normal range, which `--report` counts). A q4/q8 choice for a matrix whose K is not a
# multiple of 64 falls back to f32 (mimi.blocks.0.res_conv2 [64, 32]). f32 tensors are all small (vectors, the VAD
# heads, mimi.conv_in: <= 0.27 MB each).
PRECISION = (
    (("layers.*.attn_norm", "layers.*.ffn_norm", "out_norm"), ("f32", "f32", "f32", "f32")),    # RMSNorm scales
    (("vad_heads",), ("f32", "f32", "f32", "f32")),              # 24 rows (0.2 MB): end-of-turn probabilities
    (("text_emb", "audio_emb.*", "layers.*", "text_head"), ("q4", "q4", "q8", "f16")),
    (("mimi.conv_in", "mimi.*.bias", "mimi.layers.*_norm", "mimi.layers.*_scale", SQNORMS),
     ("f32", "f32", "f32", "f32")),
    (("mimi.codebooks",), ("f16", "q8", "f16", "f32")),          # argmin flips on small errors
    (("mimi.blocks.0.*", "mimi.blocks.1.*", "mimi.downsample", "mimi.rvq_in"), ("f16", "q8", "f16", "f32")),
    (("mimi.*",), ("f16", "q4", "f16", "f32")),                  # transformer, SEANet stages 2-3, conv_out
)
QUANT_CHOICES = ("q4", "q4-small", "q8", "f16")
# What q4-small costs, printed when it is chosen (`python benchmarks/mimi.py --precision`, synthetic seed-0 Mimi,
# fixture audio, 150 frames; `--report` measures it on the checkpoint being converted).
Q4_SMALL_NOTE = ("q4-small keeps the Mimi encoder in q4/q8 (41.1 MB instead of 112.1 MB in f16): measured on the "
                 "synthetic seed-0 Mimi over the fixture audio, 23.6 % of its codes equal the f32 encoder's (72.7 % "
                 "of level 0), against 98.6 % (100 %) for the default q4 policy's f16 encoder; every differing code "
                 "is a different input token for the LM")


def precision(name: str, shape: tuple[int, ...], choice: str) -> str:
    if choice not in QUANT_CHOICES:
        raise quant.QuantError(f"unknown quant type {choice!r}: choose one of {', '.join(QUANT_CHOICES)}")
    for patterns, quants in PRECISION:
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            chosen = quants[QUANT_CHOICES.index(choice)]
            if chosen in ("q4", "q8") and (len(shape) != 2 or shape[1] % (2 * quant.BLOCK)):
                return "f32"
            return chosen
    raise AssertionError(f"no precision rule for package tensor '{name}'")


def _compile(names: dict[str, str]) -> list[tuple[re.Pattern, str]]:
    return [(re.compile("^" + re.escape(k).replace(r"\{\}", r"(\d+)") + "$"), v) for k, v in names.items()]


def package_sources(official: list[str], names: dict[str, str], dropped=None) -> dict[str, list[str]]:
    """Package name -> the official names it is made of, in checkpoint order. Every official name is mapped or
    dropped: a tensor the map does not know is a bug in the map, not silently lost."""
    rules, out = _compile(names), {}
    for name in official:
        if dropped is not None and dropped.search(name):
            continue
        for pattern, target in rules:
            m = pattern.match(name)
            if m:
                out.setdefault(target.format(*m.groups()) if "{}" in target else target, []).append(name)
                break
        else:
            raise AssertionError(f"official tensor '{name}' is neither mapped nor dropped")
    return out
