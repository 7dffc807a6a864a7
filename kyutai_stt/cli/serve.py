"""`kyutai-stt serve`: the browser app and a model package on this machine, for a browser to open.

Bound to localhost unless --host says otherwise (with --https and --host 0.0.0.0 a phone on the LAN may use its
microphone: browsers give getUserMedia and WebGPU to https pages and to localhost only; a self-signed certificate
is made for it). Model: --model as everywhere (weights/cache.resolve_model). The default is the official model,
downloaded and converted once; where the hub is unreachable the message says how to serve a local or synthetic
package instead, and --or-synthetic serves a tiny synthetic package then (labelled in the page: its text is
meaningless).
"""
from __future__ import annotations

import functools
import ssl
import sys

from kyutai_stt.errors import UserError
from kyutai_stt.site.server import (
    Handler,
    SiteServer,
    lan_addresses,
    self_signed_certificate,
    site_for,
    synthetic_package,
)
from kyutai_stt.weights.cache import cache_root, resolve_model
from kyutai_stt.weights.package import open_package

DEFAULT_PORT = 8000


def add_arguments(parser) -> None:
    parser.add_argument("--model", metavar="DIR|URL|HF_ID",
                        help="model package, checkpoint dir, package URL or HF repo (default: the official model)")
    parser.add_argument("--or-synthetic", action="store_true",
                        help="if the model cannot be had (e.g. offline), serve a tiny synthetic model instead")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any)")
    parser.add_argument("--host", help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 lets "
                                       "other devices on the network connect, e.g. a phone with --https)")
    parser.add_argument("--https", action="store_true",
                        help="serve over https with a self-signed certificate (for a phone on the LAN)")


def run(args) -> int:
    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: a port is 0 to 65535 (0: any free port)")
    try:
        package_dir = resolve_model(args.model, progress=say)
    except UserError as e:
        if not args.or_synthetic:
            raise UserError(f"{e}\n  To see the app work without the real model: kyutai-stt serve --or-synthetic "
                            f"(a tiny model with random weights: meaningless text)") from None
        say(f"{e}\n--or-synthetic: serving a SYNTHETIC model instead (random weights: the text is meaningless)")
        package_dir = synthetic_package(say)
    host = args.host or "127.0.0.1"
    package = open_package(package_dir)
    site = site_for(package_dir)
    handler = functools.partial(Handler, directory=str(site))
    try:
        server = SiteServer((host, args.port), handler)
    except (OSError, OverflowError) as e:
        raise UserError(f"cannot listen on {host}:{args.port} ({getattr(e, 'strerror', None) or e}); choose "
                        "another --port or --host") from None
    scheme = "https" if args.https else "http"
    port = server.server_address[1]
    urls = [f"{scheme}://localhost:{port}/"]
    everywhere = host not in ("127.0.0.1", "::1", "localhost")
    lan = (lan_addresses() if host in ("0.0.0.0", "::", "") else [host]) if everywhere else []
    if args.https:
        cert, key = self_signed_certificate(cache_root() / "tls", lan)
        server.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.tls.load_cert_chain(cert, key)
    if everywhere:
        urls += [f"{scheme}://{a}:{port}/" for a in lan]
    elif args.https:
        say("listening on this machine only; for a phone on the network add --host 0.0.0.0")
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
