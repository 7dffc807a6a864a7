"""Browser tests: the exported site served over local HTTP to a real headless Chromium (WebGPU on SwiftShader).

Fixtures:
  site        the static site export_site() writes for the tiny q4 package (tests/conftest.py's tiny_packages)
  server      a threaded HTTP server on 127.0.0.1 serving the site at / and tests/web/harness/ at /test/; it
              records the paths it served (server.requests), can serve other bytes for a path
              (server.overrides, server.corrupt) or fail requests with HTTP 503 (server.failures), and serve
              other directories under a path (server.mounts, e.g. an npm package's node_modules/)
  browser     one Chromium for the session (launched from /usr/bin/chromium with a fresh profile; never
              `playwright install`): missing Chromium or no WebGPU adapter fails the tests, they are not skipped
  page        a page of the harness (tests/web/harness/index.html) with the console captured
"""
from __future__ import annotations

import base64
import functools
import shutil
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from chromium import CHROMIUM, CHROMIUM_ARGS, microphone_args, write_microphone_wav

from kyutai_stt.engine import device as gpu
from kyutai_stt.site.build import export_site
from kyutai_stt.site.server import MIME_TYPES

HARNESS = Path(__file__).parent / "harness"
MIME = {**MIME_TYPES, ".wav": "audio/wav"}        # what `kyutai-stt serve` sends, and the test clips


@pytest.fixture(scope="session")
def site(tiny_packages, tmp_path_factory) -> Path:
    return export_site(tmp_path_factory.mktemp("web") / "site", tiny_packages("q4").root)


class _Handler(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, **MIME}

    def __init__(self, *args, state, **kwargs):
        self.state = state
        super().__init__(*args, **kwargs)

    def translate_path(self, path):
        return str(self.state.file_of(path.split("?", 1)[0].split("#", 1)[0]))

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        with self.state.lock:
            self.state.requests.append(path)
            data = self.state.overrides.get(path)
            fail = self.state.failures.get(path, 0)
            if fail:
                self.state.failures[path] = fail - 1
        if fail:
            self.send_error(503, "injected failure")
            return None
        if data is None:
            return super().do_GET()
        self.send_response(200)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class Server:
    def __init__(self, root: Path):
        self.root = root
        self.requests: list[str] = []
        self.overrides: dict[str, bytes] = {}  # served path -> the bytes sent instead of the file's
        self.failures: dict[str, int] = {}     # served path -> how many more requests get HTTP 503
        self.mounts: dict[str, Path] = {}      # path prefix ("/x/") -> the directory served there
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, state=self))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def file_of(self, path: str) -> Path:
        """The file served at URL path `path`: the harness under /test/, a mount under its prefix, else the site."""
        if path.startswith("/test/"):
            return HARNESS / path[len("/test/"):]
        for prefix, directory in self.mounts.items():
            if path.startswith(prefix):
                return directory / path[len(prefix):]
        return self.root / path.lstrip("/")

    def corrupt(self, path: str, offset: int) -> None:
        """Serve the file at `path` with the byte at `offset` flipped (until clear_overrides())."""
        data = bytearray(self.file_of(path).read_bytes())
        data[offset] ^= 0xFF
        self.overrides[path] = bytes(data)

    def clear_overrides(self) -> None:
        self.overrides.clear()
        self.failures.clear()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="session")
def server(site):
    s = Server(site)
    yield s
    s.close()


@pytest.fixture
def serve_directory():
    """serve_directory(root) -> a Server of another directory on its own port: another origin, so its service
    worker and caches are its own (closed after the test)."""
    servers = []

    def start(root: Path) -> Server:
        servers.append(Server(root))
        return servers[-1]
    yield start
    for s in servers:
        s.close()


@pytest.fixture(scope="session")
def playwright():
    """One Playwright driver for the session (its sync API cannot be started twice in one thread)."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(server, playwright):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium); the browser tests "
                    "need it (never `playwright install`)")
    profile = tempfile.mkdtemp(prefix="kyutai-stt-chromium-")
    mic = write_microphone_wav(Path(profile).with_suffix(".mic.wav"))
    # headless=False: Playwright would add its own headless flag; --headless=new is in CHROMIUM_ARGS.
    context = playwright.chromium.launch_persistent_context(profile, executable_path=CHROMIUM,
                                                            args=CHROMIUM_ARGS + microphone_args(mic), headless=False)
    try:
        probe = context.new_page()
        probe.goto(f"{server.url}/test/index.html")
        adapter = probe.evaluate("async () => { const a = await navigator.gpu?.requestAdapter(); "
                                 "return a ? a.info.architecture || a.info.vendor || 'unknown' : null; }")
        probe.close()
        if not adapter:
            pytest.fail("Chromium offers no WebGPU adapter (needs --enable-unsafe-webgpu and SwiftShader)")
        yield context
    finally:
        context.close()
        shutil.rmtree(profile, ignore_errors=True)
        mic.unlink(missing_ok=True)


class Page:
    """A harness page; console errors are kept so a failing test can show them."""

    def __init__(self, context, url):
        self.console: list[str] = []
        self.page = context.new_page()
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        self.page.goto(url)
        self.page.wait_for_function("window.harnessReady === true")

    def call(self, function: str, *args, timeout_ms: int = 300_000):
        """await window.harness[function](...args) in the page (page.evaluate itself never times out: the page
        races the call against timeout_ms); JS exceptions come back with the page's last console lines."""
        script = """([f, args, ms]) => Promise.race([window.harness[f](...args), new Promise((_, reject) =>
            setTimeout(() => reject(new Error(`${f} still running after ${ms} ms`)), ms))])"""
        try:
            return self.page.evaluate(script, [function, list(args), timeout_ms])
        except Exception as e:
            raise AssertionError(f"{function} failed in the browser: {e}\nconsole:\n"
                                 + "\n".join(self.console[-20:])) from None

    def close(self):
        self.page.close()


@pytest.fixture(scope="module")
def page(browser, server):
    p = Page(browser, f"{server.url}/test/index.html")
    yield p
    p.close()


class BrowserKernels:
    """gpu.run_kernel's signature and results, computed by the browser (tests/web/harness/harness.js runKernel)."""

    def __init__(self, page: Page):
        self.page = page

    def run_kernel(self, name, bindings, workgroups, constants=None, entry="main"):
        entries, outputs = [], {}
        for index, value in sorted(bindings.items()):
            if isinstance(value, gpu.Uniform):
                kind = "uniform"
                data = value.data if isinstance(value.data, bytes) else np.ascontiguousarray(value.data).tobytes()
            elif isinstance(value, gpu.Output):
                kind = "output"
                initial = np.zeros(value.shape, value.dtype)
                if value.fill is not None:
                    initial[...] = value.fill
                data = initial.tobytes()
                outputs[index] = value
            else:
                kind, data = "storage", np.ascontiguousarray(value).tobytes()
            entries.append({"binding": index, "kind": kind, "data": base64.b64encode(data).decode()})
        constants = {k: _json_number(v) for k, v in (constants or {}).items()}
        workgroups = list(workgroups) + [1] * (3 - len(workgroups))
        got = self.page.call("runKernel", {"kernel": name, "entry": entry, "constants": constants,
                                           "bindings": entries, "workgroups": workgroups})
        return {index: np.frombuffer(base64.b64decode(got[str(index)]), out.dtype).reshape(out.shape).copy()
                for index, out in outputs.items()}


@pytest.fixture(scope="module")
def browser_kernels(page):
    return BrowserKernels(page)


def _json_number(value):
    """Override constants as JSON numbers (bools as 0/1, numpy scalars as Python ones)."""
    if isinstance(value, (bool, np.bool_, int, np.integer)):
        return int(value)
    return float(value)
