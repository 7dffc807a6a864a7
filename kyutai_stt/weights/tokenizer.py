"""The text tokenizer as a plain piece table, and a detokeniser that needs no SentencePiece.

The converter reads the official SentencePiece model once and stores its pieces (ids are list indices), the special
ids and which ids are byte pieces in the package manifest. Decoding follows SentencePiece's DecodeIds exactly
(tests/test_tokenizer.py checks it against sentencepiece on random id sequences):
  - control pieces (<s>, </s>, <pad>) decode to nothing; the unknown piece to " ⁇ ";
  - runs of byte pieces <0xHH> are joined and read as UTF-8, each byte that does not start a valid sequence
    becoming U+FFFD;
  - '▁' becomes a space, except that one leading '▁' is dropped while the text is still empty.
The browser engine implements the same few rules from the same manifest fields.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kyutai_stt.errors import UserError

SPACE = "\u2581"                  # '▁': SentencePiece's visible space
UNK_SURFACE = " \u2047 "          # SentencePiece's default text for the unknown piece
REPLACEMENT = "\ufffd"


class TokenizerError(UserError, ValueError):
    pass


@dataclass(frozen=True)
class Tokenizer:
    pieces: tuple[str, ...]            # piece text by id
    unk_id: int
    bos_id: int                        # -1 where the model has none
    eos_id: int
    pad_id: int
    control_ids: frozenset[int]        # decode to ""
    byte_ids: frozenset[int]           # pieces "<0xHH>": one raw byte each
    strip_leading_space: bool = True   # drop the first '▁' of the text (add_dummy_prefix)
    unk_surface: str = UNK_SURFACE

    def __len__(self) -> int:
        return len(self.pieces)

    def byte_value(self, token_id: int) -> int:
        return int(self.pieces[token_id][3:5], 16)

    def decode(self, ids: Iterable[int]) -> str:
        """Token ids -> text, as sentencepiece's decode(ids)."""
        text: list[str] = []
        pending = bytearray()            # a run of byte pieces, decoded when the run ends
        for token_id in ids:
            if not 0 <= token_id < len(self.pieces):
                raise TokenizerError(f"token id {token_id} is outside the vocabulary (0..{len(self.pieces) - 1})")
            if token_id in self.byte_ids:
                pending.append(self.byte_value(token_id))
                continue
            if pending:
                text.append(decode_utf8_bytes(bytes(pending)))
                pending.clear()
            if token_id in self.control_ids:
                continue
            if token_id == self.unk_id:
                text.append(self.unk_surface)
                continue
            piece = self.pieces[token_id]
            if self.strip_leading_space and not any(text) and piece.startswith(SPACE):
                piece = piece[1:]
            text.append(piece.replace(SPACE, " "))
        if pending:
            text.append(decode_utf8_bytes(bytes(pending)))
        return "".join(text)

    def to_manifest(self) -> dict:
        return {
            "pieces": list(self.pieces), "unk_id": self.unk_id, "bos_id": self.bos_id, "eos_id": self.eos_id,
            "pad_id": self.pad_id, "control_ids": sorted(self.control_ids), "byte_ids": sorted(self.byte_ids),
            "strip_leading_space": self.strip_leading_space, "unk_surface": self.unk_surface,
        }

    @classmethod
    def from_manifest(cls, raw: dict, source: str = "manifest.json") -> Tokenizer:
        try:
            pieces = tuple(raw["pieces"])
            tok = cls(pieces=pieces, unk_id=int(raw["unk_id"]), bos_id=int(raw["bos_id"]),
                      eos_id=int(raw["eos_id"]), pad_id=int(raw["pad_id"]),
                      control_ids=frozenset(int(i) for i in raw["control_ids"]),
                      byte_ids=frozenset(int(i) for i in raw["byte_ids"]),
                      strip_leading_space=bool(raw["strip_leading_space"]), unk_surface=str(raw["unk_surface"]))
        except (KeyError, TypeError, ValueError) as e:
            raise TokenizerError(f"{source}: tokenizer: malformed or missing field ({e!r})") from None
        tok.check(source)
        return tok

    def check(self, source: str) -> None:
        if not all(isinstance(p, str) for p in self.pieces):
            raise TokenizerError(f"{source}: tokenizer: every piece must be a string")
        for i in self.byte_ids:
            if not (0 <= i < len(self.pieces) and _is_byte_piece(self.pieces[i])):
                raise TokenizerError(f"{source}: tokenizer: byte id {i} is not a <0xHH> piece")
        for i in (self.unk_id, *self.control_ids):
            if not 0 <= i < len(self.pieces):
                raise TokenizerError(f"{source}: tokenizer: special id {i} is outside the vocabulary")


def decode_utf8_bytes(data: bytes) -> str:
    """UTF-8 as SentencePiece reads byte pieces: a valid sequence becomes its character, and every byte that does
    not start one becomes U+FFFD on its own (Python's errors='replace' would merge some of them)."""
    out, i = [], 0
    while i < len(data):
        lead = data[i]
        length = 1 if lead < 0x80 else 2 if 0xC2 <= lead <= 0xDF else 3 if 0xE0 <= lead <= 0xEF else \
            4 if 0xF0 <= lead <= 0xF4 else 0
        try:
            out.append(data[i:i + length].decode("utf-8") if length and i + length <= len(data) else None)
        except UnicodeDecodeError:
            out.append(None)
        if out[-1] is None:                   # strict decoding rejects overlong forms, surrogates, > U+10FFFF
            out[-1], length = REPLACEMENT, 1
        i += length
    return "".join(out)


def _is_byte_piece(piece: str) -> bool:
    return len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">") and \
        all(c in "0123456789ABCDEF" for c in piece[3:5])


def read_sentencepiece(path: str | Path) -> Tokenizer:
    """The piece table and special ids of a SentencePiece model file, read through sentencepiece itself."""
    import sentencepiece
    from sentencepiece import sentencepiece_model_pb2

    path = Path(path)
    if not path.is_file():
        raise TokenizerError(f"{path}: tokenizer file not found")
    try:
        sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
    except (RuntimeError, OSError) as e:
        raise TokenizerError(f"{path}: not a SentencePiece model ({e})") from None
    try:
        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString(sp.serialized_model_proto())
        size = sp.get_piece_size()
        pieces = tuple(sp.id_to_piece(i) for i in range(size))
    except (RuntimeError, ValueError) as e:                 # a piece that is not UTF-8 (UnicodeDecodeError), ...
        raise TokenizerError(f"{path}: damaged SentencePiece model ({type(e).__name__}: {str(e)[:120]})") from None
    if proto.trainer_spec.treat_whitespace_as_suffix:      # '▁' would end pieces instead of starting them
        raise TokenizerError(f"{path}: unsupported SentencePiece option treat_whitespace_as_suffix")
    byte_ids = frozenset(i for i in range(size) if sp.is_byte(i))
    bad = [pieces[i] for i in byte_ids if not _is_byte_piece(pieces[i])]
    if bad:
        raise TokenizerError(f"{path}: byte pieces not of the form <0xHH>: {bad[:3]}")
    spec = proto.normalizer_spec
    return Tokenizer(
        pieces=pieces, unk_id=sp.unk_id(), bos_id=sp.bos_id(), eos_id=sp.eos_id(), pad_id=sp.pad_id(),
        control_ids=frozenset(i for i in range(size) if sp.is_control(i)), byte_ids=byte_ids,
        strip_leading_space=bool(spec.add_dummy_prefix or spec.remove_extra_whitespaces))
