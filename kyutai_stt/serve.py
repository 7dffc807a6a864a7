"""`kyutai-stt serve`: the browser app and a model package on this machine, for a browser to open.

The site is exported (webapp.export_site: the app, the shared kernels, the plans, the package hard-linked) into
the cache once per package and code version, then served by a small threaded static server bound to localhost
(or, with --https, to every interface with a self-signed certificate, so that a phone on the LAN may use its
microphone: browsers give getUserMedia and WebGPU to https pages and to localhost only).

Model: --model as everywhere (models_cache.resolve_model). The default is the official model, downloaded and
converted once; where the hub is unreachable the message says how to serve a local or synthetic package instead,
and --or-synthetic serves a tiny synthetic package then (labelled in the page: its text is meaningless).
"""
from __future__ import annotations

import functools
import hashlib
import http.server
import ipaddress
import socket
import ssl
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from . import __version__
from .errors import UserError

DEFAULT_PORT = 8000
SYNTHETIC_SEED = 0
CERT_DAYS = 825                # the longest validity Apple platforms accept for a TLS server certificate
MIME_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".wgsl": "text/plain; charset=utf-8",
              ".json": "application/json", ".gguf": "application/octet-stream", ".css": "text/css",
              ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
              ".webmanifest": "application/manifest+json"}


def add_arguments(parser) -> None:
    parser.add_argument("--model", metavar="DIR|URL|HF_ID",
                        help="model package, checkpoint dir, package URL or HF repo (default: the official model)")
    parser.add_argument("--or-synthetic", action="store_true",
                        help="if the model cannot be had (e.g. offline), serve a tiny synthetic model instead")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any)")
    parser.add_argument("--host", help="address to bind (default 127.0.0.1; with --https 0.0.0.0)")
    parser.add_argument("--https", action="store_true",
                        help="serve over https with a self-signed certificate (for a phone on the LAN)")


def site_for(package_dir: Path) -> Path:
    """The exported site of a package, cached by (package manifest, code version, web files)."""
    from . import webapp
    from .models_cache import cache_root
    digest = hashlib.sha256(webapp.manifest_sha256(package_dir).encode())
    for f in sorted([*webapp.WEB_DIR.iterdir(), *webapp.KERNEL_DIR.glob("*.wgsl")]):
        if f.is_file():
            digest.update(f.name.encode() + f.read_bytes())
    digest.update(__version__.encode())
    site = cache_root() / "sites" / digest.hexdigest()[:16]
    if not (site / webapp.MARKER).is_file():
        webapp.export_site(site, package_dir)
    return site


def synthetic_package(say) -> Path:
    """A tiny synthetic package in the cache (random weights), made once."""
    from .convert import convert
    from .models_cache import cache_root
    from .package import MANIFEST
    from .synthetic import write_checkpoint
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

    def end_headers(self):
        # The app's files change with the code: always revalidate. The model is cached by the page (Cache API).
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format, *args):      # noqa: A002 (the base class's name)
        pass


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


def run(args) -> int:
    from .models_cache import cache_root, resolve_model
    from .package import open_package

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        package_dir = resolve_model(args.model, progress=say)
    except UserError as e:
        if not args.or_synthetic:
            raise UserError(f"{e}\n  To see the app work without the real model: kyutai-stt serve --or-synthetic "
                            f"(a tiny model with random weights: meaningless text)") from None
        say(f"{e}\n--or-synthetic: serving a SYNTHETIC model instead (random weights: the text is meaningless)")
        package_dir = synthetic_package(say)
    package = open_package(package_dir)
    site = site_for(package_dir)
    host = args.host or ("0.0.0.0" if args.https else "127.0.0.1")
    handler = functools.partial(Handler, directory=str(site))
    try:
        server = http.server.ThreadingHTTPServer((host, args.port), handler)
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{args.port} ({e.strerror or e}); choose another --port") from None
    scheme = "https" if args.https else "http"
    port = server.server_address[1]
    urls = [f"{scheme}://localhost:{port}/"]
    if args.https:
        lan = lan_addresses()
        cert, key = self_signed_certificate(cache_root() / "tls", lan)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        urls += [f"https://{a}:{port}/" for a in lan]
    label = " (SYNTHETIC: random weights, meaningless text)" if package.synthetic else ""
    say(f"serving the app and the model {package_dir}{label}")
    if args.https:
        say("the certificate is self-signed: the browser will warn once; accept it to continue")
    print("open " + "  or  ".join(urls) + "  in Chrome or Edge (WebGPU); Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
