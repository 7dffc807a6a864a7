"""A prompt that steers the transcript (issue 17), as the official prompting script does it
(delayed-streams-modeling scripts/stt_from_file_with_prompt_pytorch.py): experimental, and the model's behaviour is
very sensitive to the prompt.

  - text: its token ids must be emitted first; until they all were, each step may emit only the padding tokens
    (0, 3) or the next prompt id. Enforced on the GPU by argmax.wgsl through the plan's "prompt" input
    ([n, e, ids]: written with a stream's first frame; the GPU advances e, nothing is read back).
  - audio: fed after the silence prefix, zero-padded to whole frames, then 0.8 s of silence (the script's 10 frames)
    before the caller's audio. Words that begin before the middle of that silence are the prompt's: hidden from the
    output (DecoderConfig.hide_words_before, streaming/decoder.py), and times count from the caller's audio.
With both (the official example: an audio prompt saying "Loonah" and the text "Loonah"), the model transcribes
the prompt audio with the prompt's spelling, and then keeps it for the same word in the caller's audio.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kyutai_stt.errors import UserError

FRAME_SIZE = 1920                   # 80 ms at 24 kHz: the prompt audio is padded to whole frames
SEPARATOR_FRAMES = 10               # the official script's silence between the prompt audio and the audio
MAX_TEXT_CHARS = 1000               # a prompt is a few words; this bounds the encoder's work on pasted text
MAX_AUDIO_SECONDS = 30.0            # held in memory and fed at every stream's start


class PromptError(UserError, ValueError):
    pass


@dataclass(frozen=True)
class Prompt:
    text: str = ""                                  # the spelling to enforce ("" = none)
    audio: np.ndarray | None = None                 # float32 [n] mono 24 kHz samples (None = none)

    def __post_init__(self):
        if not isinstance(self.text, str):
            raise PromptError(f"the text prompt must be a string, not {type(self.text).__name__}")
        if self.text and not self.text.strip():
            raise PromptError("the text prompt is only whitespace: give a word or two (e.g. a name's spelling), "
                              "or no text prompt")
        if len(self.text) > MAX_TEXT_CHARS:
            raise PromptError(f"the text prompt is {len(self.text)} characters; at most {MAX_TEXT_CHARS} "
                              "(a prompt steers a few words: shorten it)")
        if self.audio is not None:
            audio = np.asarray(self.audio)
            if audio.ndim != 1 or audio.size == 0 or audio.dtype.kind != "f":
                raise PromptError("the audio prompt must be a non-empty float array of 24 kHz mono samples")
            if audio.size > MAX_AUDIO_SECONDS * 24000:
                raise PromptError(f"the audio prompt is {audio.size / 24000:.1f} s; at most "
                                  f"{MAX_AUDIO_SECONDS:g} s (a few words suffice)")
            if not np.isfinite(audio).all():
                raise PromptError("the audio prompt holds NaN or infinite samples")
            object.__setattr__(self, "audio", audio.astype(np.float32))
        if not self.text and self.audio is None:
            raise PromptError("an empty prompt: give a text prompt, an audio prompt, or both")

    @classmethod
    def load(cls, text: str | None = None, audio_path: str | Path | None = None) -> Prompt | None:
        """From the command line's --prompt-text / --prompt-audio (None when neither is given)."""
        if text is None and audio_path is None:
            return None
        if text is not None and not text.strip():
            raise PromptError("--prompt-text is empty: give a word or two (e.g. a name's spelling), or leave the "
                              "option out")
        audio = None
        if audio_path is not None:
            from kyutai_stt.streaming.audio import read_chunks
            chunks, total = [], 0
            for chunk in read_chunks(audio_path):       # AudioError names the file and the problem
                chunks.append(chunk)
                total += len(chunk)
                if total > MAX_AUDIO_SECONDS * 24000:
                    raise PromptError(f"{audio_path}: the audio prompt is longer than {MAX_AUDIO_SECONDS:g} s "
                                      "(a few words suffice: cut it)")
            audio = np.concatenate(chunks)
        return cls(text or "", audio)

    def lead_in(self, silence_prefix_samples: int) -> np.ndarray:
        """The samples fed before the caller's audio: silence prefix, prompt audio padded to whole frames,
        separator silence. float32 [n]."""
        prefix = np.zeros(silence_prefix_samples, np.float32)
        if self.audio is None:
            return prefix
        padded = -(-self.audio.size // FRAME_SIZE) * FRAME_SIZE
        return np.concatenate([prefix, self.audio, np.zeros(padded - self.audio.size + SEPARATOR_FRAMES * FRAME_SIZE,
                                                            np.float32)])

    def hidden_until(self, silence_prefix_samples: int) -> float:
        """Stream seconds before which a word belongs to the prompt audio: the middle of the separator."""
        if self.audio is None:
            return 0.0
        return (silence_prefix_samples + self.lead_in(0).size - SEPARATOR_FRAMES * FRAME_SIZE / 2) / 24000


def add_arguments(parser) -> None:
    """--prompt-text / --prompt-audio, shared by the transcribe and mic commands (Prompt.load reads them)."""
    parser.add_argument("--prompt-text", metavar="TEXT", default=None,
                        help="experimental: a spelling the model must write first (e.g. a name: \"Loonah\"); "
                             "very sensitive to the prompt")
    parser.add_argument("--prompt-audio", metavar="FILE", type=Path, default=None,
                        help="experimental: audio fed before each stream (e.g. someone saying the word of "
                             "--prompt-text); its words are not in the transcript")


def prompt_ids(prompt: Prompt | None, tokenizer, capacity: int, allowed_never=(0, 3)) -> list[int]:
    """The text prompt's token ids, or a PromptError saying what to change: too many ids for the plan's room, or
    characters that encode to a token the prompt rule can never emit (the official script would then stall)."""
    if prompt is None or not prompt.text:
        return []
    ids = tokenizer.encode(prompt.text)
    if not ids:
        raise PromptError("the text prompt encodes to no tokens: give a word or two")
    if len(ids) > capacity:
        raise PromptError(f"the text prompt is {len(ids)} tokens; this model takes at most {capacity}: shorten it")
    stuck = [i for i in ids if i in allowed_never]
    if stuck:
        raise PromptError(f"the text prompt has characters the model's tokenizer cannot write (token {stuck[0]}): "
                          "remove them")
    return ids
