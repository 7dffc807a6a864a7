"""The app offline and installable: export_site versions the service worker with the site; after one visit the page
loads and transcribes a file with the network off and the server gone; the model is cached once (not a second
time by the service worker); a new site version replaces the old app cache; the manifest makes the app
installable (Chrome's own check); the PNG icons are icon.svg rendered; the in-page diagnostics.

The e2e tests serve their own copy of the site on their own port: another origin, so their service worker and
caches start empty and never reach the other browser tests."""
from __future__ import annotations

import io
import json
import shutil
import time
import wave
from pathlib import Path

import numpy as np
from chromium import AUDIO, RUN_TIMEOUT_MS, open_app, wait_state
from PIL import Image

from kyutai_stt.site import build as webapp
from kyutai_stt.site.build import SERVICE_WORKER, SITE_MARKER, WEB_DIR, app_files, export_site
from kyutai_stt.streaming.transcriber import Transcriber

ROOT = Path(__file__).resolve().parents[2]
APP_CACHE_PREFIX = "kyutai-stt-app-"
MODEL_CACHE = "kyutai-stt-v1"
# Resolves once a service worker is active (its install cached every app file): the app caches' names.
APP_CACHES = """async () => { await navigator.serviceWorker.ready;
  return (await caches.keys()).filter((n) => n.startsWith('kyutai-stt-app-')); }"""
CACHE_PATHS = """async (name) => (await (await caches.open(name)).keys()).map((r) => new URL(r.url).pathname)"""
FORGET = """async () => { for (const r of await navigator.serviceWorker.getRegistrations()) await r.unregister();
  for (const name of await caches.keys()) await caches.delete(name); }"""


def until(page, predicate: str, timeout_s: float = 60) -> None:
    """Poll an async predicate in the page (page.wait_for_function does not await a returned promise)."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(predicate):
        assert time.monotonic() < deadline, f"still false after {timeout_s} s: {predicate}"
        time.sleep(0.2)


def site_version(site: Path) -> dict:
    header = (site / SERVICE_WORKER).read_text().splitlines()[0]
    return json.loads(header.removeprefix("self.SITE = ").split(";  //")[0])


def test_service_worker_names_the_app_files_and_the_version_follows_them(tmp_path, tiny_packages, monkeypatch):
    site = export_site(tmp_path / "site", tiny_packages("q4").root)
    meta = site_version(site)
    assert meta["files"] == app_files(site)
    assert (site / SERVICE_WORKER).read_text().split("\n", 1)[1] == (WEB_DIR / SERVICE_WORKER).read_text()
    assert {"index.html", "app.js", "worker.js", "plans.json", "app.webmanifest", "icon-192.png"} <= set(meta["files"])
    assert any(f.startswith("kernels/") for f in meta["files"])
    assert not [f for f in meta["files"] if f.startswith("model/") or f in (SERVICE_WORKER, SITE_MARKER)], \
        "the model is cached by package.js, once; sw.js and the marker are not app files"
    assert all((site / f).is_file() for f in meta["files"])

    again = export_site(tmp_path / "again", tiny_packages("q4").root)
    assert site_version(again)["version"] == meta["version"], "the same files, the same version"
    web = tmp_path / "web"
    shutil.copytree(WEB_DIR, web)
    (web / "app.css").write_text((web / "app.css").read_text() + "/* changed */\n")
    monkeypatch.setattr(webapp, "WEB_DIR", web)
    changed = export_site(tmp_path / "changed", tiny_packages("q4").root)
    assert site_version(changed)["version"] != meta["version"], "a changed app file is a new version"


def test_icons_are_the_svg_rendered(browser):
    import render_icons
    page = browser.new_page()
    try:
        for size in render_icons.SIZES:
            fresh = np.asarray(Image.open(io.BytesIO(render_icons.render(page, size))).convert("RGBA"), np.float32)
            committed = np.asarray(Image.open(WEB_DIR / f"icon-{size}.png").convert("RGBA"), np.float32)
            assert committed.shape == fresh.shape == (size, size, 4)
            assert np.abs(committed - fresh).mean() < 2.0, f"icon-{size}.png is not icon.svg: run tools/render_icons.py"
    finally:
        page.close()
    manifest = json.loads((WEB_DIR / "app.webmanifest").read_text())
    assert {(i["src"], i["sizes"]) for i in manifest["icons"]} >= {("icon-192.png", "192x192"),
                                                                   ("icon-512.png", "512x512")}


def clip_wav(path: Path, seconds: float) -> bytes:
    with wave.open(str(AUDIO)) as f:
        params, frames = f.getparams(), f.readframes(int(seconds * f.getframerate()))
    with wave.open(str(path), "wb") as out:
        out.setparams(params)
        out.writeframes(frames)
    return frames


def test_offline_after_the_first_visit_installable_with_diagnostics(browser, serve_directory, tmp_path,
                                                                  tiny_packages):
    site = export_site(tmp_path / "site", tiny_packages("q4").root)
    own = serve_directory(site)
    page = None
    try:
        page, console, _ = open_app(browser, own)
        assert wait_state(page, ["ready", "error"], console=console) == "ready", page.inner_text("#error")
        version = site_version(site)["version"]
        assert page.evaluate(APP_CACHES) == [f"{APP_CACHE_PREFIX}{version}"]
        app_cached = page.evaluate(CACHE_PATHS, f"{APP_CACHE_PREFIX}{version}")
        assert sorted(app_cached) == sorted(f"/{f}" for f in app_files(site))
        # The model: in the model's cache only (its manifest and each shard once), never in the app's.
        model_cached = page.evaluate(CACHE_PATHS, MODEL_CACHE)
        shards = [f["name"] for f in json.loads((site / "model" / "manifest.json").read_text())["files"]]
        assert sorted(model_cached) == sorted(f"/model/{n}" for n in ["manifest.json", *shards])
        assert not [p for p in app_cached if p.startswith("/model/")]

        cdp = browser.new_cdp_session(page)
        manifest = cdp.send("Page.getAppManifest")
        assert manifest["url"].endswith("/app.webmanifest") and not manifest["errors"], manifest["errors"]
        assert cdp.send("Page.getInstallabilityErrors")["installabilityErrors"] == []
        cdp.detach()

        page.click("#diagnostics summary")
        page.wait_for_function("document.getElementById('diagnostics-text').textContent.startsWith('{')")
        report = json.loads(page.inner_text("#diagnostics-text"))
        assert report["adapter"]["variant"] == report["engine"]["variant"] == "cpu"     # SwiftShader
        assert report["adapter"]["limits"]["maxStorageBufferBindingSize"] > 0
        assert "timestamp-query" in report["adapter"]["features"]
        assert report["adapter"]["info"]["architecture"] == "swiftshader"
        assert report["page"]["offline"] == {"serviceWorker": True, "appCaches": [f"{APP_CACHE_PREFIX}{version}"]}
        assert report["userAgent"] and report["secureContext"] is True
        page.click("#copy-diagnostics")            # the clipboard, or (no permission) the text selected for Ctrl-C
        page.wait_for_function("/Copied|Selected/.test(document.getElementById('copy-status').textContent)")

        # Offline: the network off and the server gone; the page reloads and transcribes from the caches.
        browser.set_offline(True)
        own.close()
        served = len(own.requests)
        page.reload()
        assert wait_state(page, ["ready", "error"], console=console) == "ready", page.inner_text("#error")
        assert "(cached)" in page.inner_text("#progress-text")
        frames = clip_wav(tmp_path / "clip.wav", 1.0)
        page.set_input_files("#file", str(tmp_path / "clip.wav"))
        assert wait_state(page, ["ready", "error"], timeout=RUN_TIMEOUT_MS, console=console) == "ready"
        assert "Transcribed clip.wav" in page.inner_text("#progress-text")
        assert len(own.requests) == served
        words = page.evaluate("window.sttApp.transcript.words")
        native = Transcriber(tiny_packages("q4"), silence_prefix=0.0)
        pcm = np.frombuffer(frames, np.int16).astype(np.float32) / 32768
        expected = [e.text for e in native.feed(pcm, 24000) + native.flush() if e.type == "word"]
        assert [w["text"] for w in words] == expected
    finally:
        browser.set_offline(False)
        if page:
            page.evaluate(FORGET)
            page.close()
        own.close()


def test_a_new_site_version_replaces_the_old_app_cache(browser, serve_directory, tmp_path, monkeypatch):
    site = export_site(tmp_path / "site")          # no model: the page's load fails, the service worker does not care
    own = serve_directory(site)
    page = browser.new_page()
    try:
        page.goto(f"{own.url}/index.html")
        old = f"{APP_CACHE_PREFIX}{site_version(site)['version']}"
        assert page.evaluate(APP_CACHES) == [old]
        page.evaluate(f"async () => (await caches.open('{MODEL_CACHE}')).put('/model/x.gguf', new Response('model'))")

        web = tmp_path / "web"
        shutil.copytree(WEB_DIR, web)
        (web / "app.css").write_text((web / "app.css").read_text() + "/* version 2 */\n")
        monkeypatch.setattr(webapp, "WEB_DIR", web)
        export_site(site)
        new = f"{APP_CACHE_PREFIX}{site_version(site)['version']}"
        assert new != old
        page.evaluate("async () => (await navigator.serviceWorker.getRegistration()).update()")
        until(page, f"async () => {{ const names = await caches.keys(); const r = await "
                    f"navigator.serviceWorker.getRegistration(); return r.active?.state === 'activated' && "
                    f"!r.installing && !r.waiting && names.includes('{new}') && !names.includes('{old}'); }}")
        assert sorted(page.evaluate(CACHE_PATHS, new)) == sorted(f"/{f}" for f in app_files(site))
        css = page.evaluate(f"async () => (await (await caches.open('{new}')).match('app.css')).text()")
        assert css.endswith("/* version 2 */\n")
        assert page.evaluate("async () => (await caches.keys()).sort()") == sorted([new, MODEL_CACHE]), \
            "the update leaves the model's cache alone"

        page.click("#clear-cache")                 # "Clear cached model" deletes the model, not the app
        page.wait_for_function("document.getElementById('progress-text').textContent.includes('deleted')")
        assert page.evaluate("async () => caches.keys()") == [new]

        own.close()
        browser.set_offline(True)
        page.reload()
        assert page.evaluate("async () => (await fetch('app.css')).text()").endswith("/* version 2 */\n")
    finally:
        browser.set_offline(False)
        page.evaluate(FORGET)
        page.close()
        own.close()
