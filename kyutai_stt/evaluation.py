"""Word error rate and real-time factor of a model on a folder of audio files with reference transcripts (the
library of `kyutai-stt eval`). docs/eval.md documents the layouts, the text normalisation and the report.

Two layouts are recognised:
  LibriSpeech  <speaker>/<chapter>/<speaker>-<chapter>.trans.txt, lines "ID TEXT", audio ID.flac beside it
               (any file holding a *.trans.txt selects this layout)
  simple       name.<audio extension> + name.txt (the reference) in the same folder, at any depth

The scoring (normalize, score, Totals) and the report are independent of the model: `evaluate` takes any
function mapping an audio path to (hypothesis text, audio seconds, processing seconds).
"""
from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kyutai_stt.errors import UserError
from kyutai_stt.streaming.audio import AUDIO_EXTENSIONS

LIBRISPEECH_SUFFIX = ".trans.txt"
APOSTROPHES = "'\u2019\u2018\u02bc\u2032`"     # ' ’ ‘ ʼ ′ `  -> '
HYPHENS = "-\u2010\u2011"                      # - ‐ ‑        -> -
NORMALIZATION = ("NFKC, casefold, accents kept; apostrophes and hyphens kept inside words only; every other "
                 "character that is not a letter, digit or combining mark becomes a space; whitespace collapsed; "
                 "numbers, abbreviations and spellings left as written")
MAX_LISTED = 20                                # files named in a "missing transcript" error


class DatasetError(UserError):
    pass


# ---- text normalisation and scoring ---------------------------------------------------------------------------

def normalize(text: str) -> str:
    """The text compared by WER: see NORMALIZATION (and docs/eval.md, which gives examples)."""
    t = unicodedata.normalize("NFKC", text).casefold()
    chars = []
    for c in t:
        if c in APOSTROPHES:
            chars.append("'")
        elif c in HYPHENS:
            chars.append("-")
        elif unicodedata.category(c)[0] in "LNM":
            chars.append(c)
        else:
            chars.append(" ")
    words = []
    for token in "".join(chars).split():
        # an apostrophe or hyphen survives only between two word characters: "l'homme", "rock-and-roll"
        kept = []
        for i, c in enumerate(token):
            if c in "'-" and not (0 < i < len(token) - 1 and token[i - 1] not in "'-" and token[i + 1] not in "'-"):
                kept.append(" ")
            else:
                kept.append(c)
        words.extend("".join(kept).split())
    return " ".join(words)


@dataclass
class Score:
    ref_words: int = 0
    hits: int = 0
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float | None:
        """errors / reference words; None when the reference has no words (WER is undefined)."""
        return self.errors / self.ref_words if self.ref_words else None

    def __add__(self, other: Score) -> Score:
        return Score(*(getattr(self, f) + getattr(other, f)
                       for f in ("ref_words", "hits", "substitutions", "deletions", "insertions")))

    def to_dict(self) -> dict:
        return {**asdict(self), "errors": self.errors, "wer": self.wer}


def score(reference: str, hypothesis: str) -> Score:
    """Word-level Levenshtein alignment (jiwer) of the *normalised* texts."""
    import jiwer

    ref, hyp = normalize(reference), normalize(hypothesis)
    n_ref, n_hyp = len(ref.split()), len(hyp.split())
    if n_ref == 0 or n_hyp == 0:          # jiwer rejects empty references; the alignment is trivial anyway
        return Score(n_ref, 0, 0, n_ref, n_hyp)
    out = jiwer.process_words(ref, hyp)
    return Score(n_ref, out.hits, out.substitutions, out.deletions, out.insertions)


# ---- datasets -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Item:
    name: str            # utterance id (LibriSpeech) or the audio path relative to the dataset folder
    audio: Path
    reference: str


def dataset_files(items: list[Item]) -> list[Path]:
    """The files a dataset's items were read from: each audio file and the transcripts beside it (name.txt, or the
    chapter's *.trans.txt)."""
    files = {}
    for item in items:
        files[item.audio] = None
        if item.audio.with_suffix(".txt").is_file():
            files[item.audio.with_suffix(".txt")] = None
    for folder in {item.audio.parent for item in items}:         # each chapter's transcripts, listed once
        files.update(dict.fromkeys(folder.glob("*" + LIBRISPEECH_SUFFIX)))
    return list(files)


def _listing(names: list[str]) -> str:
    names = sorted(names)
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f", ... ({len(names) - MAX_LISTED} more)" if len(names) > MAX_LISTED else "")


def _audio_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not UTF-8 text; save the transcript as UTF-8") from None
    except OSError as e:
        raise DatasetError(f"{path}: cannot read it ({e.strerror or e})") from None


def discover(dataset_dir) -> tuple[str, list[Item]]:
    """(layout, items sorted by name); DatasetError when the folder is not a dataset or is incomplete."""
    root = Path(dataset_dir)
    if not root.exists():
        raise DatasetError(f"{root}: no such folder")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder; give the folder holding the dataset")
    audio = _audio_files(root)
    trans = sorted(root.rglob("*" + LIBRISPEECH_SUFFIX))
    if trans:
        return "librispeech", _librispeech(root, trans, audio)
    if not audio:
        raise DatasetError(
            f"{root}: no dataset here: expected the LibriSpeech layout (<speaker>/<chapter>/"
            f"<speaker>-<chapter>.trans.txt with lines 'ID TEXT' and ID.flac beside it) or audio files with a "
            f"transcript of the same name (name.wav + name.txt)")
    items, missing = [], []
    for path in audio:
        txt = path.with_suffix(".txt")
        if not txt.is_file():
            missing.append(path)
            continue
        items.append(Item(str(path.relative_to(root)), path, _read_text(txt).strip()))
    if missing:
        names = [str(p.relative_to(root)) for p in missing]
        raise DatasetError(f"{root}: {len(missing)} audio file(s) have no transcript (name.txt beside "
                           f"name.<ext>): {_listing(names)}")
    return "simple", items


def _librispeech(root: Path, trans: list[Path], audio: list[Path]) -> list[Item]:
    by_stem: dict[tuple[Path, str], Path] = {}
    for path in audio:
        by_stem.setdefault((path.parent, path.stem), path)
    items, no_audio, used = [], [], set()
    for tfile in trans:
        for lineno, line in enumerate(_read_text(tfile).splitlines(), 1):
            if not line.strip():
                continue
            parts = line.strip().split(maxsplit=1)
            uid, text = parts[0], (parts[1] if len(parts) > 1 else "")
            path = by_stem.get((tfile.parent, uid))
            if path is None:
                no_audio.append(f"{tfile.relative_to(root)}:{lineno} ({uid})")
                continue
            used.add(path)
            items.append(Item(uid, path, text))
    if no_audio:
        raise DatasetError(f"{root}: {len(no_audio)} transcript line(s) have no audio file (ID.flac beside the "
                           f".trans.txt): {_listing(no_audio)}")
    orphans = [p for p in audio if p not in used]
    if orphans:
        names = [str(p.relative_to(root)) for p in orphans]
        raise DatasetError(f"{root}: {len(orphans)} audio file(s) have no transcript line in a "
                           f"*{LIBRISPEECH_SUFFIX} of their folder: {_listing(names)}")
    return sorted(items, key=lambda it: it.name)


# ---- evaluation -----------------------------------------------------------------------------------------------

@dataclass
class FileResult:
    name: str
    audio: str
    reference: str
    hypothesis: str
    score: Score
    audio_s: float
    processing_s: float

    @property
    def rtf(self) -> float | None:
        return self.processing_s / self.audio_s if self.audio_s > 0 else None

    def to_dict(self) -> dict:
        return {"name": self.name, "audio": self.audio, "reference": self.reference, "hypothesis": self.hypothesis,
                "reference_normalized": normalize(self.reference),
                "hypothesis_normalized": normalize(self.hypothesis),
                **self.score.to_dict(), "audio_s": round(self.audio_s, 3),
                "processing_s": round(self.processing_s, 4),
                "rtf": None if self.rtf is None else round(self.rtf, 5)}


@dataclass
class Report:
    dataset: str
    layout: str
    files: list[FileResult] = field(default_factory=list)
    model: dict = field(default_factory=dict)
    synthetic: bool = False

    @property
    def total(self) -> Score:
        return sum((f.score for f in self.files), Score())

    @property
    def audio_s(self) -> float:
        return sum(f.audio_s for f in self.files)

    @property
    def processing_s(self) -> float:
        return sum(f.processing_s for f in self.files)

    @property
    def rtf(self) -> float | None:
        return self.processing_s / self.audio_s if self.audio_s > 0 else None

    def summary(self) -> dict:
        return {"files": len(self.files), **self.total.to_dict(), "audio_s": round(self.audio_s, 3),
                "processing_s": round(self.processing_s, 3),
                "rtf": None if self.rtf is None else round(self.rtf, 5)}

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "layout": self.layout, "normalization": NORMALIZATION,
                "model": self.model, "synthetic": self.synthetic, "summary": self.summary(),
                "files": [f.to_dict() for f in self.files]}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


TABLE_HEADER = f"{'file':<40} {'words':>6} {'sub':>5} {'del':>5} {'ins':>5} {'WER':>8} {'audio s':>9} {'RTF':>7}"


def table_row(f: FileResult) -> str:
    s = f.score
    name = f.name if len(f.name) <= 40 else "..." + f.name[-37:]
    rtf = "n/a" if f.rtf is None else f"{f.rtf:.3f}"
    return (f"{name:<40} {s.ref_words:>6} {s.substitutions:>5} {s.deletions:>5} {s.insertions:>5} "
            f"{_pct(s.wer):>8} {f.audio_s:>9.2f} {rtf:>7}")


def summary_line(report: Report) -> str:
    t = report.total
    rtf = "n/a" if report.rtf is None else f"{report.rtf:.3f}"
    return (f"WER {_pct(t.wer)} ({t.errors} errors / {t.ref_words} reference words: {t.substitutions} "
            f"substitutions, {t.deletions} deletions, {t.insertions} insertions) over {len(report.files)} "
            f"files, {report.audio_s:.1f} s of audio; RTF {rtf} ({report.processing_s:.1f} s processing)")


def evaluate(items: list[Item], transcribe: Callable[[Path], tuple[str, float, float]], *, dataset: str = "",
             layout: str = "", model: dict | None = None, synthetic: bool = False,
             on_result: Callable[[FileResult], None] | None = None) -> Report:
    """Score every item; transcribe(audio path) -> (hypothesis, audio seconds, processing seconds)."""
    report = Report(dataset, layout, model=model or {}, synthetic=synthetic)
    for item in items:
        hypothesis, audio_s, processing_s = transcribe(item.audio)
        result = FileResult(item.name, str(item.audio), item.reference, hypothesis,
                            score(item.reference, hypothesis), audio_s, processing_s)
        report.files.append(result)
        if on_result:
            on_result(result)
    return report
