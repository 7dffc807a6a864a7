"""The app's failures a user can meet, end to end in headless Chromium: a corrupt shard (named, and retry recovers),
no WebGPU (which browsers work), the microphone denied (how to allow it). Each shows a message that says what to do."""
from __future__ import annotations

import copy
import json
import shutil
import tempfile

from chromium import CHROMIUM, CHROMIUM_ARGS, microphone_args, open_app, wait_state, write_microphone_wav

CORRUPT = "/corrupt/"          # where the corrupt-shard test serves the site's package


def test_corrupt_shard_is_named_and_retry_recovers(browser, server):
    """The package at a URL of its own (/corrupt/model/: the site's, never cached under that URL by another test),
    one shard served with a flipped byte: the page names the shard; once the server is fixed, retry loads."""
    server.mounts[CORRUPT] = server.root
    shard = json.loads((server.root / "model" / "manifest.json").read_text())["files"][0]["name"]
    server.corrupt(f"{CORRUPT}model/{shard}", 1000)
    try:
        page, console, _ = open_app(browser, server, f"silence=0&model={CORRUPT.strip('/')}/model/")
        assert wait_state(page, ["ready", "error"], console=console) == "error"
        assert page.get_attribute("#error", "data-code") == "integrity"
        assert shard in page.inner_text("#error-message")
        assert page.inner_text("#error-fix")
        server.clear_overrides()
        retry = page.locator("#retry")
        assert retry.is_visible() and retry.is_enabled()
        # force: no wait for two still animation frames (Playwright's "stable"), which a loaded 2-core machine may
        # not paint within the click's 30 s (seen once in a full run); the button is shown and enabled above.
        retry.click(force=True)
        assert wait_state(page, ["ready", "error"], console=console) == "ready", page.inner_text("#error")
        assert any(r.startswith(f"{CORRUPT}model/") for r in server.requests)
        page.close()
    finally:
        server.clear_overrides()
        server.mounts.pop(CORRUPT, None)


def test_a_fast_path_that_does_not_compile_falls_back_to_the_portable_kernels(browser, server):
    """plans.json with a variant ahead of "cpu" for adapters with subgroups (SwiftShader has them), one of whose
    kernels is not WGSL: the worker loads the portable variant the rules give an adapter without optional features
    ("cpu"), the page says which kernels did not compile and why, and no error reaches it."""
    plans = json.loads((server.root / "plans.json").read_text())
    broken = copy.deepcopy(plans["variants"]["cpu"])
    broken["pipelines"][0]["kernel"] = "broken_fast"
    plans["variants"]["fast-broken"] = broken
    plans["rules"].insert(0, {"variant": "fast-broken", "cpu_adapter": True, "features": ["subgroup"]})
    server.overrides["/fallback-plans.json"] = json.dumps(plans).encode()
    server.overrides["/kernels/broken_fast.wgsl"] = b"fn main( {"
    try:
        page, console, _ = open_app(browser, server, "silence=0&plans=fallback-plans.json")
        assert wait_state(page, ["ready", "error"], console=console) == "ready", page.inner_text("#error")
        text = page.inner_text("#progress-text")
        assert "(cpu kernels): the faster fast-broken kernels do not compile here" in text and "broken_fast" in text
        assert not page.is_visible("#error")
        assert "/kernels/broken_fast.wgsl" in server.requests
        page.close()
    finally:
        server.clear_overrides()


def launch(playwright, extra_args: list[str], without: tuple[str, ...] = ()):
    """A second Chromium with other flags (no WebGPU, or no fake microphone permission)."""
    profile = tempfile.mkdtemp(prefix="kyutai-stt-chromium-")
    args = [a for a in CHROMIUM_ARGS if a not in without] + extra_args
    context = playwright.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=args,
                                                            headless=False)

    def close():
        context.close()
        shutil.rmtree(profile, ignore_errors=True)
    return context, close


def test_no_webgpu_says_which_browsers_work(server, playwright):
    context, close = launch(playwright, [], without=("--enable-unsafe-webgpu",))
    try:
        page, _, _ = open_app(context, server)
        assert wait_state(page, ["ready", "error"]) == "error"
        assert page.get_attribute("#error", "data-code") == "no-webgpu"
        assert "WebGPU" in page.inner_text("#error-message")
        assert "Chrome" in page.inner_text("#error-fix")
        assert page.is_disabled("#mic")
        page.click("#diagnostics summary")         # the bug report works without WebGPU too
        page.wait_for_function("document.getElementById('diagnostics-text').textContent.startsWith('{')")
        report = json.loads(page.inner_text("#diagnostics-text"))
        # This Chromium without the flag has navigator.gpu but no adapter for SwiftShader (blocklisted).
        assert report["webgpu"] == "present" and report["adapter"].startswith("requestAdapter() returned null")
        assert report["page"]["lastError"]["code"] == "no-webgpu" and report["userAgent"]
    finally:
        close()


def test_microphone_denied_says_how_to_allow_it(server, playwright, tmp_path):
    mic = write_microphone_wav(tmp_path / "mic.wav")
    args = [a for a in microphone_args(mic) if a != "--use-fake-ui-for-media-stream"]
    context, close = launch(playwright, args)
    try:
        page, console, _ = open_app(context, server)
        assert wait_state(page, ["ready", "error"], console=console) == "ready"
        page.click("#mic")              # headless Chromium without the fake-UI flag denies the permission prompt
        assert wait_state(page, ["error"], timeout=30_000, console=console) == "error"
        assert page.get_attribute("#error", "data-code") == "mic-denied"
        assert "Allow microphone access" in page.inner_text("#error-fix")
    finally:
        close()
