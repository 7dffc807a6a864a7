"""Model configuration: the STT language model (read from the official config.json) and the Mimi encoder.

Defaults equal kyutai/stt-1b-en_fr. A malformed or incomplete config raises ConfigError naming the key.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kyutai_stt.errors import UserError

SAMPLE_RATE = 24_000        # Mimi's input rate, Hz
FRAME_SIZE = 1920           # samples per 80 ms frame
FRAME_RATE = 12.5           # LM steps per second
LM_FILE = "model.safetensors"
MAX_SILENCE_PREFIX_S = 30.0  # a longer silence prefix is no help, and it is held in memory (30 s = 2.9 MB)


class ConfigError(UserError, ValueError):
    """A config.json value is missing, of the wrong type, or unsupported. The message names the key."""

    def __init__(self, key: str, problem: str, source: str = "config.json"):
        self.key = key
        super().__init__(f"{source}: key '{key}': {problem}")


@dataclass(frozen=True)
class LMConfig:
    """The STT language model: a decoder-only transformer over 1 text + n_q audio streams."""
    dim: int = 2048
    num_heads: int = 16
    num_layers: int = 16
    hidden_scale: float = 4.125
    context: int = 750                      # KV ring capacity: the current step + 749 previous
    max_period: float = 100_000.0           # RoPE theta
    card: int = 2048                        # audio codebook size; row `card` of each emb = start token
    n_q: int = 32                           # audio streams fed to the LM
    dep_q: int = 0                          # depformer streams; STT has none
    text_card: int = 8000                   # text vocabulary; row `text_card` of text_emb = start token
    existing_text_padding_id: int = 3
    delays: tuple[int, ...] = (0,) * 33
    extra_heads_num_heads: int = 4          # semantic-VAD heads (0 in the plain, non-candle repo)
    extra_heads_dim: int = 6
    audio_delay_seconds: float = 0.5
    audio_silence_prefix_seconds: float = 0.0
    mimi_name: str = "mimi-pytorch-e351c8d8@125.safetensors"
    tokenizer_name: str = "tokenizer_en_fr_audio_8000.model"
    mimi_config_name: str | None = None     # a Mimi config file in moshi's format (None: moshi's default Mimi)
    model_type: str = "stt"
    # Kept verbatim so that the config can be written back / handed to the official loader.
    lm_gen_config: dict = field(default_factory=lambda: {"temp": 0.0, "temp_text": 0.0, "top_k": 250,
                                                         "top_k_text": 50})
    model_id: dict = field(default_factory=lambda: {"sig": "synthetic", "epoch": 0})

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def ffn_dim(self) -> int:
        """SwiGLU hidden size, as moshi derives it: 2/3 of int(hidden_scale * dim) (5632 for the 1B)."""
        dim_feedforward = int(self.hidden_scale * self.dim)
        if dim_feedforward == 4 * self.dim:
            return (21 * self.dim) // 8
        return (2 * dim_feedforward) // 3

    @property
    def has_vad_heads(self) -> bool:
        return self.extra_heads_num_heads > 0

    @property
    def delay_steps(self) -> int:
        """How many LM steps the text lags the audio: audio_delay_seconds in whole frames, to the nearest (half
        up). 6 for stt-1b-en_fr (0.5 s), as the official server's asr_delay_in_tokens; 31 for stt-2.6b-en (2.5 s),
        where the official server says 32 and the official PyTorch script offsets its timestamps by 31.25 frames."""
        return int(self.audio_delay_seconds * FRAME_RATE + 0.5)

    @property
    def num_params(self) -> int:
        per_layer = 3 * self.dim * self.dim + self.dim * self.dim + 3 * self.dim * self.ffn_dim + 2 * self.dim
        return (self.num_layers * per_layer + self.n_q * (self.card + 1) * self.dim
                + (self.text_card + 1) * self.dim + self.text_card * self.dim + self.dim
                + self.extra_heads_num_heads * self.extra_heads_dim * self.dim)

    def to_official_json(self) -> dict:
        """The config.json of the official repo (keys of kyutai/stt-1b-en_fr-candle)."""
        out = {
            "card": self.card, "n_q": self.n_q, "dep_q": self.dep_q, "delays": list(self.delays),
            "dim": self.dim, "text_card": self.text_card,
            "existing_text_padding_id": self.existing_text_padding_id, "num_heads": self.num_heads,
            "num_layers": self.num_layers, "hidden_scale": self.hidden_scale, "causal": True,
            "layer_scale": None, "context": self.context, "max_period": self.max_period, "gating": "silu",
            "norm": "rms_norm_f32", "positional_embedding": "rope",
            "depformer_dim": 1024, "depformer_num_heads": 16, "depformer_num_layers": 6,
            "depformer_dim_feedforward": None, "depformer_multi_linear": True, "depformer_pos_emb": "none",
            "depformer_weights_per_step": True, "conditioners": {}, "cross_attention": False,
            "model_id": dict(self.model_id), "lm_gen_config": dict(self.lm_gen_config),
            "stt_config": {"audio_delay_seconds": self.audio_delay_seconds,
                           "audio_silence_prefix_seconds": self.audio_silence_prefix_seconds},
            "model_type": self.model_type, "mimi_name": self.mimi_name, "tokenizer_name": self.tokenizer_name,
        }
        if self.mimi_config_name is not None:
            out["mimi_config_name"] = self.mimi_config_name
        if self.has_vad_heads:
            out["extra_heads_num_heads"] = self.extra_heads_num_heads
            out["extra_heads_dim"] = self.extra_heads_dim
        return out

    @classmethod
    def from_official_json(cls, raw: Any, source: str = "config.json") -> LMConfig:
        return _parse_lm(raw, source)

    @classmethod
    def load(cls, path: str | Path) -> LMConfig:
        return _parse_lm(_read_json(Path(path)), str(path))


# Keys the official config must carry, with their expected type; values our engine can run are checked below.
_REQUIRED = {
    "card": int, "n_q": int, "dep_q": int, "delays": list, "dim": int, "text_card": int,
    "existing_text_padding_id": int, "num_heads": int, "num_layers": int, "hidden_scale": (int, float),
    "causal": bool, "context": int, "max_period": (int, float), "gating": str, "norm": str,
    "positional_embedding": str, "mimi_name": str, "tokenizer_name": str,
}
# Upper bounds far above any real model (the 1B: dim 2048, 16 layers): a config beyond them is damaged, and would
# make the layout tables (checkpoint.py) or the buffers enormous before any tensor is compared.
_LIMITS = {"card": 65536, "n_q": 64, "dim": 16384, "text_card": 2**20, "num_heads": 256, "num_layers": 256,
           "context": 65536}
# Architecture choices this engine implements; anything else is another model.
_SUPPORTED = {"gating": "silu", "norm": "rms_norm_f32", "positional_embedding": "rope", "causal": True,
              "dep_q": 0}


def _parse_lm(raw: Any, source: str) -> LMConfig:
    if not isinstance(raw, dict):
        raise ConfigError("<root>", "expected a JSON object", source)
    for key, typ in _REQUIRED.items():
        if key not in raw:
            raise ConfigError(key, "missing", source)
        value = raw[key]
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise ConfigError(key, f"expected {_type_name(typ)}, got {value!r}", source)
    for key, expected in _SUPPORTED.items():
        if raw[key] != expected:
            raise ConfigError(key, f"unsupported value {raw[key]!r} (this engine runs {expected!r})", source)
    if "mimi_config_name" in raw and not isinstance(raw["mimi_config_name"], str):
        raise ConfigError("mimi_config_name", f"expected a string, got {raw['mimi_config_name']!r}", source)
    for key in ("mimi_name", "tokenizer_name", "mimi_config_name"):   # joined to the checkpoint's directory
        if key not in raw:
            continue
        name = raw[key]
        if not name or len(name) > 255 or name in (".", "..") or name.startswith(".") \
                or any(c in name for c in "/\\\0"):
            raise ConfigError(key, f"{name[:80]!r} is not a plain file name in the checkpoint directory", source)
    if raw.get("layer_scale") is not None:
        raise ConfigError("layer_scale", "unsupported (the STT LM has none)", source)
    if raw.get("cross_attention"):
        raise ConfigError("cross_attention", "unsupported (the STT LM has none)", source)
    if raw.get("model_type", "stt") != "stt":
        raise ConfigError("model_type", f"expected 'stt', got {raw['model_type']!r}", source)
    for key in ("card", "n_q", "dim", "text_card", "num_heads", "num_layers", "context"):
        if raw[key] <= 0:
            raise ConfigError(key, f"must be positive, got {raw[key]}", source)
        if raw[key] > _LIMITS[key]:
            raise ConfigError(key, f"{raw[key]} is beyond any model this engine runs (at most {_LIMITS[key]})", source)
    for key, high in (("hidden_scale", 64.0), ("max_period", 1e9)):
        if not 0 < raw[key] <= high:         # also refuses NaN; 1e308 would overflow the FFN size
            raise ConfigError(key, f"must be a number in (0, {high:g}], got {raw[key]}", source)
    if raw["dim"] % raw["num_heads"] or (raw["dim"] // raw["num_heads"]) % 2:
        raise ConfigError("num_heads", f"dim {raw['dim']} must split into heads of even size", source)
    delays = raw["delays"]
    if len(delays) != raw["n_q"] + 1 or any(d != 0 for d in delays):
        raise ConfigError("delays", f"expected {raw['n_q'] + 1} zeros (STT has no per-stream delay)", source)
    if not 0 <= raw["existing_text_padding_id"] < raw["text_card"]:
        raise ConfigError("existing_text_padding_id", "outside the text vocabulary", source)
    heads = raw.get("extra_heads_num_heads", 0)
    heads_dim = raw.get("extra_heads_dim", 6)
    if not isinstance(heads, int) or isinstance(heads, bool) or not 0 <= heads <= 64:
        raise ConfigError("extra_heads_num_heads", f"expected a non-negative integer, got {heads!r}", source)
    if not isinstance(heads_dim, int) or isinstance(heads_dim, bool) or not 1 <= heads_dim <= 64:
        raise ConfigError("extra_heads_dim", f"expected a positive integer, got {heads_dim!r}", source)
    stt = raw.get("stt_config", {})
    if not isinstance(stt, dict):
        raise ConfigError("stt_config", "expected an object", source)
    for key in ("audio_delay_seconds", "audio_silence_prefix_seconds"):
        if key in stt and (not isinstance(stt[key], (int, float)) or isinstance(stt[key], bool)
                           or not 0 <= stt[key] <= 60):
            raise ConfigError(f"stt_config.{key}", f"expected a number of seconds in [0, 60], got {stt[key]!r}",
                              source)
    for key in ("lm_gen_config", "model_id"):
        if not isinstance(raw.get(key, {}), dict):
            raise ConfigError(key, "expected an object", source)
    defaults = LMConfig()
    return LMConfig(
        dim=raw["dim"], num_heads=raw["num_heads"], num_layers=raw["num_layers"],
        hidden_scale=float(raw["hidden_scale"]), context=raw["context"], max_period=float(raw["max_period"]),
        card=raw["card"], n_q=raw["n_q"], dep_q=raw["dep_q"], text_card=raw["text_card"],
        existing_text_padding_id=raw["existing_text_padding_id"], delays=tuple(delays),
        extra_heads_num_heads=heads, extra_heads_dim=heads_dim,
        audio_delay_seconds=float(stt.get("audio_delay_seconds", defaults.audio_delay_seconds)),
        audio_silence_prefix_seconds=float(stt.get("audio_silence_prefix_seconds", 0.0)),
        mimi_name=raw["mimi_name"], tokenizer_name=raw["tokenizer_name"],
        mimi_config_name=raw.get("mimi_config_name"), model_type="stt",
        lm_gen_config=dict(raw.get("lm_gen_config", {})), model_id=dict(raw.get("model_id", {})),
    )


def _type_name(typ) -> str:
    names = {int: "an integer", float: "a number", bool: "true/false", str: "a string", list: "a list"}
    if isinstance(typ, tuple):
        return " or ".join(names[t] for t in typ)
    return names[typ]


@dataclass(frozen=True)
class MimiConfig:
    """The Mimi encode path (moshi's defaults for mimi-pytorch-e351c8d8@125; the official repo ships no file)."""
    sample_rate: int = SAMPLE_RATE
    frame_rate: float = FRAME_RATE
    channels: int = 1
    n_filters: int = 64
    ratios: tuple[int, ...] = (8, 6, 5, 4)    # decoder order; the encoder applies them reversed (4, 5, 6, 8)
    kernel_size: int = 7
    residual_kernel_size: int = 3
    last_kernel_size: int = 3
    compress: int = 2                          # residual block bottleneck: C -> C / compress -> C
    dimension: int = 512                       # latent size
    num_layers: int = 8                        # encoder transformer at 25 Hz
    num_heads: int = 8
    dim_feedforward: int = 2048
    context: int = 250
    max_period: float = 10_000.0
    layer_norm_eps: float = 1e-5
    n_q: int = 32                              # codebooks used (1 semantic + 31 acoustic)
    bins: int = 2048
    codebook_dim: int = 256

    @property
    def hop_length(self) -> int:
        """Samples per encoder (25 Hz) step: the product of the ratios (960)."""
        out = 1
        for r in self.ratios:
            out *= r
        return out

    @property
    def frame_size(self) -> int:
        return int(self.sample_rate / self.frame_rate)

    @property
    def downsample_stride(self) -> int:
        return int(self.sample_rate / self.hop_length / self.frame_rate)

    def to_moshi_json(self) -> dict:
        """The config in moshi's format (loaders._mimi_config): the file a checkpoint's mimi_config_name names."""
        d = self.dimension
        return {"sample_rate": self.sample_rate, "channels": self.channels, "frame_rate": self.frame_rate,
                "seanet": {**_SEANET_FIXED, "channels": self.channels, "dimension": d, "n_filters": self.n_filters,
                           "compress": self.compress, "kernel_size": self.kernel_size,
                           "residual_kernel_size": self.residual_kernel_size,
                           "last_kernel_size": self.last_kernel_size, "ratios": list(self.ratios)},
                "quantizer": {"dimension": self.codebook_dim, "n_q": self.n_q, "bins": self.bins,
                              "input_dimension": d, "output_dimension": d},
                "transformer": {**_TRANSFORMER_FIXED, "d_model": d, "num_heads": self.num_heads,
                                "num_layers": self.num_layers, "context": self.context,
                                "max_period": self.max_period, "dim_feedforward": self.dim_feedforward,
                                "input_dimension": d, "output_dimensions": [d]}}

    @classmethod
    def load(cls, path: str | Path) -> MimiConfig:
        """A Mimi config file in moshi's format, checked: ConfigError names the key of anything this engine cannot
        run or that is beyond any real model."""
        return _parse_mimi(_read_json(Path(path)), str(path))

    @classmethod
    def from_manifest(cls, raw: Any, source: str) -> MimiConfig:
        """The config as a package manifest holds it (this dataclass's fields), checked as load() checks."""
        if not isinstance(raw, dict) or set(raw) != {f.name for f in dataclasses.fields(cls)}:
            raise ConfigError("<root>", f"expected an object with exactly the keys of {cls.__name__}", source)
        if not isinstance(raw["ratios"], list):
            raise ConfigError("ratios", "expected a list", source)
        return _checked_mimi(cls(**{**raw, "ratios": tuple(raw["ratios"])}), source)


# What moshi's Mimi may vary and this engine does not: these values, as in moshi's defaults (loaders._mimi_config).
_SEANET_FIXED = {"causal": True, "n_residual_layers": 1, "activation": "ELU", "dilation_base": 2,
                 "disable_norm_outer_blocks": 0, "norm": "none", "pad_mode": "constant", "true_skip": True}
_TRANSFORMER_FIXED = {"causal": True, "layer_scale": 0.01, "conv_layout": True, "gating": "none",
                      "norm": "layer_norm", "positional_embedding": "rope"}
# Integer fields: (low, high). Bounds far beyond the real Mimi (dimension 512, 8 layers) refuse a damaged file
# before it sizes a buffer; the multiples are what the kernels need (K % 32 per conv, K % 64 per matrix).
_MIMI_INTS = {"sample_rate": (8000, 96000), "channels": (1, 1), "n_filters": (32, 1024), "kernel_size": (1, 16),
              "residual_kernel_size": (1, 16), "last_kernel_size": (1, 16), "compress": (1, 8),
              "dimension": (64, 4096), "num_layers": (1, 64), "num_heads": (1, 64), "dim_feedforward": (64, 16384),
              "context": (1, 4096), "n_q": (1, 64), "bins": (2, 65536), "codebook_dim": (64, 4096)}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError("<file>", "not found", str(path)) from None
    except (ValueError, RecursionError) as e:     # JSON, UTF-8, a 5000-digit number, nesting
        raise ConfigError("<file>", f"not valid JSON ({str(e)[:200] or type(e).__name__})", str(path)) from None
    except OSError as e:
        raise ConfigError("<file>", f"cannot read it ({e.strerror or e})", str(path)) from None


def _parse_mimi(raw: Any, source: str) -> MimiConfig:
    parts = {}
    for part in ("seanet", "quantizer", "transformer"):
        if not isinstance(raw, dict) or not isinstance(raw.get(part), dict):
            raise ConfigError(part, "missing or not an object", source)
        parts[part] = raw[part]
    seanet, quantizer, transformer = parts["seanet"], parts["quantizer"], parts["transformer"]
    for part, fixed in (("seanet", _SEANET_FIXED), ("transformer", _TRANSFORMER_FIXED)):
        for key, expected in fixed.items():
            if parts[part].get(key) != expected:
                raise ConfigError(f"{part}.{key}", f"unsupported value {parts[part].get(key)!r} (this engine runs "
                                  f"{expected!r})", source)
    d = seanet.get("dimension")
    for key, value in (("quantizer.input_dimension", quantizer.get("input_dimension")),
                       ("quantizer.output_dimension", quantizer.get("output_dimension")),
                       ("transformer.d_model", transformer.get("d_model")),
                       ("transformer.input_dimension", transformer.get("input_dimension")),
                       ("transformer.output_dimensions", (transformer.get("output_dimensions") or [None])[0])):
        if value != d:
            raise ConfigError(key, f"must equal seanet.dimension ({d!r}), got {value!r}", source)
    if not isinstance(seanet.get("ratios"), list):
        raise ConfigError("seanet.ratios", "expected a list", source)
    cfg = dict(sample_rate=raw.get("sample_rate"), frame_rate=raw.get("frame_rate"), channels=raw.get("channels"),
               n_filters=seanet.get("n_filters"), ratios=tuple(seanet["ratios"]),
               kernel_size=seanet.get("kernel_size"), residual_kernel_size=seanet.get("residual_kernel_size"),
               last_kernel_size=seanet.get("last_kernel_size"), compress=seanet.get("compress"), dimension=d,
               num_layers=transformer.get("num_layers"), num_heads=transformer.get("num_heads"),
               dim_feedforward=transformer.get("dim_feedforward"), context=transformer.get("context"),
               max_period=transformer.get("max_period"), n_q=quantizer.get("n_q"), bins=quantizer.get("bins"),
               codebook_dim=quantizer.get("dimension"))
    return _checked_mimi(MimiConfig(**cfg), source)


def _checked_mimi(cfg: MimiConfig, source: str) -> MimiConfig:
    """cfg if this engine can run it; else ConfigError naming the field."""
    def bad(key, problem):
        return ConfigError(key, problem, source)
    for key, (low, high) in _MIMI_INTS.items():
        value = getattr(cfg, key)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise bad(key, f"expected an integer in [{low}, {high}], got {value!r}")
    for key in ("frame_rate", "max_period"):
        value = getattr(cfg, key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= 1e9:
            raise bad(key, f"expected a positive number, got {value!r}")
    if cfg.layer_norm_eps != MimiConfig.layer_norm_eps:          # moshi's LayerNorm default: not configurable
        raise bad("layer_norm_eps", f"moshi's Mimi uses {MimiConfig.layer_norm_eps}, got {cfg.layer_norm_eps!r}")
    if not 1 <= len(cfg.ratios) <= 8 or any(not isinstance(r, int) or isinstance(r, bool) or not 1 <= r <= 16
                                           for r in cfg.ratios):
        raise bad("ratios", f"expected 1 to 8 integers in [1, 16], got {list(cfg.ratios)[:10]}")
    if cfg.frame_size != cfg.sample_rate / cfg.frame_rate or cfg.frame_size % cfg.hop_length \
            or cfg.frame_size != FRAME_SIZE:
        raise bad("frame_rate", f"a frame must be {FRAME_SIZE} samples, a whole number of hops "
                  f"({cfg.sample_rate} Hz / {cfg.frame_rate} Hz, hop {cfg.hop_length})")
    if cfg.n_filters % 32 or (cfg.n_filters // cfg.compress) % 32 or cfg.n_filters % cfg.compress:
        raise bad("n_filters", f"{cfg.n_filters} (compress {cfg.compress}) must keep every conv's channels a "
                  "multiple of 32")
    for key in ("dimension", "dim_feedforward", "codebook_dim"):
        if getattr(cfg, key) % 64:
            raise bad(key, f"must be a multiple of 64, got {getattr(cfg, key)}")
    if cfg.dimension % cfg.num_heads or (cfg.dimension // cfg.num_heads) % 2:
        raise bad("num_heads", f"dimension {cfg.dimension} must split into heads of even size")
    return cfg


def replace(cfg, **changes):
    """dataclasses.replace, re-exported so callers need not import dataclasses."""
    return dataclasses.replace(cfg, **changes)


FULL_LM = LMConfig()
# The tiny sizes' Mimi (TINY_MIMI below) is a file of its own with its config beside it, named in config.json as
# moshi's loader reads a Mimi other than its default (CheckpointInfo: mimi_name, mimi_config_name).
TINY_MIMI_NAMES = {"mimi_name": "mimi-tiny.safetensors", "mimi_config_name": "mimi-tiny.json"}
REAL_MIMI_NAMES = {"mimi_name": FULL_LM.mimi_name, "mimi_config_name": None}
# Same code paths, small dimensions; 32 codebooks kept; a context of 8 frames so tests cross the KV-ring wrap;
# hidden_scale 4.5 makes the FFN width 384, a multiple of 64, so every matrix takes the q4 path as at full size.
TINY_LM = LMConfig(dim=128, num_heads=4, num_layers=2, hidden_scale=4.5, context=8,
                   model_id={"sig": "synthetic-tiny", "epoch": 0}, **TINY_MIMI_NAMES)
# kyutai/stt-2.6b-en (reference/kyutai-stt-1b.md §2): English only, 48 layers of 32 heads (head dim 64), a
# 4000-piece vocabulary, context 375, text 2.5 s behind the audio, 1 s of silence first, no semantic-VAD heads.
FULL_2_6B_LM = LMConfig(num_heads=32, num_layers=48, context=375, text_card=4000, extra_heads_num_heads=0,
                        audio_delay_seconds=2.5, audio_silence_prefix_seconds=1.0,
                        tokenizer_name="tokenizer_en_audio_4000.model")
# Its tiny sibling: what differs from TINY_LM is what differs between the two real models (vocabulary, delay,
# silence prefix, no VAD heads), plus another head count (8, head dim 16), layer count (3) and an odd context (9,
# like 375) so that nothing keyed to the 1B's numbers passes by accident.
TINY_2_6B_LM = replace(FULL_2_6B_LM, dim=128, num_heads=8, num_layers=3, hidden_scale=4.5, context=9,
                       model_id={"sig": "synthetic-tiny-2.6b", "epoch": 0}, **TINY_MIMI_NAMES)
MIMI = MimiConfig()
# The tests' Mimi: every stage of the real one, 4.3x less GPU time per frame on lavapipe. A narrower SEANet without
# a bottleneck (compress 1), 2 transformer layers of 128, and an odd context of 19 steps, so that streaming tests
# cross the transformer's ring after 9 frames instead of 125. Among contexts 9 to 27 (all valid), 19 leaves the
# seed-0 fixtures no near-tie: smallest logit margins 0.015 (tiny) and 0.051 (tiny 2.6B), prompted runs 0.042,
# RVQ margins 1.7e-4 in the first 41 frames (docs/synthetic.md).
TINY_MIMI = replace(MIMI, n_filters=32, compress=1, dimension=128, num_layers=2, num_heads=4, dim_feedforward=256,
                    context=19, codebook_dim=64)


# Silence fed before the caller's audio, at least: a clip that starts mid-word otherwise loses its first words
# (observed by a third-party harness on the 1B, whose config asks for none). A config asking for more gets more.
MIN_SILENCE_PREFIX_S = 1.0
_LANGUAGES = {"en": "English", "fr": "French"}


def stream_settings(cfg: LMConfig) -> dict:
    """What a host needs to stream this model beyond the plan, written once for both: transcriber.py uses it and
    plans.json carries it to the browser ("stream"). delay_steps: the text's lag in frames (the decoder's word
    timing, and a flush's length); silence_prefix: seconds fed before each stream by default; end_of_turn: whether
    the semantic VAD exists; model: what to tell the user."""
    return {"delay_steps": cfg.delay_steps,
            "silence_prefix": max(cfg.audio_silence_prefix_seconds, MIN_SILENCE_PREFIX_S),
            "end_of_turn": cfg.has_vad_heads,
            "model": {"name": f"Kyutai STT {_size_label(cfg.num_params)}", "languages": _languages(cfg.tokenizer_name),
                      "parameters": cfg.num_params, "layers": cfg.num_layers, "text_card": cfg.text_card,
                      "delay_seconds": cfg.audio_delay_seconds}}


def _size_label(parameters: int) -> str:
    """989 M -> '1B', 2617 M -> '2.6B', 10 M -> '10M' (a tiny test model)."""
    if parameters >= 500_000_000:
        return f"{parameters / 1e9:.1f}".removesuffix(".0") + "B"
    return f"{max(1, round(parameters / 1e6))}M"


def _languages(tokenizer_name: str) -> str | None:
    """'tokenizer_en_fr_audio_8000.model' -> 'English and French'; None for a name of another form."""
    match = re.fullmatch(r"tokenizer_((?:[a-z]{2}_)+)audio_\d+\.model", tokenizer_name)
    if not match or any(code not in _LANGUAGES for code in match.group(1).strip("_").split("_")):
        return None
    return " and ".join(_LANGUAGES[code] for code in match.group(1).strip("_").split("_"))
