"""The piece table and the SentencePiece-free detokeniser, checked against sentencepiece itself."""

import numpy as np
import pytest
import sentencepiece

from kyutai_stt.weights import synthetic
from kyutai_stt.weights.tokenizer import Tokenizer, TokenizerError, decode_utf8_bytes, read_sentencepiece


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.model"
    synthetic.write_tokenizer(path)
    return path


@pytest.fixture(scope="module")
def sp(model_path):
    return sentencepiece.SentencePieceProcessor(model_file=str(model_path))


@pytest.fixture(scope="module")
def tok(model_path):
    return read_sentencepiece(model_path)


def test_piece_table_and_special_ids_come_from_the_file(tok, sp):
    assert len(tok) == sp.get_piece_size() == 8000
    assert (tok.unk_id, tok.bos_id, tok.eos_id, tok.pad_id) == (sp.unk_id(), sp.bos_id(), sp.eos_id(), sp.pad_id())
    assert (tok.unk_id, tok.bos_id, tok.eos_id, tok.pad_id) == (0, 1, 2, 3)
    assert tok.control_ids == {1, 2, 3}
    assert tok.byte_ids == set(range(4, 260))
    assert all(tok.pieces[i] == sp.id_to_piece(i) for i in range(len(tok)))
    assert tok.byte_value(4 + 0xE6) == 0xE6


@pytest.mark.parametrize("text", ["Bonjour le monde, héllo 日本 ok", "  two  spaces", "l'été à Noël 🎉", ""])
def test_decode_inverts_encode(tok, sp, text):
    ids = sp.encode(text)
    assert tok.decode(ids) == sp.decode(ids)


def test_decode_equals_sentencepiece_on_random_ids(tok, sp):
    """Random mixes of control, unknown, byte (many of them parts of multi-byte characters) and ordinary pieces:
    leading spaces, byte runs broken by other pieces, invalid UTF-8."""
    rng = np.random.default_rng(0)
    utf8_parts = [4 + b for b in (0xE6, 0x97, 0xA5, 0xC3, 0xA9, 0xF0, 0x9F, 0x98, 0x80, 0xED, 0xA0, 0xC0, 0xF4)]
    for _ in range(2000):
        kinds = rng.integers(0, 4, rng.integers(0, 9))
        ids = [int(rng.integers(0, 4)) if k == 0 else int(rng.integers(4, 260)) if k == 1 else
               int(rng.choice(utf8_parts)) if k == 2 else int(rng.integers(260, 8000)) for k in kinds]
        assert tok.decode(ids) == sp.decode(ids), ids


def test_invalid_utf8_becomes_one_replacement_per_byte():
    assert decode_utf8_bytes("é日🎉".encode()) == "é日🎉"
    assert decode_utf8_bytes(b"\xe6\x97") == "\ufffd\ufffd"            # cut character
    assert decode_utf8_bytes(b"\xed\xa0\x80") == "\ufffd" * 3          # surrogate
    assert decode_utf8_bytes(b"\xc0\xafA") == "\ufffd\ufffdA"          # overlong


def test_manifest_round_trip(tok):
    again = Tokenizer.from_manifest(tok.to_manifest())
    assert again == tok
    assert again.decode([300, 0, 3, 301]) == tok.decode([300, 0, 3, 301])


def test_bad_manifest_and_ids(tok):
    raw = tok.to_manifest()
    with pytest.raises(TokenizerError, match="byte id 300"):
        Tokenizer.from_manifest({**raw, "byte_ids": [300]}, "pkg/manifest.json")
    with pytest.raises(TokenizerError, match="pkg/manifest.json: tokenizer: malformed"):
        Tokenizer.from_manifest({k: v for k, v in raw.items() if k != "pieces"}, "pkg/manifest.json")
    with pytest.raises(TokenizerError, match="token id 8000"):
        tok.decode([8000])


def test_not_a_sentencepiece_file(tmp_path):
    bad = tmp_path / "tok.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(TokenizerError, match="tok.model: not a SentencePiece model"):
        read_sentencepiece(bad)
    with pytest.raises(TokenizerError, match="not found"):
        read_sentencepiece(tmp_path / "missing.model")
