"""package.js in Chromium: download with byte-level progress, SHA-256 checks, the Cache API, retries, quota.

The harness's loadPackage() runs loadShards() on the site's model/ with a shard callback that hashes what it is
given; the server records every path it serves, so "from the cache" means "no request for a shard".
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def manifest(site):
    return json.loads((site / "model" / "manifest.json").read_text())


def shard_requests(server, manifest):
    names = {f"/model/{f['name']}" for f in manifest["files"]}
    with server.lock:
        return [p for p in server.requests if p in names]


def test_download_with_progress_then_from_the_cache(page, server, manifest):
    page.call("clearCache")
    before = len(shard_requests(server, manifest))
    first = page.call("loadPackage")
    assert "error" not in first, first
    files = manifest["files"]
    assert len(shard_requests(server, manifest)) - before == len(files), "each shard downloaded exactly once"
    assert first["result"] == {"cachedFiles": 0, "downloadedFiles": len(files), "bytes": manifest["total_bytes"]}
    # Byte-level progress: many events, never going back, ending at the manifest's total.
    assert first["monotonic"] and first["events"] > len(files)
    assert first["last"]["loaded"] == first["last"]["total"] == manifest["total_bytes"]
    # The callback got each shard whole and intact, in manifest order.
    assert first["shards"] == [{"name": f["name"], "bytes": f["bytes"], "sha256": f["sha256"]} for f in files]

    before = len(shard_requests(server, manifest))
    second = page.call("loadPackage")
    assert len(shard_requests(server, manifest)) == before, "a second load fetched shards instead of the cache"
    assert second["result"]["cachedFiles"] == len(files) and second["result"]["downloadedFiles"] == 0
    assert second["last"]["loaded"] == manifest["total_bytes"] and second["shards"] == first["shards"]


def test_corrupt_shard_is_named_retried_and_never_cached(page, server, manifest):
    page.call("clearCache")
    name = manifest["files"][0]["name"]
    server.corrupt(f"/model/{name}", manifest["files"][0]["bytes"] // 2)
    try:
        before = len(shard_requests(server, manifest))
        failed = page.call("loadPackage", {"retries": 1})
        assert len(shard_requests(server, manifest)) - before == 2, "one retry of the corrupt file"
    finally:
        server.clear_overrides()
    error = failed["error"]
    assert error["code"] == "integrity" and f"corrupt download of {name}" in error["message"]
    assert "SHA-256" in error["message"] and "clear" in error["message"] and error["fix"]
    # Nothing corrupt was cached: the next load downloads the file again and succeeds.
    again = page.call("loadPackage")
    assert again["result"]["downloadedFiles"] == len(manifest["files"])


def test_transient_server_errors_are_retried(page, server, manifest):
    page.call("clearCache")
    name = manifest["files"][-1]["name"]
    server.failures[f"/model/{name}"] = 2
    try:
        loaded = page.call("loadPackage", {"retries": 2})
    finally:
        server.clear_overrides()
    assert "error" not in loaded, loaded
    assert loaded["result"]["downloadedFiles"] == len(manifest["files"])

    page.call("clearCache")
    server.failures[f"/model/{name}"] = 2
    try:
        failed = page.call("loadPackage", {"retries": 1})
    finally:
        server.clear_overrides()
    assert failed["error"]["code"] == "download" and name in failed["error"]["message"]
    assert "503" in failed["error"]["message"]


def test_not_enough_storage_is_reported_before_downloading(page, server, manifest):
    page.call("clearCache")
    before = len(shard_requests(server, manifest))
    failed = page.call("loadPackage", {"fakeQuota": manifest["total_bytes"] // 2})
    assert failed["error"]["code"] == "quota" and "storage" in failed["error"]["message"]
    assert len(shard_requests(server, manifest)) == before, "nothing downloaded when it cannot be stored"


def test_manifest_file_names_are_checked_before_any_request(page, server, manifest):
    """Names are data: the shared vectors (tests/vectors/file_names.json, also run by tests/test_package_names.py
    against package.py) through package.js's check; a manifest with one bad name is refused before any fetch."""
    vectors = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "file_names.json").read_text())
    verdicts = page.page.evaluate("""async (v) => {
        const m = await import('/package.js');
        return {accepted: v.accepted.map(m.isSafeFileName), refused: v.refused.map(m.isSafeFileName),
                not_strings: v.not_strings.map(m.isSafeFileName)};
    }""", vectors)
    assert verdicts["accepted"] == [True] * len(vectors["accepted"])
    assert [n for n, ok in zip(vectors["refused"], verdicts["refused"]) if ok] == []
    assert verdicts["not_strings"] == [False] * len(vectors["not_strings"])
    good = manifest["files"][0]
    for bad in ("../../x.sh", "/etc/passwd", "https://evil.example/x.gguf", "//evil.example/x", ".hidden"):
        doctored = {**manifest, "files": [{**good, "name": bad}]}
        with server.lock:
            before = len(server.requests)
        error = page.page.evaluate("""async (m) => {
            const pkg = await import('/package.js');
            try {
                await pkg.loadShards({baseUrl: '/model/', manifest: m, onShard: () => {}});
                return null;
            } catch (e) { return {code: e.code, message: e.message}; }
        }""", doctored)
        with server.lock:
            made = server.requests[before:]       # a late request of an earlier load may land here: not this one's
        assert error is not None and error["code"] == "integrity" and "not a plain file name" in error["message"], bad
        stem = bad.strip("/").split("/")[-1]
        assert not [p for p in made if p.endswith("/" + stem) or p.endswith(".gguf")], \
            f"{bad}: requests were made before the manifest was refused: {made}"
