"""Fuzzing (issue 12): damaged model packages and checkpoints, from fixed seeds (the same mutants every run).

Each mutant must end in a clear error (a UserError: the CLI prints it in one line, exit 2) or a correct result (the
package opens and holds exactly what its manifest claims); no file may appear outside the target, and nothing
half-written may remain. Package mutants go through open_package (the API every command uses), checkpoint mutants
through convert(); a sample of each goes through the real command line. The browser loader's name checks run in
Chromium (tests/web/test_package_loader.py). A mutant that breaks the rule is reported with its label, so that it
can be replayed from the seed.
"""
from __future__ import annotations

import copy
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import traceback
from pathlib import Path

from kyutai_stt.errors import UserError
from kyutai_stt.weights import package
from kyutai_stt.weights.convert import convert
from kyutai_stt.weights.package import MANIFEST, open_package

PACKAGE_SEED = 12
CHECKPOINT_SEED = 1212
MANIFEST_MUTANTS = 1000
SHARD_MUTANTS = 40
CHECKPOINT_MUTANTS = 220
NAMES = json.loads((Path(__file__).resolve().parent / "vectors" / "file_names.json").read_text())
BAD_NAMES = NAMES["refused"] + ["/tmp/kyutai-stt-fuzz", "../" * 8 + "tmp/x", "file:///etc/passwd", "a" * 5000]
ODD_VALUES = [None, True, False, 0, -1, 1.5, -2**63, 2**64, 1e308, "", "x", "a" * 100_000, [], [1, [2]], {},
              {"a": {"b": None}}]
DEEP, DIGITS = "@@DEEP@@", "@@DIGITS@@"       # placeholders, replaced in the JSON text


def tree_of(root: Path) -> dict[str, int]:
    """Every path under root (links not followed) -> size, to prove nothing appeared or changed."""
    return {str(p.relative_to(root)): p.lstat().st_size for p in root.rglob("*")}


class Outcomes:
    """Counts per outcome; records every mutant that broke the rule (an unexpected exception, a wrong result)."""

    def __init__(self):
        self.counts: dict[str, int] = {}
        self.broken: list[str] = []

    def run(self, label: str, attempt, correct) -> None:
        try:
            result = attempt()
        except UserError as e:
            kind = "refused"
            if not str(e).strip():
                self.broken.append(f"{label}: empty message")
        except Exception as e:                       # noqa: BLE001 - exactly what the fuzzer looks for
            kind = "crashed"
            self.broken.append(f"{label}: {type(e).__name__}: {str(e)[:200]}\n"
                               + "".join(traceback.format_exc().splitlines(True)[-4:]))
        else:
            kind = "accepted"
            problem = correct(result)
            if problem:
                self.broken.append(f"{label}: accepted but {problem}")
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def check(self, total: int) -> None:
        print(f"{total} mutants: {self.counts}")
        assert sum(self.counts.values()) == total
        assert not self.broken, f"{len(self.broken)} mutants broke the rule:\n" + "\n".join(self.broken[:20])


# ---- package mutants ------------------------------------------------------------------------------------------------
def _paths(value, prefix=()):
    """Every path into a manifest (long lists, e.g. the tokenizer's pieces: the list and its first elements)."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value[:3]):
            yield from _paths(v, prefix + (i,))


def _at(obj, path):
    for key in path:
        obj = obj[key]
    return obj


PIECES = "@@PIECES@@"


class ManifestText:
    """The manifest's text split for speed: the tokenizer's pieces (most of the bytes) are parsed and serialised
    once, and spliced back into each mutant's text unless the mutant changes them."""

    def __init__(self, text: str):
        full = json.loads(text)
        self.pieces = full["tokenizer"]["pieces"]
        self.pieces_text = json.dumps(self.pieces, ensure_ascii=False)
        full["tokenizer"]["pieces"] = PIECES
        self.rest = json.dumps(full, ensure_ascii=False)

    def copy(self, path: tuple) -> dict:
        m = json.loads(self.rest)
        if path[:2] == ("tokenizer", "pieces") and len(path) > 2:
            m["tokenizer"]["pieces"] = list(self.pieces)
        return m

    def text(self, m: dict) -> str:
        return json.dumps(m, ensure_ascii=False).replace(f'"{PIECES}"', self.pieces_text, 1)


def manifest_mutant(original: ManifestText, paths: list[tuple], rng: random.Random) -> tuple[str, bytes | str]:
    """(label, manifest.json bytes, or 'directory' / 'fifo' / 'devzero' / 'dangling' for a special file)."""
    op = rng.choice(["delete", "retype", "retype", "number", "huge", "nested", "name", "name", "text", "special"])
    path = rng.choice(paths[1:])
    m = original.copy(path)
    parent, key = _at(m, path[:-1]), path[-1]
    value = parent[key] if not (path == ("tokenizer", "pieces")) else original.pieces
    label = f"{op} {'.'.join(map(str, path))[:80]}"
    if op == "delete":
        del parent[key]
    elif op == "retype":
        parent[key] = rng.choice(ODD_VALUES)
    elif op == "number":
        base = value if isinstance(value, int) and not isinstance(value, bool) else 1
        parent[key] = rng.choice([-base, base - 1, base + 1, base * 2**20, -2**31, 2**53 + 1, 2**80])
    elif op == "huge":
        parent[key] = rng.choice([DIGITS, "€" * 70_000]) if not isinstance(value, list) else value * 40
        if path == ("tokenizer", "pieces"):
            label += " (pieces x 40)"
    elif op == "nested":
        parent[key] = DEEP
    elif op == "name":
        i = rng.randrange(len(m["files"]))
        bad = rng.choice(BAD_NAMES)
        if rng.random() < 0.5:
            m["files"][i]["name"], label = bad, f"name files[{i}] = {bad[:40]!r}"
        else:
            tensor = rng.choice(list(m["tensors"]))
            stream = rng.choice(list(m["tensors"][tensor]["streams"]))
            m["tensors"][tensor]["streams"][stream]["file"] = bad
            label = f"name {tensor}.{stream}.file = {bad[:40]!r}"
    elif op == "special":
        kind = rng.choice(["directory", "fifo", "devzero", "dangling"])
        return f"special {kind}", kind
    text = original.text(m)
    text = text.replace(f'"{DEEP}"', "[" * 100_000 + "]" * 100_000).replace(f'"{DIGITS}"', "9" * 5000)
    data = text.encode("utf-8")
    if op == "text":
        how = rng.choice(["cut", "flip", "invalid utf-8", "empty", "nan"])
        label = f"text {how}"
        if how == "cut":
            data = data[:rng.randrange(len(data))]
        elif how == "flip":
            b = bytearray(data)
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            data = bytes(b)
        elif how == "invalid utf-8":
            at = rng.randrange(len(data))
            data = data[:at] + b"\xff\xfe" + data[at:]
        elif how == "empty":
            data = b""
        else:
            data = data.replace(b'"total_bytes": ', b'"total_bytes": NaN, "x": ', 1)
    return label, data


def _place_manifest(root: Path, content) -> None:
    target = root / MANIFEST
    if target.is_dir() and not target.is_symlink():
        target.rmdir()
    elif target.exists() or target.is_symlink():
        target.unlink()
    if content == "directory":
        target.mkdir()
    elif content == "fifo":
        os.mkfifo(target)
    elif content == "devzero":
        target.symlink_to("/dev/zero")
    elif content == "dangling":
        target.symlink_to(root / "nowhere")
    else:
        target.write_bytes(content)


def _without_crc(tensors: dict) -> dict:
    return {n: {**t, "streams": {k: {f: v for f, v in s.items() if f != "crc32"} for k, s in t["streams"].items()}}
            for n, t in tensors.items()}


def _same_as_claimed(original: dict, source: Path):
    """An accepted mutant is correct when it is read as written and differs from the original only where the
    engine does not look: official config keys it ignores (depformer_*, conditioners, lm_gen_config, model_id),
    created_by, synthetic, and the per-stream crc32 (only used to name a damaged tensor; the SHA-256 of the file
    is what is checked)."""
    from kyutai_stt.config import LMConfig

    def engine_view(m: dict):
        lm = LMConfig.from_official_json(m["config"]["lm"])
        return (m["files"], _without_crc(m["tensors"]), m["config"]["mimi"], m["config"]["derived"], m["variant"],
                {**lm.__dict__, "lm_gen_config": None, "model_id": None})

    def correct(pkg) -> str | None:
        claimed = json.loads(source.read_text())
        if pkg.manifest != claimed:
            return "the opened manifest is not the file's"
        if engine_view(claimed) != engine_view(original):
            return "a changed file list, tensor table or config was accepted"
        return None
    return correct


def test_package_mutants_through_the_api(tmp_path, tiny_packages):
    """1000 manifest mutants (fields deleted, retyped, huge, negative, nested; names with separators, '..',
    absolute paths, URLs; damaged text; the manifest a directory, a FIFO, /dev/zero) and 40 shard mutants
    (bytes flipped, flipped with the SHA-256 made to match, truncated, appended, blocks swapped)."""
    src = tiny_packages("q4")
    original_text = (src.root / MANIFEST).read_text()
    original = json.loads(original_text)
    root = tmp_path / "pkg"
    root.mkdir()
    shard_name = original["files"][0]["name"]
    os.link(src.root / shard_name, root / shard_name)      # manifest mutants never write the shard
    rng = random.Random(PACKAGE_SEED)
    paths, text = list(_paths(original)), ManifestText(original_text)
    outcomes = Outcomes()
    before = tree_of(tmp_path)
    for i in range(MANIFEST_MUTANTS):
        label, content = manifest_mutant(text, paths, rng)
        _place_manifest(root, content)
        outcomes.run(f"manifest mutant {i} ({label})", lambda: open_package(root),
                     _same_as_claimed(original, root / MANIFEST))
    _place_manifest(root, b"")
    assert tree_of(tmp_path) == {**before, "pkg/manifest.json": 0}, "a file appeared or changed"

    # Shard mutants: a private copy of the shard, damaged and restored in place.
    (root / shard_name).unlink()
    shutil.copyfile(src.root / shard_name, root / shard_name)
    pristine = (src.root / shard_name).read_bytes()
    header_end = min(s["offset"] for t in original["tensors"].values() for s in t["streams"].values())
    for i in range(SHARD_MUTANTS):
        manifest = json.loads(original_text)
        op = ["flip", "flip header, hash fixed", "truncate", "append", "swap"][i % 5]
        touched: list[tuple[int, int]] = []            # (offset, bytes) written: restored afterwards
        with open(root / shard_name, "r+b") as f:
            if op == "flip":
                at = rng.randrange(len(pristine))
                f.seek(at)
                f.write(bytes([pristine[at] ^ (1 << rng.randrange(8))]))
                touched.append((at, 1))
            elif op == "flip header, hash fixed":
                for _ in range(rng.randint(1, 4)):
                    at = rng.randrange(header_end)
                    f.seek(at)
                    f.write(bytes([rng.randrange(256)]))
                    touched.append((at, 1))
            elif op == "truncate":
                cut = rng.randrange(len(pristine))
                f.truncate(cut)
                touched.append((cut, len(pristine) - cut))
            elif op == "append":
                f.seek(0, 2)
                f.write(os.urandom(rng.randint(1, 4096)))
            else:
                a, b = sorted(rng.sample(range(header_end // 256 + 1, len(pristine) // 256), 2))
                f.seek(a * 256)
                f.write(pristine[b * 256:(b + 1) * 256])
                f.seek(b * 256)
                f.write(pristine[a * 256:(a + 1) * 256])
                touched += [(a * 256, 256), (b * 256, 256)]
        if op == "flip header, hash fixed":
            manifest["files"][0]["sha256"] = package.sha256_file(root / shard_name)
        _place_manifest(root, json.dumps(manifest).encode())
        changed = _differs(root / shard_name, pristine, touched)

        def correct(pkg, changed=changed):
            return "a damaged shard was accepted" if changed else None
        outcomes.run(f"shard mutant {i} ({op})", lambda: open_package(root), correct)
        with open(root / shard_name, "r+b") as f:           # restore what was written
            for at, n in touched:
                f.seek(at)
                f.write(pristine[at:at + n])
            f.truncate(len(pristine))
    assert (root / shard_name).read_bytes() == pristine
    outcomes.check(MANIFEST_MUTANTS + SHARD_MUTANTS)
    assert outcomes.counts.get("refused", 0) > 0.9 * (MANIFEST_MUTANTS + SHARD_MUTANTS)


def _differs(path: Path, pristine: bytes, touched: list[tuple[int, int]]) -> bool:
    with open(path, "rb") as f:
        if f.seek(0, 2) != len(pristine):
            return True
        for at, n in touched:
            f.seek(at)
            if f.read(n) != pristine[at:at + n]:
                return True
    return False


# ---- checkpoint mutants ---------------------------------------------------------------------------------------------
def _header(path: Path) -> tuple[dict, int]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n)), 8 + n


def _write_safetensors(path: Path, header_text: bytes, data_size: int, cut: int | None = None,
                       header_len: int | None = None) -> None:
    """A safetensors file with this header and a sparse (zero) data section of data_size bytes: a header mutant
    is refused before any tensor is read, so the data need not be copied."""
    header_text += b" " * (-len(header_text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header_text) if header_len is None else header_len))
        f.write(header_text)
        f.truncate(8 + len(header_text) + data_size if cut is None else cut)


def header_mutant(header: dict, rng: random.Random) -> tuple[str, bytes, dict]:
    """(label, header JSON bytes, options for _write_safetensors)."""
    h = copy.deepcopy(header)
    names = [n for n in h if n != "__metadata__"]
    name = rng.choice(names)
    entry = h[name]
    op = rng.choice(["whole", "delete", "retype", "offsets", "offsets", "overlap", "shape", "dtype", "tensor",
                     "length", "cut", "text"])
    label, options = f"{op} {name}", {}
    if op == "whole":
        h = rng.choice([[1, 2], 7, "header", None, [entry]])
    elif op == "delete":
        del entry[rng.choice(["dtype", "shape", "data_offsets"])]
    elif op == "retype":
        field = rng.choice(["dtype", "shape", "data_offsets"])
        entry[field] = rng.choice(ODD_VALUES[:-2] + [["BF16"], {"x": 1}, [str(v) for v in entry["data_offsets"]],
                                                     [float(v) for v in entry["data_offsets"]]])
        label += f".{field}"
    elif op == "offsets":
        begin, end = entry["data_offsets"]
        entry["data_offsets"] = rng.choice([[begin - 8, end - 8], [-1, end - begin - 1], [end, begin],
                                            [begin + 1, end + 1], [begin, end + 2], [begin + 10**15, end + 10**15],
                                            [begin, 2**64]])
    elif op == "overlap":
        other = rng.choice([n for n in names if n != name])
        size = entry["data_offsets"][1] - entry["data_offsets"][0]
        start = h[other]["data_offsets"][0] + rng.randrange(0, 64, 2)
        entry["data_offsets"] = [start, start + size]
        label += f" onto {other}"
    elif op == "shape":
        s = list(entry["shape"])
        entry["shape"] = rng.choice([s[:-1], s + [1], [d + 1 for d in s], [-d for d in s], [2**62] * len(s), [],
                                     list(reversed(s)) if len(set(s)) > 1 else s + [2]])
    elif op == "dtype":
        entry["dtype"] = rng.choice([d for d in ("F16", "F32", "BF16", "I64", "U8", "bf16", "F8_E4M3", "")
                                     if d != entry["dtype"]])
    elif op == "tensor":
        how = rng.choice(["drop", "rename", "add"])
        label = f"tensor {how} {name}"
        if how == "drop":
            del h[name]
        elif how == "rename":
            h[name + ".x"] = h.pop(name)
        else:
            h["extra.weight"] = {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}
    elif op == "length":
        options["header_len"] = rng.choice([0, 1, 7, 2**63, 10**8])
    elif op == "cut":
        options["cut"] = "random"
    text = json.dumps(h).encode()
    if op == "text":
        how = rng.choice(["digits", "deep", "invalid utf-8", "cut"])
        label = f"text {how}"
        text = {"digits": text.replace(b"[0, ", b"[" + b"9" * 5000 + b", ", 1),
                "deep": b"[" * 100_000 + b"]" * 100_000, "invalid utf-8": b"\xff" + text,
                "cut": text[:rng.randrange(len(text))]}[how]
    return label, text, options


CONFIG_KEYS_ODD = ["dim", "num_heads", "num_layers", "hidden_scale", "context", "card", "n_q", "text_card",
                   "delays", "max_period", "mimi_name", "tokenizer_name", "extra_heads_num_heads", "stt_config",
                   "existing_text_padding_id", "gating", "causal"]     # not lm_gen_config: kept verbatim, unused


def config_mutant(config: dict, rng: random.Random) -> tuple[str, bytes]:
    c = copy.deepcopy(config)
    key = rng.choice(CONFIG_KEYS_ODD)
    op = rng.choice(["delete", "retype", "huge", "negative", "name", "text"])
    label = f"config {op} {key}"
    if op == "delete":
        c.pop(key, None)
    elif op == "retype":
        c[key] = rng.choice(ODD_VALUES)
    elif op == "huge":
        c[key] = rng.choice([1e308, 10**12, 2**63, float("inf")])
    elif op == "negative":
        c[key] = rng.choice([-1, 0, -1e308])
    elif op == "name":
        key = rng.choice(["mimi_name", "tokenizer_name"])
        c[key] = rng.choice(["../" + c[key], "/etc/passwd", "config.json/..", "..", ".hidden"])
        label = f"config name {key} = {c[key]!r}"
    text = json.dumps(c).encode()
    if op == "text":
        how = rng.choice(["latin-1", "deep", "digits", "cut", "list", "dir"])
        label = f"config text {how}"
        if how == "dir":
            return label, b"<directory>"
        text = {"latin-1": json.dumps(c).encode().replace(b'"stt"', "\"stt\u00e9\"".encode("latin-1")),
                "deep": b"[" * 100_000 + b"]" * 100_000, "digits": text.replace(b'"dim": ', b'"dim": ' + b"9" * 5000
                                                                                 + b", \"x\": ", 1),
                "cut": text[:rng.randrange(len(text))], "list": b"[" + text + b"]"}[how]
    return label, text


def test_checkpoint_mutants_through_the_api(tmp_path, tiny_checkpoint):
    """220 checkpoints whose safetensors headers (both files), config.json, SYNTHETIC.json or tokenizer are
    damaged, or whose files are missing: each refused by convert() with a UserError, the output never created, no
    temporary directory left, the checkpoint itself untouched."""
    ckpt = {f.name: f for f in tiny_checkpoint.iterdir()}
    cfg = json.loads((tiny_checkpoint / "config.json").read_text())
    files = {"lm": tiny_checkpoint / "model.safetensors", "mimi": tiny_checkpoint / cfg["mimi_name"]}
    headers = {k: _header(p) for k, p in files.items()}
    sizes = {k: p.stat().st_size - headers[k][1] for k, p in files.items()}
    originals, config_bytes = tree_of(tiny_checkpoint), (tiny_checkpoint / "config.json").read_bytes()
    rng = random.Random(CHECKPOINT_SEED)
    outcomes = Outcomes()
    work = tmp_path / "work"
    work.mkdir()
    for i in range(CHECKPOINT_MUTANTS):
        mutant = work / "ckpt"
        mutant.mkdir()
        for name, f in ckpt.items():
            os.link(f, mutant / name)
        target = rng.choices(["lm", "mimi", "config", "synthetic", "tokenizer", "missing", "nan"],
                             [30, 25, 25, 6, 5, 5, 2])[0]
        if target in ("lm", "mimi"):
            label, text, options = header_mutant(headers[target][0], rng)
            path = mutant / files[target].name
            path.unlink()
            if options.get("cut") == "random":
                options["cut"] = rng.randrange(headers[target][1] + sizes[target])
            _write_safetensors(path, text, sizes[target], **options)
            label = f"{target} {label}"
        elif target == "config":
            label, text = config_mutant(cfg, rng)
            (mutant / "config.json").unlink()
            (mutant / "config.json").mkdir() if text == b"<directory>" else (mutant / "config.json").write_bytes(text)
        elif target == "synthetic":
            text = rng.choice([b"", b"[1]", b"7", b"{", b"\xff\xfe", b"[" * 100_000])
            label = f"SYNTHETIC.json = {text[:8]!r}"
            (mutant / "SYNTHETIC.json").unlink()
            (mutant / "SYNTHETIC.json").write_bytes(text)
        elif target == "tokenizer":
            tok = mutant / cfg["tokenizer_name"]
            data = tok.read_bytes()
            tok.unlink()
            tok.write_bytes(data[:rng.randrange(len(data))])
            label = "tokenizer cut"
        elif target == "missing":
            name = rng.choice(sorted(ckpt))
            (mutant / name).unlink()
            label = f"missing {name}"
            if name == "SYNTHETIC.json":          # optional: its absence converts (slowly); damage it instead
                (mutant / name).write_bytes(b"{")
        else:                                     # a NaN in an LM tensor (read early: the LM's tensors go first)
            path = mutant / "model.safetensors"
            path.unlink()
            shutil.copyfile(files["lm"], path)
            header, start = headers["lm"]
            tensor = rng.choice([n for n in header if n.startswith(("text_emb", "emb.0", "transformer.layers.0"))])
            begin = start + header[tensor]["data_offsets"][0]
            with open(path, "r+b") as f:
                f.seek(begin + 2 * rng.randrange((header[tensor]["data_offsets"][1] -
                                                  header[tensor]["data_offsets"][0]) // 2))
                f.write(struct.pack("<H", rng.choice([0x7FC0, 0x7F80, 0xFF80])))
            label = f"nan in {tensor}"
        before = tree_of(mutant)
        out = work / "out"

        def correct(manifest, out=out):
            open_package(out)
            return None
        outcomes.run(f"checkpoint mutant {i} ({label})",
                     lambda mutant=mutant, out=out: convert(mutant, out, "q4"), correct)
        assert tree_of(mutant) == before, f"mutant {i} ({label}): the checkpoint changed"
        left = sorted(p.name for p in work.iterdir() if p.name != "ckpt")
        assert left in ([], ["out"]), f"mutant {i} ({label}): left {left}"
        shutil.rmtree(mutant)
        shutil.rmtree(out, ignore_errors=True)
    outcomes.check(CHECKPOINT_MUTANTS)
    assert tree_of(tiny_checkpoint) == originals and (tiny_checkpoint / "config.json").read_bytes() == config_bytes


# ---- a sample through the command line ------------------------------------------------------------------------------
def _cli(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kyutai_stt.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def test_a_sample_of_mutants_through_the_command_line(tmp_path, tiny_packages, tiny_checkpoint):
    """Package mutants given to `transcribe --model` and `export-web --model`, checkpoint mutants to `convert`:
    exit 2, one line naming the problem, no traceback, nothing written."""
    from audio_helpers import sine, write_wav_int16
    talk = write_wav_int16(tmp_path / "talk.wav", sine(440, 24000, 0.5), 24000)
    src = tiny_packages("q4").root
    original = json.loads((src / MANIFEST).read_text())
    shard = original["files"][0]["name"]
    cases = []
    for label, edit in (("name ../../x", lambda m: m["files"][0].update(name="../../x.gguf")),
                        ("config dim", lambda m: m["config"]["lm"].update(dim=256)),
                        ("bytes a string", lambda m: m["files"][0].update(bytes="47")),
                        ("nested", None), ("fifo", None)):
        root = tmp_path / label.replace(" ", "_").replace("/", "_").replace(".", "_")
        root.mkdir()
        os.link(src / shard, root / shard)
        if edit is not None:
            m = copy.deepcopy(original)
            edit(m)
            _place_manifest(root, json.dumps(m).encode())
        else:
            _place_manifest(root, b"[" * 100_000 + b"]" * 100_000 if label == "nested" else "fifo")
        cases.append((label, root))
    env = {"KYUTAI_STT_CACHE": str(tmp_path / "cache")}
    before = tree_of(tmp_path)
    for i, (label, root) in enumerate(cases):
        command = ("transcribe", talk, "--model", root) if i % 2 == 0 else \
            ("export-web", tmp_path / "site", "--model", root)
        r = _cli(*command, env=env)
        assert r.returncode == 2 and "Traceback" not in r.stderr, (label, r.stderr[-2000:])
        assert len(r.stderr.strip().splitlines()) <= 2 and str(root) in r.stderr, (label, r.stderr)
    assert not (tmp_path / "site").exists() and tree_of(tmp_path) == before
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt, copy_function=os.link)
    for label, damage in (("config hidden_scale 1e308", lambda: (ckpt / "config.json").write_text(json.dumps(
                              {**json.loads((tiny_checkpoint / "config.json").read_text()), "hidden_scale": 1e308}))),
                          ("header a list", lambda: _write_safetensors(ckpt / "model.safetensors", b"[1, 2]", 64))):
        target = ckpt / ("config.json" if "config" in label else "model.safetensors")
        target.unlink()
        damage()
        before = tree_of(tmp_path)
        r = _cli("convert", ckpt, tmp_path / "out")
        assert r.returncode == 2 and "Traceback" not in r.stderr, (label, r.stderr[-2000:])
        assert tree_of(tmp_path) == before, label
        target.unlink()
        os.link(tiny_checkpoint / target.name, target)
