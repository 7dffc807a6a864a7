#!/usr/bin/env python3
"""Reference fixtures from the official implementation (moshi 0.2.13, PyTorch, fp32, CPU).

This is the ONLY code in the project that imports torch or moshi (DESIGN.md, decision 4). It loads a checkpoint
directory in the official layout strictly through the official loaders, runs Mimi and the STT LM over a 24 kHz
WAV, and writes OUT.npz (arrays) + OUT.json (metadata). docs/reference.md lists every array and field.

    python tools/make_reference.py --synth tiny --seed 0 --audio tests/fixtures/speech_en_fr_24k.wav \
        --steps 40 --out tests/fixtures/reference_tiny_seed0
    python tools/make_reference.py --synth tiny-2.6b --seed 0 --steps 40 --out tests/fixtures/reference_tiny26_seed0
    python tools/make_reference.py --checkpoint DIR --audio A.wav --out OUT     # any official-layout directory
    python tools/make_reference.py --synth tiny --seed 0 --prompts --frames 20 --out tests/fixtures/prompt_tiny_seed0
    python tools/make_reference.py --synth tiny-2.6b --seed 0 --prompts --frames 20 \
        --out tests/fixtures/prompt_tiny26_seed0

Determinism: fp32, a fixed number of CPU threads (default 1), deterministic kernels, torch.compile disabled
(moshi would otherwise compile the LM's final RMSNorm with Inductor on CPU: 30 s of compiling, machine-specific
code). Re-running on the same machine reproduces every array bit for bit.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
import wave
from contextlib import contextmanager
from pathlib import Path

import numpy as np

# Before moshi is imported: its @torch_compile_lazy decorator reads NO_TORCH_COMPILE at import time, and nothing
# must reach Hugging Face (every path is given explicitly; HF_HUB_OFFLINE makes a slip fail instead of hang).
os.environ.setdefault("NO_TORCH_COMPILE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import moshi  # noqa: E402
import torch  # noqa: E402
from moshi.models import LMGen, loaders  # noqa: E402
from moshi.utils.compile import no_compile  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
DEFAULT_AUDIO = FIXTURES / "speech_en_fr_24k.wav"
SAMPLE_RATE = 24_000
FRAME_SIZE = 1920                       # samples per Mimi frame (80 ms), one LM step each
FORMAT_VERSION = 1

ALIGNMENT = (
    "step 0: text = text_card (start), audio = card (start) for all codebooks; "
    "step k >= 1: text = greedy token of step k-1, audio = Mimi codes of frame k-1. "
    "Driven through moshi's LMGen (delays all 0) as moshi.run_inference feeds it: frame 0 at calls 0 and 1, "
    "frame k-1 at call k. LMGen replaces the codes of its first call by the start tokens, so calling it once "
    "per frame (frame k at call k) would drop frame 0.")

# Every array in the .npz: name -> (shape, meaning). F = Mimi frames, S = LM steps, H = VAD heads, D = LM dim,
# L = Mimi latent size (512; 128 for the tiny Mimi).
ARRAYS = {
    "mimi_codes": ("[F, 32] int32", "streaming encode, one 1920-sample chunk per call"),
    "mimi_latents": ("[F, L] f32", "streaming: the 12.5 Hz latent after the downsample, input of the quantizer"),
    "mimi_code_margins": ("[F, 32] f32", "streaming: distance to the 2nd-nearest codebook entry minus the nearest"),
    "mimi_offline_codes": ("[F, 32] int32", "offline encode of the whole signal in one call"),
    "mimi_offline_latents": ("[F, L] f32", "offline latent"),
    "lm_input_tokens": ("[S, 33] int32", "what the LM embedded at each step: column 0 text, 1..32 audio"),
    "lm_text_logits": ("[S, text_card] f32", "text logits"),
    "lm_tokens": ("[S] int32", "greedy text token (argmax of the logits, ties to the lowest index)"),
    "lm_hidden": ("[S, D] f32", "out_norm output: the normalised transformer output fed to text_linear"),
    "lm_extra_heads_probs": ("[S, H, 6] f32", "softmax(extra_heads[h](lm_hidden))"),
    "lm_vad_probs": ("[S, H] f32", "lm_extra_heads_probs[:, :, 0]: probability of no voice activity"),
}


# ---------------------------------------------------------------------------------------------------- setup
@contextmanager
def deterministic_torch(threads: int):
    """Same inputs, same bits: a fixed thread count (reduction splits depend on it), deterministic kernels, and
    eager mode (no torch.compile). The process's previous settings come back afterwards."""
    before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        with no_compile():
            yield
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1])


def checkpoint_paths(checkpoint_dir: Path) -> dict[str, Path]:
    """The four files of an official checkpoint directory; the file names come from its config.json."""
    config_path = checkpoint_dir / "config.json"
    raw = json.loads(config_path.read_text())
    paths = {"config": config_path,
             "lm": checkpoint_dir / raw.get("moshi_name", loaders.MOSHI_NAME),
             "mimi": checkpoint_dir / raw["mimi_name"],
             "tokenizer": checkpoint_dir / raw["tokenizer_name"]}
    if raw.get("mimi_config_name"):                 # a Mimi other than moshi's default (the tiny sizes')
        paths["mimi_config"] = checkpoint_dir / raw["mimi_config_name"]
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"checkpoint {checkpoint_dir} lacks: {', '.join(missing)}")
    return paths


def load_official(checkpoint_dir: Path, lm_dtype=torch.float32, with_lm: bool = True, with_mimi: bool = True):
    """(CheckpointInfo, LMModel | None, MimiModel | None) through moshi's own loaders, nothing downloaded.

    Both loads are strict: get_moshi_lm calls load_state_dict(state, assign=True) with strict=True on a model
    built on the meta device (a missing tensor would also leave a meta parameter behind: checked below), and
    get_mimi calls load_state_dict(state) with strict=True. Any missing or unexpected key raises."""
    paths = checkpoint_paths(checkpoint_dir)
    info = loaders.CheckpointInfo.from_hf_repo(
        "local/offline",                       # never contacted: every file below is an explicit local Path
        moshi_weights=paths["lm"], mimi_weights=paths["mimi"], tokenizer=paths["tokenizer"],
        config_path=paths["config"], mimi_config_path=paths.get("mimi_config"))
    lm = mimi = None
    if with_lm:
        lm = info.get_moshi(device="cpu", dtype=lm_dtype)
        on_meta = [n for n, p in lm.named_parameters() if p.is_meta]
        if on_meta:
            raise RuntimeError(f"LM parameters never loaded: {on_meta[:5]}")
    if with_mimi:
        mimi = info.get_mimi(device="cpu")     # num_codebooks = n_q - dep_q = 32
    return info, lm, mimi


def read_wav(path: Path) -> np.ndarray:
    """16-bit PCM mono 24 kHz WAV -> float32 samples in [-1, 1): int16 / 32768, as soundfile/sphn read it."""
    with wave.open(str(path), "rb") as w:
        if (w.getnchannels(), w.getsampwidth(), w.getframerate()) != (1, 2, SAMPLE_RATE):
            raise ValueError(f"{path}: need 16-bit PCM mono {SAMPLE_RATE} Hz, got {w.getnchannels()} ch, "
                             f"{8 * w.getsampwidth()} bit, {w.getframerate()} Hz (resample with sox first)")
        data = w.readframes(w.getnframes())
    return (np.frombuffer(data, dtype="<i2").astype(np.float32) / np.float32(32768.0))   # [N]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------- Mimi
@torch.no_grad()
def encode_streaming(mimi, pcm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One 1920-sample chunk per call in streaming mode, as a live engine sees audio.

    The two calls are exactly the body of MimiModel.encode; split so the latent between them is recorded.
    Returns codes [F, 32] int32 and latents [F, L] f32."""
    frames = len(pcm) // FRAME_SIZE
    codes, latents = [], []
    with mimi.streaming(1):
        for f in range(frames):
            chunk = torch.from_numpy(pcm[f * FRAME_SIZE:(f + 1) * FRAME_SIZE]).view(1, 1, FRAME_SIZE)
            latent = mimi._encode_to_unquantized_latent(chunk)           # [1, 512, 1]
            codes.append(mimi.quantizer.encode(latent)[0, :, 0])          # [32]
            latents.append(latent[0, :, 0])                                # [L]
    return torch.stack(codes).numpy().astype(np.int32), torch.stack(latents).numpy()


@torch.no_grad()
def encode_offline(mimi, pcm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The whole signal in one non-streaming call. Returns codes [F, 32] int32 and latents [F, L] f32."""
    x = torch.from_numpy(pcm).view(1, 1, -1)
    latent = mimi._encode_to_unquantized_latent(x)                        # [1, 512, F]
    codes = mimi.quantizer.encode(latent)                                 # [1, 32, F]
    assert torch.equal(codes, mimi.encode(x)), "split encode differs from MimiModel.encode"
    return codes[0].T.numpy().astype(np.int32), latent[0].T.numpy().copy()


@torch.no_grad()
def code_margins(mimi, latents: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """How clear each nearest-neighbour choice was: d2 - d1 per frame and codebook, [F, 32] f32, where d1 <= d2
    are the two smallest Euclidean distances (torch.cdist, as the official _quantize) from the residual to the
    codebook. A tiny margin marks a near-tie that may flip between implementations. Replays the official RVQ
    loop on the official modules' tensors, and checks it lands on the same codes."""
    x = torch.from_numpy(latents).T[None]                                  # [1, 512, F]
    margins, replayed = [], []
    for rvq in (mimi.quantizer.rvq_first, mimi.quantizer.rvq_rest):
        residual = rvq.input_proj(x)[0].T                                  # [F, 256]: own projection, same latent
        for layer in rvq.vq.layers[:rvq.n_q]:
            book = layer._codebook.embedding                               # [2048, 256] = sum / usage
            dist = torch.cdist(residual[None], book[None])[0]              # [F, 2048]
            two = dist.topk(2, dim=1, largest=False)
            margins.append(two.values[:, 1] - two.values[:, 0])            # [F]
            replayed.append(dist.argmin(dim=1))                            # [F]
            residual = residual - book[replayed[-1]]
    if not np.array_equal(torch.stack(replayed, dim=1).numpy(), codes):
        raise AssertionError("replaying the RVQ gave other codes than the quantizer")
    return torch.stack(margins, dim=1).numpy()                             # [F, 32]


# ---------------------------------------------------------------------------------------------------- LM
class _Recorder:
    """Forward hooks on official modules: what the LM actually embedded, and its normalised output.

    Recording the embeddings' inputs (rather than what we meant to feed) is what proves the alignment."""

    def __init__(self, lm):
        self.text: list[int] = []
        self.audio: list[list[int]] = []
        self.hidden: list[torch.Tensor] = []
        self._n_q = lm.n_q
        self._handles = [lm.text_emb.register_forward_pre_hook(self._on_text),
                         lm.out_norm.register_forward_hook(self._on_out_norm)]
        self._handles += [emb.register_forward_pre_hook(self._on_audio) for emb in lm.emb]

    def _on_text(self, module, args):
        self.text.append(int(args[0][0, -1]))                              # args[0]: [B, T] token ids

    def _on_audio(self, module, args):
        if not self.audio or len(self.audio[-1]) == self._n_q:            # emb 0 starts a new step
            self.audio.append([])
        self.audio[-1].append(int(args[0][0, -1]))

    def _on_out_norm(self, module, args, output):
        self.hidden.append(output[0, -1].clone())                          # [D]

    def close(self) -> None:
        for h in self._handles:
            h.remove()


@torch.no_grad()
def run_lm(lm, codes: np.ndarray, steps: int) -> dict[str, np.ndarray]:
    """Greedy streaming decode through the official LMGen, fed as moshi.run_inference feeds it (see ALIGNMENT):
    call 0 gets frame 0, which LMGen discards in favour of the start tokens; call k >= 1 gets frame k-1.

    codes: [F, 32] with F >= steps - 1. Returns the lm_* arrays of ARRAYS."""
    assert 1 <= len(codes) and steps <= len(codes) + 1, f"{steps} steps need {steps - 1} frames, have {len(codes)}"
    logits: list[torch.Tensor] = []
    gen = LMGen(lm, use_sampling=False, temp=0.0, temp_text=0.0,
                on_text_logits_hook=lambda t: logits.append(t[0, 0, 0].float().clone()))   # t: [1, 1, 1, V]
    recorder = _Recorder(lm)
    tokens, heads = [], []
    try:
        with gen.streaming(1):
            for k in range(steps):
                audio = torch.from_numpy(codes[max(k - 1, 0)]).long().view(1, -1, 1)     # [1, 32, 1]
                out, probs = gen.step_with_extra_heads(audio)            # out: [1, 1, 1]; probs: H x [1, 1, 6]
                tokens.append(int(out[0, 0, 0]))
                heads.append(torch.stack([p[0, 0] for p in probs]) if probs else torch.zeros(0, 6))
    finally:
        recorder.close()
    inputs = np.concatenate([np.array(recorder.text)[:, None], np.array(recorder.audio)], axis=1)
    probs = torch.stack(heads).numpy()                                    # [S, H, 6]
    return {"lm_input_tokens": inputs.astype(np.int32),
            "lm_text_logits": torch.stack(logits).numpy(),
            "lm_tokens": np.array(tokens, dtype=np.int32),
            "lm_hidden": torch.stack(recorder.hidden).numpy(),
            "lm_extra_heads_probs": probs,
            "lm_vad_probs": probs[:, :, 0].copy()}


def expected_inputs(lm_cfg: dict, codes: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """The intended alignment, [S, 33]: row 0 the start tokens, row k (token k-1, codes of frame k-1)."""
    steps = len(tokens)
    out = np.empty((steps, 1 + lm_cfg["n_q"]), np.int32)
    out[0, 0], out[0, 1:] = lm_cfg["text_card"], lm_cfg["card"]
    out[1:, 0] = tokens[:-1]
    out[1:, 1:] = codes[:steps - 1]
    return out


@torch.no_grad()
def run_lm_explicit(lm, input_tokens: np.ndarray) -> dict[str, np.ndarray]:
    """Cross-check without LMGen: the LM's own streaming forward_text on explicit inputs [S, 33].

    Returns text logits [S, V], hidden [S, D] and extra-head probabilities [S, H, 6]."""
    logits, hidden, probs = [], [], []
    with lm.streaming(1):
        for row in input_tokens:
            x = torch.from_numpy(row).long().view(1, -1, 1)              # [B=1, K=33, T=1]
            out, text_logits = lm.forward_text(x)                         # [1, 1, D], [1, 1, 1, V]
            logits.append(text_logits[0, 0, 0].float())
            hidden.append(out[0, 0])
            heads = [torch.softmax(h(out), dim=-1)[0, 0] for h in lm.extra_heads]
            probs.append(torch.stack(heads) if heads else torch.zeros(0, 6))
    return {"lm_text_logits": torch.stack(logits).numpy(), "lm_hidden": torch.stack(hidden).numpy(),
            "lm_extra_heads_probs": torch.stack(probs).numpy()}


# ---------------------------------------------------------------------------------------------------- RoPE
def official_rope_frequencies(head_dim: int, max_period: float) -> np.ndarray:
    """The frequency table of moshi 0.2.13's apply_rope (modules/rope.py), computed by torch as it computes it:
    exp(arange(D/2, float32) * (-ln(max_period) * 2 / D)) in float32. [head_dim / 2] f32."""
    ds = torch.arange(head_dim // 2, dtype=torch.float32)
    return torch.exp(ds * (-math.log(max_period) * 2 / head_dim)).numpy()


def rope_tables() -> dict:
    """kyutai_stt/data/rope_freqs.json: the table of every configuration the project knows (every synthetic size's
    LM, the Mimi encoder), as float32 bit patterns (lm_reference.rope_frequencies reads them)."""
    sys.path.insert(0, str(REPO))
    from kyutai_stt.weights.synthetic import MIMIS, SIZES
    configs = sorted({(c.head_dim, float(c.max_period)) for c in SIZES.values()}
                     | {(m.dimension // m.num_heads, float(m.max_period)) for m in MIMIS.values()})
    return {"source": "moshi 0.2.13 modules/rope.py apply_rope: torch.exp(arange(D / 2) * (-ln(max_period) * 2 / D))"
                      " in float32, CPU",
            "created_by": "tools/make_reference.py --rope-tables",
            "versions": {"torch": torch.__version__, "moshi": moshi.__version__, "machine": platform.machine(),
                         "cpu_capability": torch.backends.cpu.get_cpu_capability()},
            "tables": [{"head_dim": d, "max_period": t,
                        "f32_bits": official_rope_frequencies(d, t).view(np.uint32).tolist()} for d, t in configs]}


# ---------------------------------------------------------------------------------------------------- long streams
LONG_HOURS = (2, 10, 24)


def set_stream_position(module, steps: int) -> None:
    """Put a module in streaming mode at absolute step `steps` as if the stream had run that long with zero
    history: every attention's RoPE offset and KV-ring end at `steps` (all ring slots then count as written, holding
    zeros, as the engine's ring after reset at that position), and no conv treats the next call as the first
    (replicate padding happens only at position 0, in moshi and in the engine)."""
    for m in module.modules():
        state = getattr(m, "_streaming_state", None)
        if state is None:
            continue
        if hasattr(state, "offsets"):                                     # StreamingTransformer
            state.offsets[:] = steps
        if hasattr(state, "kv_cache"):                                    # StreamingMultiheadAttention
            state.offset[:] = steps
            state.offset_cpu = steps
            if state.kv_cache is not None:
                state.kv_cache.end_offset[:] = steps
        if hasattr(state, "first"):                                       # StreamingConv1d
            state.first[:] = False


@torch.no_grad()
def long_positions(checkpoint_dir: Path, audio: Path, lm_steps: int = 4, mimi_frames: int = 3,
                   first_audio_frame: int = 40, threads: int = 1) -> tuple[dict[str, np.ndarray], dict]:
    """Teacher-forced LM steps and streaming Mimi frames at the frame index of 2 h, 10 h and 24 h of audio
    (12.5 frames/s: LM position = frame, Mimi transformer position = 2 * frame), from a zero state there.

    LM inputs: a seeded random [lm_steps, 33] (text token, 32 codes); Mimi input: the audio frames
    first_audio_frame... Arrays per hour mark h: long_{h}h_lm_logits [S, V], _lm_tokens [S], _lm_vad [S, H],
    _mimi_codes [F, 32], _mimi_latents [F, L], _mimi_margins [F, 32]; plus lm_input_tokens, pcm."""
    pcm = read_wav(audio)[first_audio_frame * FRAME_SIZE:(first_audio_frame + mimi_frames) * FRAME_SIZE]
    arrays: dict[str, np.ndarray] = {"pcm": pcm}
    with deterministic_torch(threads):
        info, lm, mimi = load_official(checkpoint_dir)
        cfg = info.raw_config
        rng = np.random.default_rng(0)
        inputs = np.concatenate([rng.integers(0, cfg["text_card"], (lm_steps, 1)),
                                 rng.integers(0, cfg["card"], (lm_steps, cfg["n_q"]))], axis=1).astype(np.int32)
        arrays["lm_input_tokens"] = inputs
        frames = {h: int(round(h * 3600 * SAMPLE_RATE / FRAME_SIZE)) for h in LONG_HOURS}
        for h, frame in frames.items():
            logits, probs = [], []
            with lm.streaming(1):
                set_stream_position(lm, frame)
                for row in inputs:
                    out, text_logits = lm.forward_text(torch.from_numpy(row).long().view(1, -1, 1))
                    logits.append(text_logits[0, 0, 0].float())
                    probs.append(torch.stack([torch.softmax(e(out), dim=-1)[0, 0, 0] for e in lm.extra_heads]))
            arrays[f"long_{h}h_lm_logits"] = torch.stack(logits).numpy()
            arrays[f"long_{h}h_lm_tokens"] = arrays[f"long_{h}h_lm_logits"].argmax(axis=1).astype(np.int32)
            arrays[f"long_{h}h_lm_vad"] = torch.stack(probs).numpy()
            codes, latents = [], []
            with mimi.streaming(1):
                set_stream_position(mimi, 2 * frame)
                for f in range(mimi_frames):
                    chunk = torch.from_numpy(pcm[f * FRAME_SIZE:(f + 1) * FRAME_SIZE]).view(1, 1, FRAME_SIZE)
                    latent = mimi._encode_to_unquantized_latent(chunk)
                    codes.append(mimi.quantizer.encode(latent)[0, :, 0])
                    latents.append(latent[0, :, 0])
            arrays[f"long_{h}h_mimi_codes"] = torch.stack(codes).numpy().astype(np.int32)
            arrays[f"long_{h}h_mimi_latents"] = torch.stack(latents).numpy()
            arrays[f"long_{h}h_mimi_margins"] = code_margins(mimi, arrays[f"long_{h}h_mimi_latents"],
                                                             arrays[f"long_{h}h_mimi_codes"])
    meta = {"format_version": FORMAT_VERSION,
            "created_by": "tools/make_reference.py " + (" ".join(sys.argv[1:]) if __name__ == "__main__" else
                                                        "(imported)"),
            "versions": {"moshi": moshi.__version__, "torch": torch.__version__, "numpy": np.__version__},
            "frames": {str(h): f for h, f in frames.items()}, "lm_steps": lm_steps, "mimi_frames": mimi_frames,
            "first_audio_frame": first_audio_frame, "audio": {"file": audio.name, "sha256": sha256_file(audio)},
            "checkpoint": {"files": {k: {"name": p.name, "sha256": sha256_file(p)}
                                     for k, p in checkpoint_paths(checkpoint_dir).items()}},
            "state": set_stream_position.__doc__.split("\n\n")[0].replace("\n    ", " ")}
    return arrays, meta


# ---------------------------------------------------------------------------------------------------- prompts
# scripts/stt_from_file_with_prompt_pytorch.py (delayed-streams-modeling), re-implemented here from its reading:
# frames = silence prefix | audio prompt, zero-padded to whole frames | 10 silence frames (0.8 s) | audio |
# silence suffix; the text prompt's SentencePiece ids are enforced on the text logits: until all were emitted, every
# logit but those of the padding tokens (0, 3) and of the next not-yet-emitted prompt id is -inf, and a step's
# token advances the prompt only when it is that id and not a padding token. The engine's alignment (frame k-1 at
# step k, ALIGNMENT) differs from the script's, which calls LMGen once per frame (frame k at step k: frame 0's codes
# never reach the model): each case is run both ways, {case}_tokens with the engine's alignment and
# {case}_script_tokens exactly as the script feeds LMGen.
PROMPT_PADDING_TOKENS = (0, 3)
PROMPT_SEPARATOR_FRAMES = 10
PROMPT_AUDIO = FIXTURES / "prompt_fr_24k.wav"
PROMPT_CASES = {   # name -> (text prompt or None, audio prompt or None)
    "text": ("bonjour à tous", None),
    "audio": (None, PROMPT_AUDIO),
    "audio_text": ("bonjour à tous", PROMPT_AUDIO),
    # Longer than the run can emit: the mask still holds when the audio ends.
    "long_text": ("the quick brown fox jumps over the lazy dog then takes a short nap in the warm sun "
                  "bonjour à tous il fait très beau aujourd hui", None),
}


class PromptMask:
    """The official PromptHook's rule: on_logits masks [.., V] logits in place, on_token advances the prompt."""

    def __init__(self, ids: list[int]):
        self.ids, self.emitted = list(ids), 0
        self.margins: list[float] = []        # per step: best minus second-best of the logits that may win

    def on_logits(self, logits: torch.Tensor) -> None:
        if self.emitted < len(self.ids):
            allowed = torch.zeros_like(logits, dtype=torch.bool)
            allowed[..., list(PROMPT_PADDING_TOKENS) + [self.ids[self.emitted]]] = True
            logits[:] = torch.where(allowed, logits, float("-inf"))
        finite = logits.reshape(-1)[torch.isfinite(logits.reshape(-1))]
        top = finite.topk(2).values
        self.margins.append(float(top[0] - top[1]))

    def on_token(self, token: torch.Tensor) -> None:
        t = int(token.reshape(-1)[0])
        if self.emitted < len(self.ids) and t not in PROMPT_PADDING_TOKENS:
            assert t == self.ids[self.emitted], "a masked-out token won"
            self.emitted += 1


def prompt_frames(pcm: np.ndarray, prompt: np.ndarray | None, prefix: int, suffix: int) -> tuple[np.ndarray, dict]:
    """The script's chain of 1920-sample frames [F, 1920] and its layout (frame counts of each part)."""
    pad = lambda x: np.concatenate([x, np.zeros(-len(x) % FRAME_SIZE, np.float32)]).reshape(-1, FRAME_SIZE)  # noqa
    silence = lambda n: np.zeros((n, FRAME_SIZE), np.float32)                                                 # noqa
    parts = [("prefix", silence(prefix))]
    if prompt is not None:
        parts += [("prompt", pad(prompt)), ("separator", silence(PROMPT_SEPARATOR_FRAMES))]
    parts += [("audio", pad(pcm)), ("suffix", silence(suffix))]
    return np.concatenate([p for _, p in parts]), {name: len(p) for name, p in parts}


@torch.no_grad()
def run_prompted(lm, mimi, frames: np.ndarray, ids: list[int], script: bool = False) -> dict[str, np.ndarray]:
    """Streaming Mimi + greedy LMGen with the prompt mask over the frames [F, 1920]; LMGen gets frame 0 twice
    (ALIGNMENT), so S = F + 1 steps, or with script=True each frame once, as the script (S = F). Returns tokens
    [S], codes [F, 32], allowed-logit margins [S], and the number of prompt ids emitted by each step [S]."""
    mask = PromptMask(ids)
    gen = LMGen(lm, use_sampling=False, temp=0.0, temp_text=0.0,
                on_text_hook=mask.on_token, on_text_logits_hook=mask.on_logits)
    tokens, codes, emitted = [], [], []
    with mimi.streaming(1), gen.streaming(1):
        for f, frame in enumerate(frames):
            c = mimi.encode(torch.from_numpy(frame).view(1, 1, FRAME_SIZE))           # [1, 32, 1]
            codes.append(c[0, :, 0])
            for _ in range(2 if f == 0 and not script else 1):
                tokens.append(int(gen.step(c)[0, 0, 0]))
                emitted.append(mask.emitted)
    return {"tokens": np.array(tokens, np.int32), "codes": torch.stack(codes).numpy().astype(np.int32),
            "margins": np.array(mask.margins, np.float32), "emitted": np.array(emitted, np.int32)}


def make_prompt_reference(checkpoint_dir: Path, audio: Path, audio_frames: int = 20, prefix_frames: int = 3,
                          threads: int = 1, synthetic: dict | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Every PROMPT_CASES run over the first audio_frames frames of `audio`. Arrays per case: {case}_tokens [S],
    {case}_codes [F, 32], {case}_margins [S], {case}_emitted [S], {case}_prompt_ids [P], and the script's own
    feeding: {case}_script_tokens [F], {case}_script_emitted [F]."""
    pcm = read_wav(audio)[:audio_frames * FRAME_SIZE]
    arrays: dict[str, np.ndarray] = {}
    cases: dict[str, dict] = {}
    with deterministic_torch(threads):
        info, lm, mimi = load_official(checkpoint_dir)
        tokenizer = info.get_text_tokenizer()
        suffix = math.ceil(info.stt_config.get("audio_delay_seconds", 5.0) * mimi.frame_rate)
        for name, (text, prompt_audio) in PROMPT_CASES.items():
            ids = tokenizer.encode(text) if text else []
            frames, layout = prompt_frames(pcm, read_wav(prompt_audio) if prompt_audio else None,
                                           prefix_frames, suffix)
            out = run_prompted(lm, mimi, frames, ids)
            script = run_prompted(lm, mimi, frames, ids, script=True)
            assert np.array_equal(script["codes"], out["codes"])
            arrays.update({f"{name}_{k}": v for k, v in out.items()})
            arrays[f"{name}_script_tokens"] = script["tokens"]
            arrays[f"{name}_script_emitted"] = script["emitted"]
            arrays[f"{name}_prompt_ids"] = np.array(ids, np.int32)
            cases[name] = {"prompt_text": text, "prompt_ids": len(ids), "layout": layout,
                           "prompt_audio": None if prompt_audio is None else
                           {"file": prompt_audio.name, "sha256": sha256_file(prompt_audio),
                            "samples": len(read_wav(prompt_audio))},
                           "steps": len(out["tokens"]), "emitted_at_end": int(out["emitted"][-1]),
                           "emitted_when_audio_ends": int(out["emitted"][sum(layout.values()) - layout["suffix"]]),
                           "min_margin": float(out["margins"].min()),
                           "script_min_margin": float(script["margins"].min()),
                           "script_emitted_at_end": int(script["emitted"][-1])}
    meta = {"format_version": FORMAT_VERSION,
            "created_by": "tools/make_reference.py " + (" ".join(sys.argv[1:]) if __name__ == "__main__" else
                                                        "(imported)"),
            "source": "delayed-streams-modeling scripts/stt_from_file_with_prompt_pytorch.py, re-implemented "
                      "(see the 'prompts' section of tools/make_reference.py)",
            "alignment": ALIGNMENT, "padding_tokens": list(PROMPT_PADDING_TOKENS),
            "separator_frames": PROMPT_SEPARATOR_FRAMES, "cases": cases,
            "versions": {"moshi": moshi.__version__, "torch": torch.__version__},
            "audio": {"file": audio.name, "sha256": sha256_file(audio), "frames": audio_frames},
            "checkpoint": {"synthetic": synthetic,
                           "files": {k: {"name": p.name, "sha256": sha256_file(p)}
                                     for k, p in checkpoint_paths(checkpoint_dir).items()}}}
    return arrays, meta


# ---------------------------------------------------------------------------------------------------- sanity
def sanity(arrays: dict[str, np.ndarray]) -> dict:
    """Is the synthetic model degenerate? Code and token diversity, VAD saturation, top-1 vs top-2 logit margins.
    Pure numpy, so tests recompute it from a stored fixture."""
    out: dict = {}
    codes = arrays.get("mimi_codes")
    if codes is not None and len(codes):
        distinct = [len(np.unique(codes[:, q])) for q in range(codes.shape[1])]   # per codebook, over frames
        out["codes"] = {
            "frames": int(len(codes)), "all_zero": bool((codes == 0).all()),
            "distinct_per_codebook_min": int(min(distinct)),
            "distinct_per_codebook_median": float(np.median(distinct)),
            "distinct_per_frame_min": int(min(len(np.unique(c)) for c in codes)),
            "frames_equal_to_previous": int((codes[1:] == codes[:-1]).all(axis=1).sum()),
        }
        if "mimi_code_margins" in arrays:
            m = arrays["mimi_code_margins"]
            out["codes"].update({"margin_min": float(m.min()), "margin_median": float(np.median(m)),
                                 "margins_below_1e-3": int((m < 1e-3).sum())})
    logits = arrays.get("lm_text_logits")
    if logits is not None and len(logits):
        top2 = np.sort(logits, axis=1)[:, -2:]                             # [S, 2]
        margin = top2[:, 1] - top2[:, 0]
        tokens = arrays["lm_tokens"]
        out["tokens"] = {
            "steps": int(len(tokens)), "distinct": int(len(np.unique(tokens))),
            "repeats_of_previous": int((tokens[1:] == tokens[:-1]).sum()),
            "logit_margin_min": float(margin.min()), "logit_margin_median": float(np.median(margin)),
            "logit_std_median": float(np.median(logits.std(axis=1))),
        }
        vad = arrays["lm_vad_probs"]
        if vad.size:
            out["vad"] = {"min": float(vad.min()), "max": float(vad.max()),
                          "exactly_0_or_1": int(((vad == 0) | (vad == 1)).sum()),
                          "p2_above_half": int((vad[:, min(2, vad.shape[1] - 1)] > 0.5).sum())}
    return out


# ---------------------------------------------------------------------------------------------------- driver
def make_reference(checkpoint_dir: Path, audio: Path, steps: int | None = None, frames: int | None = None,
                   threads: int = 1, cross_check_steps: int = 12,
                   synthetic: dict | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Run everything; return (arrays, metadata). steps defaults to frames + 1 (every frame fed to the LM)."""
    started = time.perf_counter()
    pcm = read_wav(audio)                                                  # [N]
    samples = len(pcm)
    padding = -len(pcm) % FRAME_SIZE                                      # zeros to a whole number of frames,
    pcm = np.concatenate([pcm, np.zeros(padding, np.float32)])           # as Mimi's offline path pads too
    if frames is not None:
        pcm = pcm[:frames * FRAME_SIZE]
    frames = len(pcm) // FRAME_SIZE
    steps = frames + 1 if steps is None else steps
    if not 1 <= steps <= frames + 1:
        raise ValueError(f"--steps {steps}: must be in 1..{frames + 1} for {frames} frames")

    arrays: dict[str, np.ndarray] = {}
    meta: dict = {"format_version": FORMAT_VERSION, "alignment": ALIGNMENT, "arrays": ARRAYS}
    with deterministic_torch(threads):
        info, lm, mimi = load_official(checkpoint_dir)
        t0 = time.perf_counter()
        arrays["mimi_codes"], arrays["mimi_latents"] = encode_streaming(mimi, pcm)
        arrays["mimi_code_margins"] = code_margins(mimi, arrays["mimi_latents"], arrays["mimi_codes"])
        t1 = time.perf_counter()
        arrays["mimi_offline_codes"], arrays["mimi_offline_latents"] = encode_offline(mimi, pcm)
        t2 = time.perf_counter()
        del mimi
        arrays.update(run_lm(lm, arrays["mimi_codes"], steps))
        t3 = time.perf_counter()
        check = run_lm_explicit(lm, arrays["lm_input_tokens"][:cross_check_steps])
        cfg = info.raw_config
        expected = expected_inputs(cfg, arrays["mimi_codes"], arrays["lm_tokens"])
        if not np.array_equal(expected, arrays["lm_input_tokens"]):
            raise AssertionError("LMGen did not feed the intended alignment (see ALIGNMENT)")
        argmax = arrays["lm_text_logits"].argmax(axis=1)
        if not np.array_equal(argmax, arrays["lm_tokens"]):
            raise AssertionError("LMGen's greedy token differs from the argmax of its logits")

    diff = arrays["mimi_latents"] - arrays["mimi_offline_latents"]
    n = len(check["lm_text_logits"])
    meta.update({
        "created_by": "tools/make_reference.py " + (" ".join(sys.argv[1:]) if __name__ == "__main__" else
                                                    "(imported)"),
        "versions": {"moshi": moshi.__version__, "torch": torch.__version__, "numpy": np.__version__,
                     "python": platform.python_version(), "machine": platform.machine()},
        "runtime": {"device": "cpu", "dtype": "float32", "threads": threads, "torch_compile": False,
                    "deterministic_algorithms": True, "seconds_total": round(time.perf_counter() - started, 2),
                    "seconds_mimi_streaming": round(t1 - t0, 2), "seconds_mimi_offline": round(t2 - t1, 2),
                    "seconds_lm": round(t3 - t2, 2)},
        "checkpoint": {"dir": None if synthetic else str(checkpoint_dir), "synthetic": synthetic,
                       "files": {k: {"name": p.name, "bytes": p.stat().st_size, "sha256": sha256_file(p)}
                                 for k, p in checkpoint_paths(checkpoint_dir).items()},
                       "config": cfg},
        "audio": {"file": audio.name, "sha256": sha256_file(audio), "sample_rate": SAMPLE_RATE,
                  "samples": samples, "zero_padding_samples": padding, "frames_used": frames,
                  "frame_size": FRAME_SIZE, "pcm_scaling": "int16 / 32768"},
        "lm": {"steps": steps, "text_card": cfg["text_card"], "card": cfg["card"], "n_q": cfg["n_q"],
               "context": cfg["context"], "vad_heads": cfg.get("extra_heads_num_heads", 0)},
        "mimi_streaming_vs_offline": {
            "codes_equal": bool(np.array_equal(arrays["mimi_codes"], arrays["mimi_offline_codes"])),
            "codes_mismatches": int((arrays["mimi_codes"] != arrays["mimi_offline_codes"]).sum()),
            "latent_max_abs_diff": float(np.abs(diff).max()),
            "latent_max_abs": float(np.abs(arrays["mimi_offline_latents"]).max())},
        "lmgen_vs_explicit_forward": {
            "steps": n,
            "text_logits_max_abs_diff": float(np.abs(check["lm_text_logits"] - arrays["lm_text_logits"][:n]).max()),
            "hidden_max_abs_diff": float(np.abs(check["lm_hidden"] - arrays["lm_hidden"][:n]).max()),
            "extra_heads_max_abs_diff": float(np.abs(check["lm_extra_heads_probs"]
                                                     - arrays["lm_extra_heads_probs"][:n]).max(initial=0.0))},
        "sanity": sanity(arrays),
    })
    return arrays, meta


def save(out: Path, arrays: dict[str, np.ndarray], meta: dict) -> tuple[Path, Path]:
    """OUT.npz (compressed arrays) and OUT.json (metadata); the JSON is written last, so it marks completeness."""
    out = out.with_suffix("") if out.suffix in (".npz", ".json") else out
    out.parent.mkdir(parents=True, exist_ok=True)
    npz, js = out.with_name(out.name + ".npz"), out.with_name(out.name + ".json")
    np.savez_compressed(npz, **arrays)
    tmp = js.with_name(js.name + ".partial")
    tmp.write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(tmp, js)
    return npz, js


def load(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """Read back what save() wrote (path with or without a suffix)."""
    path = path.with_suffix("") if path.suffix in (".npz", ".json") else path
    with np.load(path.with_name(path.name + ".npz")) as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, json.loads(path.with_name(path.name + ".json").read_text())


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kyutai-stt"


def synthetic_code_digest() -> str:
    """Short hash of the code that writes synthetic checkpoints: part of every cache name, so that a change to
    synthetic.py (its scale constants, say) never serves stale weights from the cache."""
    h = hashlib.sha256()
    for name in ("weights/synthetic.py", "weights/checkpoint.py", "weights/safetensors_io.py", "config.py"):
        h.update((REPO / "kyutai_stt" / name).read_bytes())
    return h.hexdigest()[:10]


def synth_checkpoint(size: str, seed: int, vad_heads: bool = True, root: Path | None = None,
                     mimi: str | None = None) -> Path:
    """A synthetic checkpoint in the official layout, written once into the cache: into a directory of this
    process's own, renamed into place when complete, so that processes making the same one at once (two test
    processes, two runs) never write into each other's files; the first rename wins."""
    sys.path.insert(0, str(REPO))                                         # run from a checkout without install
    from kyutai_stt.weights.synthetic import DEFAULT_MIMI, write_checkpoint
    mimi = mimi or DEFAULT_MIMI[size]
    name = f"{size}-seed{seed}{'' if vad_heads else '-novad'}-mimi{mimi}-{synthetic_code_digest()}"
    directory = (root or cache_dir() / "synthetic") / name
    if not (directory / "config.json").is_file():
        own = directory.with_name(f"{name}.partial-{os.getpid()}")
        write_checkpoint(own, size, seed, vad_heads=vad_heads, mimi=mimi)
        try:
            os.rename(own, directory)
        except OSError:
            if not (directory / "config.json").is_file():   # left incomplete by an older version of this function
                shutil.rmtree(directory)
                os.rename(own, directory)
            else:                                            # another process's copy is in place: the same bytes
                shutil.rmtree(own, ignore_errors=True)
    return directory


def cached_reference_path(checkpoint: Path, audio: Path, steps: int | None, frames: int | None = None) -> Path:
    """Where the fixture of a cached synthetic checkpoint goes: named by everything that determines it."""
    name = f"{checkpoint.name}-audio{sha256_file(audio)[:10]}-steps{steps or 'all'}"
    return cache_dir() / "reference" / (name + (f"-frames{frames}" if frames else ""))


def cached_reference(size: str = "full", seed: int = 0, steps: int | None = None, audio: Path = DEFAULT_AUDIO,
                     threads: int = 1, frames: int | None = None) -> Path:
    """For slow tests: the fixture of a synthetic checkpoint over `audio` (its first `frames` frames: all by default),
    made on first use into the cache (~2.5 min for the full size and all frames). Returns the path without suffix
    (pass it to load())."""
    checkpoint = synth_checkpoint(size, seed)
    out = cached_reference_path(checkpoint, audio, steps, frames)
    if not out.with_name(out.name + ".json").is_file():
        # In a child process: the official model in fp32 takes ~10 GB at full size, which a long-lived caller (the
        # test process) would otherwise keep as its peak (torch and glibc do not return it to the system).
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "--synth", size, "--seed", str(seed),
                        "--audio", str(audio), "--threads", str(threads), "--out", str(out)]
                       + (["--steps", str(steps)] if steps else []) + (["--frames", str(frames)] if frames else []),
                       check=True, stdout=subprocess.DEVNULL)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="a directory in the official layout (config.json, ...)")
    src.add_argument("--synth", choices=["tiny", "full", "tiny-2.6b", "2.6b"],
                     help="synthesise a checkpoint of this size (kyutai_stt/weights/synthetic.py SIZES) into the "
                          "cache first")
    src.add_argument("--rope-tables", type=Path, metavar="JSON",
                     help="instead: write moshi's RoPE tables of every known configuration (kyutai_stt/data/"
                          "rope_freqs.json)")
    p.add_argument("--seed", type=int, default=0, help="seed of --synth (default 0)")
    p.add_argument("--mimi", choices=["real", "tiny"],
                   help="--synth with this Mimi (default: tiny for the tiny sizes, real for the others)")
    p.add_argument("--no-vad-heads", action="store_true",
                   help="--synth without the 4 semantic-VAD heads (the 2.6B sizes have none either way)")
    p.add_argument("--audio", type=Path, default=DEFAULT_AUDIO, help="16-bit mono 24 kHz WAV (default: %(default)s)")
    p.add_argument("--out", type=Path, help="output path without suffix (default: the cache, for --synth)")
    p.add_argument("--steps", type=int, help="LM steps (default: frames + 1)")
    p.add_argument("--frames", type=int, help="use only the first N Mimi frames of the audio")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (fixed for determinism; default 1)")
    p.add_argument("--long-positions", action="store_true",
                   help=f"instead of the usual run: LM steps and Mimi frames at {LONG_HOURS} hours (long_positions)")
    p.add_argument("--prompts", action="store_true",
                   help="instead of the usual run: the prompted runs of PROMPT_CASES (text and/or audio prompt) "
                        "over the first --frames frames (default 20)")
    p.add_argument("--cross-check-steps", type=int, default=12,
                   help="re-run the first N steps through lm.forward_text directly (default 12)")
    args = p.parse_args(argv)

    if args.rope_tables:
        args.rope_tables.write_text(json.dumps(rope_tables(), indent=1) + "\n")
        print(f"wrote {args.rope_tables}")
        return 0
    synthetic = None
    if args.synth:
        checkpoint = synth_checkpoint(args.synth, args.seed, not args.no_vad_heads, mimi=args.mimi)
        synthetic = json.loads((checkpoint / "SYNTHETIC.json").read_text())
        synthetic.pop("note")                  # size, seed, vad_heads (the 2.6B sizes have none) and Mimi
        out = args.out or cached_reference_path(checkpoint, args.audio, args.steps, args.frames)
    else:
        checkpoint, out = args.checkpoint, args.out
        if out is None:
            p.error("--out is required with --checkpoint")
    if args.prompts:
        arrays, meta = make_prompt_reference(checkpoint, args.audio, args.frames or 20, threads=args.threads,
                                             synthetic=synthetic)
        npz, js = save(out, arrays, meta)
        print(json.dumps({"npz": str(npz), "bytes": npz.stat().st_size, "cases": meta["cases"]}, indent=1))
        return 0
    if args.long_positions:
        arrays, meta = long_positions(checkpoint, args.audio, threads=args.threads)
        meta["checkpoint"]["synthetic"] = synthetic
        npz, js = save(out, arrays, meta)
        print(json.dumps({"npz": str(npz), "bytes": npz.stat().st_size}))
        return 0
    arrays, meta = make_reference(checkpoint, args.audio, args.steps, args.frames, args.threads,
                                  args.cross_check_steps, synthetic=synthetic)
    npz, js = save(out, arrays, meta)
    print(json.dumps({"npz": str(npz), "bytes": npz.stat().st_size, "json": str(js),
                      "runtime": meta["runtime"], "mimi_streaming_vs_offline": meta["mimi_streaming_vs_offline"],
                      "lmgen_vs_explicit_forward": meta["lmgen_vs_explicit_forward"],
                      "sanity": meta["sanity"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
