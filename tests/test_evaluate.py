"""`kyutai-stt eval` scoring, independently of the model: normalisation, WER against hand-computed values, dataset
discovery in both layouts, the report."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import fake_model
import pytest
from audio_helpers import sine, write_audio

from kyutai_stt import cli
from kyutai_stt.evaluation import DatasetError, Item, discover, evaluate, normalize, score, summary_line, table_row
from kyutai_stt.models.lm import MAX_STREAMS


@pytest.mark.parametrize("text, expected", [
    ("Hello, World!", "hello world"),
    ("DON'T STOP", "don't stop"),                                 # LibriSpeech references are upper case
    ("L’homme est là-bas.", "l'homme est là-bas"),               # curly apostrophe, accents kept
    ("Ça coûte cher, n'est-ce pas ?", "ça coûte cher n'est-ce pas"),
    ("'quoted' - dash -edge- a--b", "quoted dash edge a b"),      # only intra-word ' and - survive
    ("rock\u2010and\u2011roll", "rock-and-roll"),                 # Unicode hyphens become -
    ("It costs 3.5 € (20%)", "it costs 3 5 20"),                  # numbers stay as written; . and % go
    ("twenty 20 XX", "twenty 20 xx"),
    ("\ufb01ne \uff26\uff55\uff4c\uff4c", "fine full"),           # NFKC: ligature, full-width letters
    ("Cafe\u0301 STRASSE Straße", "café strasse strasse"),       # combining accent composed; casefold ß
    ("under_score / slash\ttab\nnewline", "under score slash tab newline"),
    ("   ", ""),
])
def test_normalize(text, expected):
    assert normalize(text) == expected


@pytest.mark.parametrize("ref, hyp, expected", [
    # ref_words, hits, substitutions, deletions, insertions (hand-aligned)
    ("the cat sat on the mat", "the cat sit on mat", (6, 4, 1, 1, 0)),    # sat->sit, one "the" deleted
    ("a b c", "a x b c d", (3, 3, 0, 0, 2)),                              # x and d inserted
    ("a b c d", "b c d e", (4, 3, 0, 1, 1)),                              # a deleted, e inserted
    ("one two three", "", (3, 0, 0, 3, 0)),
    ("", "extra words", (0, 0, 0, 0, 2)),
    ("Hello, world.", "HELLO WORLD", (2, 2, 0, 0, 0)),                    # normalisation: no error
    ("l'homme est là-bas", "l homme est la bas", (3, 1, 2, 0, 2)),       # ' and - inside words matter
])
def test_score_against_hand_alignments(ref, hyp, expected):
    s = score(ref, hyp)
    assert (s.ref_words, s.hits, s.substitutions, s.deletions, s.insertions) == expected
    assert s.errors == sum(expected[2:])
    assert s.wer == (s.errors / expected[0] if expected[0] else None)


def test_corpus_wer_is_total_errors_over_total_reference_words():
    a, b = score("the cat sat on the mat", "the cat sit on mat"), score("a b c", "a x b c d")
    total = a + b
    assert (total.ref_words, total.errors) == (9, 4)
    assert total.wer == pytest.approx(4 / 9)                    # not the mean of 2/6 and 2/3 (0.5)
    assert total.to_dict() == {"ref_words": 9, "hits": 7, "substitutions": 1, "deletions": 1, "insertions": 2,
                               "errors": 4, "wer": pytest.approx(4 / 9)}


def test_evaluate_report_with_a_fake_recogniser():
    items = [Item("a", Path("a.wav"), "the cat sat on the mat"), Item("b", Path("b.wav"), "a b c"),
             Item("c", Path("c.wav"), "")]
    answers = {"a.wav": ("The cat sit on mat.", 4.0, 1.0), "b.wav": ("a x b c d", 2.0, 1.5),
               "c.wav": ("noise", 1.0, 0.5)}
    seen = []
    report = evaluate(items, lambda p: answers[p.name], dataset="d", layout="simple", on_result=seen.append)
    assert [r.name for r in seen] == ["a", "b", "c"]
    summary = report.summary()
    assert (summary["files"], summary["ref_words"], summary["errors"], summary["insertions"]) == (3, 9, 5, 3)
    assert summary["wer"] == pytest.approx(5 / 9)
    assert summary["audio_s"] == 7.0 and summary["processing_s"] == 3.0
    assert summary["rtf"] == pytest.approx(3 / 7, abs=1e-5)
    files = report.to_dict()["files"]
    assert [f["wer"] for f in files] == [pytest.approx(2 / 6), pytest.approx(2 / 3), None]
    assert [f["rtf"] for f in files] == [0.25, 0.75, 0.5]
    assert files[0]["hypothesis_normalized"] == "the cat sit on mat"
    assert "WER 55.56% (5 errors / 9 reference words: 1 substitutions, 1 deletions, 3 insertions)" in \
        summary_line(report)
    assert "33.33%" in table_row(report.files[0]) and "n/a" in table_row(report.files[2])


# ---- discovery -------------------------------------------------------------------------------------------------

def librispeech(root: Path, chapters: dict[str, dict[str, str]]) -> Path:
    for chapter_id, lines in chapters.items():
        speaker, chapter = chapter_id.split("-")
        folder = root / speaker / chapter
        folder.mkdir(parents=True)
        (folder / f"{chapter_id}.trans.txt").write_text("".join(f"{uid} {text}\n" for uid, text in lines.items()))
        for uid in lines:
            (folder / f"{uid}.flac").write_bytes(b"fLaC")       # discovery does not decode
    return root


def test_discover_librispeech(tmp_path):
    root = librispeech(tmp_path / "test-clean", {
        "61-70968": {"61-70968-0001": "GIVE NOT SO EARNEST A MIND", "61-70968-0000": "HE BEGAN A CONFUSED"},
        "1089-134686": {"1089-134686-0000": "HE HOPED THERE WOULD BE STEW"}})
    layout, items = discover(root)
    assert layout == "librispeech"
    assert [i.name for i in items] == ["1089-134686-0000", "61-70968-0000", "61-70968-0001"]
    assert items[1].reference == "HE BEGAN A CONFUSED"
    assert items[1].audio == root / "61" / "70968" / "61-70968-0000.flac"


def test_librispeech_line_without_audio(tmp_path):
    root = librispeech(tmp_path / "ls", {"1-2": {"1-2-0000": "A", "1-2-0001": "B"}})
    (root / "1" / "2" / "1-2-0001.flac").unlink()
    with pytest.raises(DatasetError, match=r"1 transcript line\(s\) have no audio file.*1-2.trans.txt:2 \(1-2-0001\)"):
        discover(root)


def test_librispeech_audio_without_a_line(tmp_path):
    root = librispeech(tmp_path / "ls", {"1-2": {"1-2-0000": "A"}})
    (root / "1" / "2" / "1-2-0007.flac").write_bytes(b"fLaC")
    with pytest.raises(DatasetError, match=r"1 audio file\(s\) have no transcript line.*1/2/1-2-0007.flac"):
        discover(root)


def test_discover_simple_layout(tmp_path):
    (tmp_path / "sub").mkdir()
    for name, text in [("b.wav", "bonjour"), ("a.mp3", "hello there"), ("sub/c.flac", "deep\n")]:
        (tmp_path / name).write_bytes(b"x")
        (tmp_path / name).with_suffix(".txt").write_text(text)
    (tmp_path / "README.md").write_text("not part of it")
    layout, items = discover(tmp_path)
    assert layout == "simple"
    assert [(i.name, i.reference) for i in items] == [("a.mp3", "hello there"), ("b.wav", "bonjour"),
                                                      ("sub/c.flac", "deep")]


def test_simple_layout_lists_audio_without_transcript(tmp_path):
    for name in ["a.wav", "b.wav", "c.ogg"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "a.txt").write_text("ok")
    with pytest.raises(DatasetError, match=r"2 audio file\(s\) have no transcript \(name.txt beside name.<ext>\): "
                                           r"b.wav, c.ogg$"):
        discover(tmp_path)


def test_folder_with_neither_layout(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match=r"no dataset here: expected the LibriSpeech layout .* or audio files "
                                           r"with a transcript of the same name"):
        discover(tmp_path)


def test_missing_folder_and_a_file_instead_of_a_folder(tmp_path):
    with pytest.raises(DatasetError, match="no such folder"):
        discover(tmp_path / "nope")
    (tmp_path / "f.wav").write_bytes(b"x")
    with pytest.raises(DatasetError, match="not a folder"):
        discover(tmp_path / "f.wav")


# ---- the command ---------------------------------------------------------------------------------------------------

def tone_dataset(root: Path) -> Path:
    """Two clips the fake recogniser hears as "440hz 440hz" and "1000hz", with references chosen so that the
    errors are known: a: none; b: "1000hz" against "1000hz extra words" = 2 deletions. Corpus WER 2/5."""
    root.mkdir()
    write_audio(root / "a.flac", sine(440, 16000, 2.0), 16000, "flac")
    (root / "a.txt").write_text("440HZ, 440hz.")
    write_audio(root / "b.wav", sine(1000, 44100, 1.0), 44100, "wav16")
    (root / "b.txt").write_text("1000hz extra words")
    return root


def test_eval_command_with_a_fake_recogniser(tmp_path, capsys, monkeypatch):
    fake = fake_model.install(monkeypatch)
    root, pkg, report = tone_dataset(tmp_path / "data"), tmp_path / "pkg", tmp_path / "report.json"
    pkg.mkdir()
    assert cli.main(["eval", str(root), "--model", str(pkg), "--output", str(report)]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split() == ["file", "words", "sub", "del", "ins", "WER", "audio", "s", "RTF"]
    assert lines[1].split()[:6] == ["a.flac", "2", "0", "0", "0", "0.00%"]
    assert lines[2].split()[:6] == ["b.wav", "3", "0", "2", "0", "66.67%"]
    assert lines[3].startswith("WER 40.00% (2 errors / 5 reference words: 0 substitutions, 2 deletions, "
                               "0 insertions) over 2 files, 3.0 s of audio; RTF ")
    assert "synthetic package" in err and "WER is meaningless" in err
    doc = json.loads(report.read_text())
    assert doc["layout"] == "simple" and doc["synthetic"] is True and doc["model"]["package"] == str(pkg)
    assert doc["summary"]["wer"] == pytest.approx(0.4) and doc["summary"]["audio_s"] == 3.0
    assert [f["hypothesis"] for f in doc["files"]] == ["440hz 440hz", "1000hz"]
    assert doc["files"][1]["reference_normalized"] == "1000hz extra words"
    assert fake.instances[0].resets >= 2

    assert cli.main(["eval", str(root), "--model", str(pkg), "--limit", "1"]) == 0
    assert "over 1 files" in capsys.readouterr().out


def test_eval_batch_gives_the_same_report_rows_and_shares_the_wall_time(tmp_path, capsys, monkeypatch):
    fake = fake_model.install(monkeypatch)
    root, pkg, report = tone_dataset(tmp_path / "data"), tmp_path / "pkg", tmp_path / "report.json"
    pkg.mkdir()
    assert cli.main(["eval", str(root), "--model", str(pkg), "--output", str(report), "--batch", "8",
                     "--kv-rings", "int8"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:6] for line in out[1:3]] == [["a.flac", "2", "0", "0", "0", "0.00%"],
                                                       ["b.wav", "3", "0", "2", "0", "66.67%"]]
    (batch,) = fake_model.FakeBatchTranscriber.instances
    assert batch.streams == 2 and fake.instances == [batch.transcriber]     # min(--batch, files)
    assert batch.transcriber.kv_rings == "int8"
    files = json.loads(report.read_text())["files"]
    assert [f["hypothesis"] for f in files] == ["440hz 440hz", "1000hz"]
    assert files[0]["rtf"] == pytest.approx(files[1]["rtf"], rel=1e-3)       # the batch's, shared by audio
    for bad in ("0", str(MAX_STREAMS + 1)):
        assert cli.main(["eval", str(root), "--model", str(pkg), "--batch", bad]) == 2
        assert f"--batch {bad}: from 1 to {MAX_STREAMS}" in capsys.readouterr().err


@pytest.mark.parametrize("setup, message", [
    (lambda d: None, "no dataset here"),
    (lambda d: (d / "x.wav").write_bytes(b"RIFF"), "1 audio file(s) have no transcript"),
    (lambda d: ((d / "x.mp3").write_text("text"), (d / "x.txt").write_text("hi")), "x.mp3: not an audio file"),
])
def test_eval_command_bad_datasets(tmp_path, capsys, monkeypatch, setup, message):
    fake = fake_model.install(monkeypatch)
    root = tmp_path / "d"
    root.mkdir()
    setup(root)
    assert cli.main(["eval", str(root), "--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kyutai-stt eval: error: ") and message in err and "Traceback" not in err
    assert fake.instances == []


def test_eval_command_on_the_tiny_package(tmp_path, tiny_packages):
    """The real command end to end (the synthetic model's WER itself means nothing)."""
    root, report = tone_dataset(tmp_path / "data"), tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "kyutai_stt.cli", "eval", str(root), "--model",
                           str(tiny_packages("q4").root), "--output", str(report), "--silence-prefix", "0",
                           "--limit", "1"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(report.read_text())
    assert doc["synthetic"] is True and doc["summary"]["files"] == 1 and doc["summary"]["ref_words"] == 2
    assert doc["summary"]["audio_s"] == pytest.approx(2.0, abs=0.01) and doc["summary"]["rtf"] > 0
    assert "WER is meaningless" in proc.stderr


@pytest.mark.parametrize("victim", ["a.txt", "b.wav"])
def test_eval_output_is_never_a_dataset_file(tmp_path, capsys, monkeypatch, victim):
    """--output naming one of the dataset's files (a transcript, a recording) is refused before the model loads,
    and the file is left as it was."""
    fake = fake_model.install(monkeypatch)
    root = tone_dataset(tmp_path / "data")
    before = (root / victim).read_bytes()
    assert cli.main(["eval", str(root), "--model", str(tmp_path), "--output", str(root / victim)]) == 2
    err = capsys.readouterr().err
    assert "is the input file" in err and "Traceback" not in err
    assert (root / victim).read_bytes() == before and fake.instances == []
