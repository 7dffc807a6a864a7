"""Issue 12's findings, one test each: names are data, inputs are never outputs, a package's claims are checked,
every user error is a message (exit 2) and an internal error one line plus a traceback file (exit 3).
The fuzzers are in test_fuzz.py; the server's findings in test_serve.py."""
from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from kyutai_stt import cli
from kyutai_stt.cli import transcribe as transcribe_command
from kyutai_stt.errors import AudioError, UserError
from kyutai_stt.weights import cache as models_cache
from kyutai_stt.weights import package
from kyutai_stt.weights.package import PackageError, open_package

VECTORS = Path(__file__).resolve().parent / "vectors" / "file_names.json"
UNWRITABLE = Path("/proc/kyutai-stt-test")       # not writable even as root (the tests run as root here)


def tone(path: Path, freq: float, seconds: float) -> Path:
    from audio_helpers import sine, write_wav_int16
    return write_wav_int16(path, sine(freq, 24000, seconds), 24000)


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.fixture
def pkg_copy(tmp_path, tiny_packages):
    """A package directory whose manifest a test may edit: the shard hard-linked, the manifest copied."""
    src = tiny_packages("q4").root
    dst = tmp_path / "pkg"
    dst.mkdir()
    for f in src.iterdir():
        (os.link if f.name != "manifest.json" else shutil.copy)(f, dst / f.name)
    manifest = json.loads((dst / "manifest.json").read_text())

    def write(edited: dict) -> Path:
        (dst / "manifest.json").write_text(json.dumps(edited))
        return dst
    return manifest, write


# ---- 1. names are data --------------------------------------------------------------------------------------------
def test_file_name_vectors_shared_with_the_browser():
    """The same vectors run through web/package.js in tests/web/test_package_loader.py."""
    vectors = json.loads(VECTORS.read_text())
    for name in vectors["accepted"]:
        assert package.check_file_name(name, "t") == name
    for name in vectors["refused"] + vectors["not_strings"]:
        with pytest.raises(PackageError, match="file name"):
            package.check_file_name(name, "t")


@pytest.mark.parametrize("bad", ["../outside.gguf", "/etc/passwd", "sub/x.gguf", ".hidden", "http://h/x.gguf"])
def test_a_package_naming_files_outside_itself_is_refused_naming_the_entry(pkg_copy, bad):
    manifest, write = pkg_copy
    edited = copy.deepcopy(manifest)
    edited["files"][0]["name"] = bad
    with pytest.raises(PackageError, match=r"files\[0\]: file name .* is not a plain file name"):
        open_package(write(edited))


class Host(BaseHTTPRequestHandler):
    """Serves server.routes[path] = bytes, or a generator of chunks (counting what it sent)."""

    def do_GET(self):
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.end_headers()
        try:
            for chunk in ([route] if isinstance(route, bytes) else route()):
                self.wfile.write(chunk)
                self.server.sent += len(chunk)
        except OSError:
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def host():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Host)
    httpd.routes, httpd.sent, httpd.daemon_threads = {}, 0, True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("bad", ["/tmp/kyutai-stt-evil.sh", "../../evil.sh", "../evil.sh"])
def test_a_hosted_manifest_with_paths_writes_nothing_anywhere(tmp_path, monkeypatch, tiny_packages, host, bad):
    httpd, url = host
    monkeypatch.setenv("KYUTAI_STT_CACHE", str(tmp_path / "cache"))
    manifest = copy.deepcopy(tiny_packages("q4").manifest)
    manifest["files"][0]["name"] = bad
    httpd.routes["/pkg/manifest.json"] = json.dumps(manifest).encode()
    httpd.routes["/pkg/" + bad.lstrip("/")] = b"#!/bin/sh\necho owned\n"
    before = files_under(tmp_path)
    with pytest.raises(models_cache.ModelError, match="(?s)is not a plain file name.*nothing was downloaded"):
        models_cache.resolve_model(url + "/pkg/")
    new = files_under(tmp_path) - before
    assert all(p.is_dir() for p in new), new           # the empty cache folders only
    assert not Path("/tmp/kyutai-stt-evil.sh").exists() and not (tmp_path / "evil.sh").exists()


def test_a_host_streaming_more_than_declared_is_cut_off(tmp_path, monkeypatch, tiny_packages, host):
    """The manifest declares a file of N bytes; the host streams 300 MiB: the download stops at byte N + 1 (within
    a chunk or two of buffering), nothing is kept."""
    httpd, url = host
    monkeypatch.setenv("KYUTAI_STT_CACHE", str(tmp_path / "cache"))
    manifest = tiny_packages("q4").manifest
    declared = manifest["files"][0]["bytes"]
    httpd.routes["/pkg/manifest.json"] = json.dumps(manifest).encode()
    block = b"\0" * 2**20
    httpd.routes["/pkg/" + manifest["files"][0]["name"]] = lambda: (block for _ in range(300 + declared // 2**20))
    with pytest.raises(models_cache.ModelError, match=f"more than the {declared} bytes the manifest declares"):
        models_cache.resolve_model(url + "/pkg/")
    time.sleep(0.2)
    assert httpd.sent < declared + 16 * 2**20, httpd.sent           # not 300 MiB
    assert [p for p in files_under(tmp_path / "cache") if p.is_file()] == []


# ---- 3. what a package claims -------------------------------------------------------------------------------------
@pytest.mark.parametrize("edit,message", [
    ({"dim": 256}, "tensor 'text_emb' has shape"),
    ({"num_layers": 1}, "not part of the model"),
    ({"num_layers": 3}, r"tensor 'layers\.2\.\w+' is missing"),
    ({"n_q": 16, "delays": [0] * 17}, "not part of the model"),
    ({"text_card": 4000}, "tensor 'text_emb' has shape"),
    ({"extra_heads_num_heads": 0}, "not part of the model"),
])
def test_a_config_that_disagrees_with_the_tensors_is_refused(pkg_copy, edit, message):
    manifest, write = pkg_copy
    edited = copy.deepcopy(manifest)
    edited["config"]["lm"].update(edit)
    with pytest.raises(PackageError, match=message):
        open_package(write(edited), verify_hashes=False)


@pytest.mark.parametrize("key,value,message", [
    ("mimi", ("n_q", 8), r"tensor 'mimi.codebooks' has shape .* but config.mimi \(.*n_q 8\)"),
    ("mimi", ("sample_rate", 16000), "config.mimi: key 'frame_rate': a frame must be 1920 samples"),
    ("mimi", ("num_layers", 10**6), r"config.mimi: key 'num_layers': expected an integer in \[1, 64\]"),
    ("mimi", ("ratios", "8654"), "config.mimi: key 'ratios': expected a list"),
    ("mimi", ("layer_norm_eps", 1e-3), "config.mimi: key 'layer_norm_eps': moshi's Mimi uses 1e-05"),
    ("derived", ("ffn_dim", 999), "config.derived disagrees.*ffn_dim")])
def test_edits_to_the_mimi_or_derived_config_are_refused(pkg_copy, key, value, message):
    """The package's Mimi config is checked as a checkpoint's is (bounds first), then against its tensors."""
    manifest, write = pkg_copy
    edited = copy.deepcopy(manifest)
    edited["config"][key][value[0]] = value[1]
    with pytest.raises(UserError, match=message):
        open_package(write(edited), verify_hashes=False)


def test_expected_tensors_are_what_convert_writes(tiny_packages):
    pkg = tiny_packages("q4")
    expected = package.expected_tensors(pkg.config, pkg.mimi_config)
    assert {n: s for n, (s, _) in expected.items()} == {n: pkg.tensor(n).shape for n in pkg.tensor_names()}
    assert all(pkg.tensor(n).quant in q for n, (_, q) in expected.items())


# ---- 2. inputs are never outputs ----------------------------------------------------------------------------------
def test_convert_force_never_replaces_the_checkpoint_its_parent_or_a_user_folder(tmp_path, tiny_checkpoint, capsys):
    parent = tmp_path / "parent"
    shutil.copytree(tiny_checkpoint, parent / "ckpt", copy_function=os.link)
    (parent / "notes.txt").write_text("mine")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    before = files_under(tmp_path)
    for out, message in ((parent / "ckpt", "would replace the checkpoint"), (parent, "would replace the checkpoint"),
                         (mine, "replaces only an empty directory, a kyutai-stt package or a site export")):
        assert cli.main(["convert", str(parent / "ckpt"), str(out), "--force"]) == 2
        assert message in capsys.readouterr().err
    assert files_under(tmp_path) == before and (mine / "thesis.tex").read_text() == "precious"


def test_convert_unwritable_output_is_a_message(tiny_checkpoint, capsys):
    assert cli.main(["convert", str(tiny_checkpoint), str(UNWRITABLE / "pkg")]) == 2
    err = capsys.readouterr().err
    assert "cannot write there" in err and "Traceback" not in err


def test_convert_stopped_by_sigterm_leaves_nothing(tmp_path, tiny_checkpoint):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "kyutai_stt.cli", "convert", str(tiny_checkpoint), str(out)],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".out.partial-*")) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert list(tmp_path.glob(".out.partial-*")), "convert never started writing"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())


def test_transcribe_refuses_to_write_over_its_input(tmp_path, capsys):
    talk = tone(tmp_path / "talk.wav", 440, 0.5)
    before = talk.read_bytes()
    for output in (talk, tmp_path / "." / "talk.wav"):
        assert cli.main(["transcribe", str(talk), "--output", str(output), "--model", str(tmp_path / "none")]) == 2
        assert "is the input file" in capsys.readouterr().err
    link = tmp_path / "link.wav"
    link.symlink_to(talk)
    assert cli.main(["transcribe", str(talk), "--output", str(link), "--model", str(tmp_path / "none")]) == 2
    assert "is the input file" in capsys.readouterr().err
    assert talk.read_bytes() == before


def test_transcribe_unwritable_output_fails_before_the_work(tmp_path, capsys, monkeypatch):
    talk = tone(tmp_path / "talk.wav", 440, 0.5)
    monkeypatch.setattr(transcribe_command, "resolve_model", lambda *a, **k: pytest.fail("the model was loaded"))
    assert cli.main(["transcribe", str(talk), "--output", str(Path("/proc/self/talk.txt"))]) == 2
    assert "cannot write in /proc/self" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["inf", "1e9", "1e300", "nan", "-1"])
def test_silence_prefix_out_of_range(tmp_path, capsys, value):
    talk = tone(tmp_path / "talk.wav", 440, 0.5)
    assert cli.main(["transcribe", str(talk), f"--silence-prefix={value}"]) == 2
    assert "--silence-prefix must be 0 or more seconds (at most 30)" in capsys.readouterr().err


def test_export_web_unwritable_is_a_message(tiny_packages, capsys):
    assert cli.main(["export-web", str(UNWRITABLE / "site"), "--model", str(tiny_packages("q4").root)]) == 2
    assert "cannot write there" in capsys.readouterr().err


def test_export_web_never_replaces_the_package(tmp_path, tiny_packages, capsys):
    pkg = tmp_path / "pkg"
    shutil.copytree(tiny_packages("q4").root, pkg, copy_function=os.link)
    assert cli.main(["export-web", str(tmp_path), "--model", str(pkg)]) == 2
    assert "would replace the model package" in capsys.readouterr().err


def test_serve_port_out_of_range(capsys):
    assert cli.main(["serve", "--port", "70000"]) == 2
    assert "a port is 0 to 65535" in capsys.readouterr().err


# ---- Transcriber.feed -----------------------------------------------------------------------------------------------
def test_silence_prefix_is_checked_before_the_package_is_opened(tmp_path):
    from kyutai_stt.streaming.transcriber import Transcriber
    for value in (float("nan"), float("inf"), -1.0, 1e9, "1"):
        with pytest.raises(AudioError, match="silence_prefix must be 0 to 30 seconds"):
            Transcriber(tmp_path / "no-package", silence_prefix=value)


def test_feed_refuses_what_is_not_audio_and_never_guesses_the_layout(tiny_packages):
    from kyutai_stt.streaming.transcriber import Transcriber
    t = Transcriber(tiny_packages("q4"), silence_prefix=0.0)
    for bad, message in ((None, "not NoneType"), (0.5, "not float"), (b"\0\1" * 100, r"np.frombuffer"),
                         (np.zeros((2, 4800), np.float32), r"channels-first .* pcm.T"),
                         (np.zeros((4, 6), np.float32), r"n >= channels"),
                         (np.zeros((100, 9), np.float32), "at most 8 channels"),
                         (np.zeros((2, 2, 2), np.float32), r"shaped \[n\] or \[n, channels\]")):
        with pytest.raises(AudioError, match=message):
            t.feed(bad, 24000)
    assert isinstance(t.feed(np.zeros((4800, 2), np.float32), 24000), list)   # [n, channels] is accepted
    assert isinstance(t.feed(np.zeros((1, 2), np.float32), 24000), list)      # later blocks: the count is known


# ---- 5. internal errors ------------------------------------------------------------------------------------------
def test_an_internal_error_is_one_line_and_a_traceback_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KYUTAI_STT_CACHE", str(tmp_path / "cache"))
    from kyutai_stt.cli import doctor

    def broken(args):
        raise KeyError("a bug")
    monkeypatch.setattr(doctor, "run", broken)
    assert cli.main(["doctor"]) == cli.INTERNAL_ERROR_EXIT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "internal error (KeyError" in err[0] and "Traceback" not in err[0]
    where = Path(err[0].rsplit("the full traceback is in ", 1)[1])
    assert where.parent == tmp_path / "cache" / "crashes"
    assert "Traceback (most recent call last)" in where.read_text() and "a bug" in where.read_text()


def test_user_errors_exit_2_without_a_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "kyutai_stt.cli", "transcribe", str(tmp_path / "none.wav")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


# ---- convert checks offsets --------------------------------------------------------------------------------------
def _safetensors(path: Path, header, data: bytes = b"\0" * 64) -> Path:
    import struct
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


@pytest.mark.parametrize("header,message", [
    ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
      "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}, "tensors 'a' and 'b' overlap"),
    ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [-8, 8]}}, "is not \\[begin, end\\]"),
    ({"a": {"dtype": "F32", "shape": [4], "data_offsets": ["0", "16"]}}, "is not \\[begin, end\\]"),
    ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}, "12 bytes .* for shape \\[4\\] F32"),
    ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [60, 76]}}, "the file is truncated"),
    ({"a": {"dtype": ["F32"], "shape": [4], "data_offsets": [0, 16]}}, "unsupported dtype"),
    ([1, 2], "not an object of tensors"),
    (7, "not an object of tensors"),
])
def test_safetensors_offsets_inside_the_data_exact_and_disjoint(tmp_path, header, message):
    from kyutai_stt.weights import safetensors_io
    with pytest.raises(safetensors_io.SafetensorsError, match=message):
        safetensors_io.read_index(_safetensors(tmp_path / "x.safetensors", header))
