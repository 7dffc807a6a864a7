"""The official checkpoint's layout: tensor names (legacy attention names, as on disk), shapes and dtypes.

One table per file, derived from the configs; the synthetic writer, the converter and the tests all use it.
"""
from __future__ import annotations

from kyutai_stt.config import LMConfig, MimiConfig

Shape = tuple[int, ...]
LM_DTYPE = "BF16"
MIMI_DTYPE = "F32"


def lm_layout(cfg: LMConfig) -> dict[str, Shape]:
    """model.safetensors: name -> shape (all bf16). 135 tensors for stt-1b-en_fr-candle, 131 without VAD heads."""
    d, f = cfg.dim, cfg.ffn_dim
    out: dict[str, Shape] = {"text_emb.weight": (cfg.text_card + 1, d)}
    for k in range(cfg.n_q):
        out[f"emb.{k}.weight"] = (cfg.card + 1, d)
    for i in range(cfg.num_layers):
        p = f"transformer.layers.{i}."
        out[p + "self_attn.in_proj_weight"] = (3 * d, d)        # rows: q, k, v; head-major inside each
        out[p + "self_attn.out_proj.weight"] = (d, d)
        out[p + "gating.linear_in.weight"] = (2 * f, d)         # rows: gate, then up
        out[p + "gating.linear_out.weight"] = (d, f)
        out[p + "norm1.alpha"] = (1, 1, d)
        out[p + "norm2.alpha"] = (1, 1, d)
    out["out_norm.alpha"] = (1, 1, d)
    out["text_linear.weight"] = (cfg.text_card, d)
    for h in range(cfg.extra_heads_num_heads):
        out[f"extra_heads.{h}.weight"] = (cfg.extra_heads_dim, d)
    return out


def seanet_encoder_layout(cfg: MimiConfig, prefix: str = "encoder.model.") -> dict[str, Shape]:
    """SEANet encoder convs, in moshi's module indices: conv, then per ratio (reversed) a residual block, an ELU
    (no weights) and a strided conv doubling the channels; then ELU and the final conv to the latent size."""
    out: dict[str, Shape] = {}

    def conv(index: str, c_out: int, c_in: int, k: int) -> None:
        out[f"{prefix}{index}.conv.conv.weight"] = (c_out, c_in, k)
        out[f"{prefix}{index}.conv.conv.bias"] = (c_out,)

    channels, index = cfg.n_filters, 0
    conv("0", channels, cfg.channels, cfg.kernel_size)
    index = 1
    for ratio in reversed(cfg.ratios):
        hidden = channels // cfg.compress
        conv(f"{index}.block.1", hidden, channels, cfg.residual_kernel_size)
        conv(f"{index}.block.3", channels, hidden, 1)
        conv(f"{index + 2}", 2 * channels, channels, 2 * ratio)
        channels, index = 2 * channels, index + 3
    conv(f"{index + 1}", cfg.dimension, channels, cfg.last_kernel_size)
    return out


def seanet_decoder_layout(cfg: MimiConfig, prefix: str = "decoder.model.") -> dict[str, Shape]:
    """SEANet decoder (dropped by the converter, but the official loader reads the whole Mimi file strictly)."""
    out: dict[str, Shape] = {}
    channels = cfg.n_filters * 2 ** len(cfg.ratios)
    out[f"{prefix}0.conv.conv.weight"] = (channels, cfg.dimension, cfg.kernel_size)
    out[f"{prefix}0.conv.conv.bias"] = (channels,)
    index = 1
    for ratio in cfg.ratios:
        out[f"{prefix}{index + 1}.convtr.convtr.weight"] = (channels, channels // 2, 2 * ratio)
        out[f"{prefix}{index + 1}.convtr.convtr.bias"] = (channels // 2,)
        channels //= 2
        hidden = channels // cfg.compress
        out[f"{prefix}{index + 2}.block.1.conv.conv.weight"] = (hidden, channels, cfg.residual_kernel_size)
        out[f"{prefix}{index + 2}.block.1.conv.conv.bias"] = (hidden,)
        out[f"{prefix}{index + 2}.block.3.conv.conv.weight"] = (channels, hidden, 1)
        out[f"{prefix}{index + 2}.block.3.conv.conv.bias"] = (channels,)
        index += 3
    out[f"{prefix}{index + 1}.conv.conv.weight"] = (cfg.channels, channels, cfg.last_kernel_size)
    out[f"{prefix}{index + 1}.conv.conv.bias"] = (cfg.channels,)
    return out


def mimi_transformer_layout(cfg: MimiConfig, prefix: str) -> dict[str, Shape]:
    d = cfg.dimension
    out: dict[str, Shape] = {}
    for i in range(cfg.num_layers):
        p = f"{prefix}.transformer.layers.{i}."
        out[p + "self_attn.in_proj_weight"] = (3 * d, d)
        out[p + "self_attn.out_proj.weight"] = (d, d)
        for norm in ("norm1", "norm2"):
            out[p + norm + ".weight"] = (d,)
            out[p + norm + ".bias"] = (d,)
        out[p + "linear1.weight"] = (cfg.dim_feedforward, d)
        out[p + "linear2.weight"] = (d, cfg.dim_feedforward)
        out[p + "layer_scale_1.scale"] = (d,)
        out[p + "layer_scale_2.scale"] = (d,)
    return out


def quantizer_layout(cfg: MimiConfig) -> dict[str, Shape]:
    out: dict[str, Shape] = {}
    for part, books in (("rvq_first", 1), ("rvq_rest", cfg.n_q - 1)):
        p = f"quantizer.{part}."
        out[p + "input_proj.weight"] = (cfg.codebook_dim, cfg.dimension, 1)
        out[p + "output_proj.weight"] = (cfg.dimension, cfg.codebook_dim, 1)
        for b in range(books):
            q = f"{p}vq.layers.{b}._codebook."
            out[q + "_initialized"] = (1,)
            out[q + "cluster_usage"] = (cfg.bins,)
            out[q + "embedding_sum"] = (cfg.bins, cfg.codebook_dim)
    return out


def mimi_encoder_layout(cfg: MimiConfig) -> dict[str, Shape]:
    """The tensors of the encode path (what our package keeps)."""
    d = cfg.dimension
    out = seanet_encoder_layout(cfg)
    out.update(mimi_transformer_layout(cfg, "encoder_transformer"))
    out["downsample.conv.conv.conv.weight"] = (d, d, 2 * cfg.downsample_stride)
    out.update({k: v for k, v in quantizer_layout(cfg).items() if "output_proj" not in k})
    return out


def mimi_layout(cfg: MimiConfig) -> dict[str, Shape]:
    """The whole official Mimi file (fp32, 318 tensors): encoder, decoder and both quantizer projections."""
    d = cfg.dimension
    out = mimi_encoder_layout(cfg)
    out.update(seanet_decoder_layout(cfg))
    out.update(mimi_transformer_layout(cfg, "decoder_transformer"))
    out.update({k: v for k, v in quantizer_layout(cfg).items() if "output_proj" in k})
    out["upsample.convtr.convtr.convtr.weight"] = (d, 1, 2 * cfg.downsample_stride)   # depthwise
    return out
