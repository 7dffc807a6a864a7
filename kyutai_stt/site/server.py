"""The browser app and a model package served on this machine (`kyutai-stt serve` starts it).

The site is exported (site/build.py: the app, the shared kernels, the plans, the package hard-linked) into the
cache once per package and code version, then served by a small static server.

The server is made for a LAN: each connection has its own thread, whose TLS handshake and reads time out (a
client that connects and says nothing holds one thread for a while, never the server); a URL that does not decode
to a plain path is answered 400; directories are never listed; single byte ranges are served (206, 416), so an
interrupted shard download resumes.
"""
from __future__ import annotations

import hashlib
import http.server
import ipaddress
import os
import re
import socket
import ssl
import urllib.parse
from datetime import datetime, timedelta, timezone
from pathlib import Path

from kyutai_stt import __version__
from kyutai_stt.atomic import SITE_MARKER
from kyutai_stt.site import build
from kyutai_stt.weights.cache import cache_root
from kyutai_stt.weights.convert import convert
from kyutai_stt.weights.package import MANIFEST
from kyutai_stt.weights.synthetic import write_checkpoint

HANDSHAKE_TIMEOUT_S = 10       # a connection that does not finish its TLS handshake by then is closed
READ_TIMEOUT_S = 30            # and one that sends nothing for this long while a request is read
SYNTHETIC_SEED = 0
CERT_DAYS = 825                # the longest validity Apple platforms accept for a TLS server certificate
MIME_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".wgsl": "text/plain; charset=utf-8",
              ".json": "application/json", ".gguf": "application/octet-stream", ".css": "text/css",
              ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
              ".webmanifest": "application/manifest+json"}


def site_for(package_dir: Path) -> Path:
    """The exported site of a package, cached by (package manifest, code version, web files)."""
    digest = hashlib.sha256(build.manifest_sha256(package_dir).encode())
    for f in sorted([*build.WEB_DIR.iterdir(), *build.KERNEL_DIR.glob("*.wgsl")]):
        if f.is_file():
            digest.update(f.name.encode() + f.read_bytes())
    digest.update(__version__.encode())
    site = cache_root() / "sites" / digest.hexdigest()[:16]
    if not (site / SITE_MARKER).is_file():
        build.export_site(site, package_dir)
    return site


def synthetic_package(say) -> Path:
    """A tiny synthetic package in the cache (random weights), made once."""
    root = cache_root() / "synthetic"
    package = root / f"tiny-seed{SYNTHETIC_SEED}-q4"
    if not (package / MANIFEST).is_file():
        say("writing a tiny synthetic model (random weights) into the cache")
        checkpoint = root / f"tiny-seed{SYNTHETIC_SEED}-checkpoint"
        write_checkpoint(checkpoint, "tiny", seed=SYNTHETIC_SEED)
        convert(checkpoint, package, "q4", force=True)
    return package


class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **MIME_TYPES}
    timeout = READ_TIMEOUT_S                   # socket timeout while a request is read (StreamRequestHandler)

    def end_headers(self):
        # The app's files change with the code: always revalidate. The model is cached by the page (Cache API).
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Accept-Ranges", "bytes")
        super().end_headers()

    def log_message(self, format, *args):      # noqa: A002 (the base class's name)
        pass

    def send_head(self):
        if not _plain_url_path(self.path):
            self.send_error(400, "Bad request: the URL is not a plain path")
            return None
        path = self.translate_path(self.path)
        if "Range" not in self.headers or not os.path.isfile(path) or self.path.split("?", 1)[0].endswith("/"):
            return super().send_head()     # directories: index.html or 404 (list_directory); redirects; 404s
        try:
            f = open(path, "rb")
        except OSError:
            self.send_error(404, "File not found")
            return None
        size = os.fstat(f.fileno()).st_size
        span = _byte_range(self.headers["Range"], size)
        if span is None:                            # several ranges, or not bytes: the whole file (RFC 9110)
            f.close()
            return super().send_head()
        if span == "unsatisfiable":
            f.close()
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        first, last = span
        f.seek(first)
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.send_header("Content-Length", str(last - first + 1))
        self.end_headers()
        self._remaining = last - first + 1
        return f

    def copyfile(self, source, outputfile):
        remaining = getattr(self, "_remaining", None)
        if remaining is None:
            return super().copyfile(source, outputfile)
        self._remaining = None
        while remaining > 0:
            block = source.read(min(remaining, 1 << 20))
            if not block:
                break
            outputfile.write(block)
            remaining -= len(block)

    def list_directory(self, path):
        self.send_error(404, "File not found")
        return None


def _plain_url_path(raw: str) -> bool:
    """An absolute path whose escapes decode to printable UTF-8 without NUL or control characters (a %00 made
    the standard handler raise), and no backslash."""
    path = raw.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/") or re.search(r"%(?![0-9A-Fa-f]{2})", path):
        return False
    try:
        decoded = urllib.parse.unquote(path, errors="strict")
    except UnicodeDecodeError:
        return False
    return not any(ord(c) < 32 or c in "\x7f\\" for c in decoded)


def _byte_range(header: str, size: int):
    """A Range header -> (first, last) inclusive, 'unsatisfiable', or None (not a single byte range: ignored)."""
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not m or m.group(1) == m.group(2) == "":
        return None
    if m.group(1) == "":                            # the last N bytes
        n = int(m.group(2))
        return (max(0, size - n), size - 1) if n > 0 and size > 0 else "unsatisfiable"
    first = int(m.group(1))
    last = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
    if first >= size or last < first:
        return "unsatisfiable"
    return first, last


class SiteServer(http.server.ThreadingHTTPServer):
    """One thread per connection (ThreadingHTTPServer); with TLS, the handshake happens in that thread under a
    timeout, so that a client that connects and never speaks holds its own thread only, never the accept loop."""
    daemon_threads = True
    tls: ssl.SSLContext | None = None

    def finish_request(self, request, client_address):
        if self.tls is not None:
            request.settimeout(HANDSHAKE_TIMEOUT_S)
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError):
                request.close()
                return
            try:
                super().finish_request(request, client_address)
            finally:
                request.close()
            return
        super().finish_request(request, client_address)

    def handle_error(self, request, client_address):
        pass            # a client that hung up or timed out: nothing to report


def lan_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback (what a phone on the LAN would type)."""
    found = set()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))         # TEST-NET: no packet is sent, the kernel picks the route's address
            found.add(s.getsockname()[0])
    except OSError:
        pass
    return sorted(a for a in found if not a.startswith("127."))


def self_signed_certificate(directory: Path, hosts: list[str]) -> tuple[Path, Path]:
    """A key and certificate for localhost and the given addresses (cryptography), reused while still valid."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    names = ["localhost", "127.0.0.1", *hosts]
    tag = directory / ("hosts-" + hashlib.sha256(",".join(names).encode()).hexdigest()[:12])
    if key_path.is_file() and cert_path.is_file() and tag.is_file():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if cert.not_valid_after_utc > datetime.now(timezone.utc) + timedelta(days=1):
            return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kyutai-stt local server")])
    alt = [x509.IPAddress(ipaddress.ip_address(n)) if _is_ip(n) else x509.DNSName(n) for n in names]
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=CERT_DAYS))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .sign(key, hashes.SHA256()))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    for old in directory.glob("hosts-*"):
        old.unlink()
    tag.touch()
    return cert_path, key_path


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False
