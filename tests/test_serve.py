"""`kyutai-stt serve` and `export-web`: what a browser gets from them (the page itself runs in tests/web/)."""
from __future__ import annotations

import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from kyutai_stt import cli
from kyutai_stt.models import variants
from kyutai_stt.site import build as webapp

ROOT = Path(__file__).resolve().parents[1]


class Server:
    """`kyutai-stt serve ARGS` in a subprocess, until the test ends; .url is the address it printed."""

    def __init__(self, tmp_path: Path, *args: str):
        env = {**os.environ, "KYUTAI_STT_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "kyutai_stt.cli", "serve", "--port", "0", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                     start_new_session=True)
        line = self.proc.stdout.readline()
        if not line.startswith("open "):
            self.stop()
            raise AssertionError(f"serve printed {line!r}; stderr: {self.proc.stderr.read()[-3000:]}")
        self.urls = re.findall(r"(https?://\S+/)", line)
        self.url = self.urls[0]

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=30)


@pytest.fixture
def served(tmp_path):
    servers = []

    def start(*args):
        servers.append(Server(tmp_path, *args))
        return servers[-1]
    yield start
    for s in servers:
        s.stop()


def get(url: str, context=None):
    with urllib.request.urlopen(url, timeout=30, context=context) as r:
        return r.status, r.headers, r.read()


def test_serve_a_package_gives_the_app_kernels_plans_and_model(served, tiny_packages):
    package = tiny_packages("q4")
    server = served("--model", str(package.root))
    assert server.url.startswith("http://localhost:")
    status, headers, body = get(server.url)
    assert status == 200 and b"Private speech-to-text" in body and headers["Cache-Control"] == "no-cache"
    for path, mime in (("app.js", "text/javascript"), ("worker.js", "text/javascript"),
                       ("kernels/matvec.wgsl", "text/plain"), ("plans.json", "application/json")):
        assert get(server.url + path)[1]["Content-Type"].startswith(mime), path
    plans = json.loads(get(server.url + "plans.json")[2])
    assert plans["package_sha"] == webapp.manifest_sha256(package.root)
    assert set(plans["variants"]) == set(variants.tunings())
    manifest = get(server.url + "model/manifest.json")[2]
    assert manifest == (package.root / "manifest.json").read_bytes()
    shard = package.manifest["files"][0]
    assert len(get(server.url + "model/" + shard["name"])[2]) == shard["bytes"]


def test_serve_offline_without_a_model_says_what_to_do(tmp_path):
    env = {**os.environ, "KYUTAI_STT_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "kyutai_stt.cli", "serve", "--port", "0"], capture_output=True,
                       text=True, timeout=120, env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "--model PACKAGE_DIR" in r.stderr and "--or-synthetic" in r.stderr


def test_serve_or_synthetic_serves_a_labelled_synthetic_model(served):
    server = served("--or-synthetic")
    manifest = json.loads(get(server.url + "model/manifest.json")[2])
    assert manifest["synthetic"]["size"] == "tiny"
    said = iter(server.proc.stderr.readline, "")
    serving = next(line for line in said if line.startswith("serving the app"))
    assert "SYNTHETIC" in serving


def test_https_with_a_self_signed_certificate(served, tiny_packages):
    server = served("--model", str(tiny_packages("q4").root), "--https", "--host", "127.0.0.1")
    assert server.url.startswith("https://localhost:")
    context = ssl.create_default_context()
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        get(server.url, context)                     # self-signed: a browser warns once
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    status, _, body = get(server.url, context)
    assert status == 200 and b"Private speech-to-text" in body
    from cryptography import x509
    port = int(server.url.rsplit(":", 1)[1].strip("/"))
    cert = x509.load_pem_x509_certificate(ssl.get_server_certificate(("127.0.0.1", port)).encode())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in {str(a) for a in names.get_values_for_type(x509.IPAddress)}


def test_export_web_writes_a_static_site_and_refuses_to_overwrite_other_directories(tmp_path, tiny_packages, capsys):
    package = tiny_packages("q4")
    site = tmp_path / "site"
    assert cli.main(["export-web", str(site), "--model", str(package.root)]) == 0
    assert (site / "index.html").is_file() and (site / "kernels" / "matvec.wgsl").is_file()
    assert (site / "model" / "manifest.json").read_bytes() == (package.root / "manifest.json").read_bytes()
    assert cli.main(["export-web", str(site), "--model", str(package.root), "--no-model"]) == 0   # re-export
    assert not (site / "model").exists() and (site / "plans.json").is_file()
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("precious")
    assert cli.main(["export-web", str(other), "--model", str(package.root)]) == 2
    assert "not a kyutai-stt site export" in capsys.readouterr().err
    assert (other / "keep.txt").read_text() == "precious" and len(list(other.iterdir())) == 1


# ---- a server a phone can use safely (issue 12) ---------------------------------------------------------------------
def _listening_addresses(port: int) -> set[str]:
    """The local addresses of the TCP sockets listening on `port` (from /proc/net/tcp: state 0A = LISTEN)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(".".join(str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


def shard_name(package) -> str:
    return package.manifest["files"][0]["name"]


def raw_request(port: int, request: bytes, context=None) -> bytes:
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        conn = context.wrap_socket(s, server_hostname="localhost") if context else s
        conn.sendall(request)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
        return data


def test_serve_binds_localhost_unless_told_and_a_silent_tls_client_freezes_nothing(served, tiny_packages):
    server = served("--model", str(tiny_packages("q4").root), "--https")
    port = int(server.url.rsplit(":", 1)[1].strip("/"))
    assert _listening_addresses(port) == {"127.0.0.1"}           # not 0.0.0.0, even with --https
    import socket
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]   # connect, never start TLS
    try:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        started = time.monotonic()
        status, _, body = get(server.url, context)
        assert status == 200 and b"Private speech-to-text" in body and time.monotonic() - started < 5
    finally:
        for s in silent:
            s.close()


def test_serve_on_all_interfaces_prints_the_lan_address(served, tiny_packages):
    server = served("--model", str(tiny_packages("q4").root), "--host", "0.0.0.0")
    port = int(server.url.rsplit(":", 1)[1].strip("/"))
    assert _listening_addresses(port) == {"0.0.0.0"}
    from kyutai_stt.site.server import lan_addresses
    assert server.urls[1:] == [f"http://{a}:{port}/" for a in lan_addresses()]
    if not lan_addresses():
        print("NOTE: this machine has no LAN address: only the localhost URL could be checked")


def test_serve_bad_urls_listings_and_ranges(served, tiny_packages):
    package = tiny_packages("q4")
    server = served("--model", str(package.root))
    port = int(server.url.rsplit(":", 1)[1].strip("/"))
    for path in ("/%00", "/model/manifest.json%00.txt", "/%ff%fe", "/a%zz", "/a%0d%0ab", "/..%5c..%5cetc"):
        reply = raw_request(port, f"GET {path} HTTP/1.0\r\n\r\n".encode())
        assert reply.startswith(b"HTTP/1.0 400"), (path, reply[:100])
    assert get(server.url)[0] == 200                                  # the server is still there
    for path in ("kernels/", "model/", "model"):                   # "model" redirects to "model/"
        with pytest.raises(urllib.error.HTTPError) as e:
            get(server.url + path)
        assert e.value.code == 404, (path, e.value.code)
        body = e.value.read()
        assert b"matvec_q4.wgsl" not in body and shard_name(package).encode() not in body
    shard = package.manifest["files"][0]
    data = (package.root / shard["name"]).read_bytes()
    url = server.url + "model/" + shard["name"]

    def ranged(spec):
        request = urllib.request.Request(url, headers={"Range": spec})
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()
    status, headers, body = ranged("bytes=100-299")
    assert status == 206 and body == data[100:300] and headers["Content-Range"] == f"bytes 100-299/{len(data)}"
    status, headers, body = ranged(f"bytes={len(data) - 1000}-")
    assert status == 206 and body == data[-1000:]
    status, headers, body = ranged("bytes=-10")
    assert status == 206 and body == data[-10:]
    status, headers, _ = ranged(f"bytes={len(data)}-")
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(data)}"
    status, _, body = ranged("bytes=0-1,5-9")                       # several ranges: the whole file (allowed)
    assert status == 200 and body == data
    assert get(url)[1]["Accept-Ranges"] == "bytes"
