"""--model resolution: package dirs, checkpoint dirs (converted once), hosted packages (downloaded once, checked),
repo ids offline, and the messages when none of these works."""
from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kyutai_stt.errors import UserError
from kyutai_stt.weights import cache as models_cache
from kyutai_stt.weights.package import open_package


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KYUTAI_STT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "cache"


@pytest.fixture
def hosted(tmp_path, tiny_packages):
    """The tiny q4 package on a local static server; yields (url, directory served)."""
    import shutil
    root = tmp_path / "www"
    shutil.copytree(tiny_packages("q4").root, root / "pkg")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/pkg/", root / "pkg", httpd
    httpd.shutdown()
    httpd.server_close()


def test_package_dir_is_used_as_is(cache, tiny_packages):
    root = tiny_packages("q4").root
    assert models_cache.resolve_model(str(root)) == root


def test_hosted_package_is_downloaded_once_and_checked(cache, hosted, tiny_packages):
    url, served, httpd = hosted
    local = models_cache.resolve_model(url)
    assert cache in local.parents
    assert open_package(local).manifest == tiny_packages("q4").manifest        # opens with hashes verified
    assert models_cache.resolve_model(url + "manifest.json") == local          # the manifest's URL works too
    httpd.shutdown()
    httpd.server_close()
    said = []
    assert models_cache.resolve_model(url, progress=said.append) == local     # offline: the cached copy
    assert "cached copy" in said[-1]


def test_corrupt_hosted_file_is_refused_and_nothing_is_kept(cache, hosted):
    url, served, _ = hosted
    shard = sorted(served.glob("*.gguf"))[0]
    data = bytearray(shard.read_bytes())
    data[500] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(UserError, match="does not match the manifest"):
        models_cache.resolve_model(url)
    assert not list(cache.rglob("*.gguf")) and not list(cache.rglob("manifest.json"))


def test_checkpoint_dir_is_converted_once(cache, tiny_checkpoint):
    first = models_cache.resolve_model(str(tiny_checkpoint))
    assert (first / "manifest.json").is_file() and cache in first.parents
    mtime = (first / "manifest.json").stat().st_mtime_ns
    assert models_cache.resolve_model(str(tiny_checkpoint)) == first
    assert (first / "manifest.json").stat().st_mtime_ns == mtime


@pytest.mark.parametrize("spec, message", [
    (None, "--model PACKAGE_DIR"),
    ("someone/some-stt", "could not download someone/some-stt"),
    ("./no/such/package", "no such model package directory"),
])
def test_what_cannot_be_had_says_what_to_do(cache, spec, message):
    with pytest.raises(UserError, match=message):
        models_cache.resolve_model(spec)


def test_a_directory_that_is_neither(cache, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="neither a model package"):
        models_cache.resolve_model(str(tmp_path / "empty"))
