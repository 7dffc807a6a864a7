"""Benchmark: the browser app's start-up, first visit (download) and second visit (Cache API), as one JSON line:

    {"bench": "browser_startup", "adapter": ..., "variant": ..., "package_MB": ...,
     "first": {"totalMs", "downloadMs", "compileMs", "warmUpMs", ...}, "cached": {...}}

    python benchmarks/browser_startup.py [--package PKG]     (default: the tiny synthetic package)

Headless Debian Chromium (WebGPU on SwiftShader here: compile and warm-up times are a CPU rasteriser's; on a real
GPU they are far shorter). The site is exported to a temporary directory and served on 127.0.0.1.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "web"))
from chromium import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

LOAD_TIMEOUT_MS = 600_000


def main() -> int:
    from playwright.sync_api import sync_playwright

    from kyutai_stt.site.build import export_site
    from kyutai_stt.site.server import Handler, synthetic_package

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=Path)
    args = parser.parse_args()
    package = args.package or synthetic_package(lambda m: print(m, file=sys.stderr))
    with tempfile.TemporaryDirectory() as tmp:
        site = export_site(Path(tmp) / "site", package)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(site)))
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{httpd.server_address[1]}/index.html"
        visits = []
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(Path(tmp) / "profile", executable_path=CHROMIUM,
                                                           args=CHROMIUM_ARGS, headless=False)
            for _ in range(2):
                page = context.new_page()
                page.goto(url)
                page.wait_for_function("['ready', 'error'].includes(document.body.dataset.state)",
                                       timeout=LOAD_TIMEOUT_MS)
                visits.append(page.evaluate("window.sttApp.client.info"))
                page.close()
            context.close()
        httpd.shutdown()
    if not all(visits):
        print("the page did not load the model", file=sys.stderr)
        return 1
    print(json.dumps({"bench": "browser_startup", "adapter": visits[0]["adapter"], "variant": visits[0]["variant"],
                      "package_MB": round(visits[0]["package"]["bytes"] / 1e6, 1),
                      "first": visits[0]["timings"], "cached": visits[1]["timings"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
