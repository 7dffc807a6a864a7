"""export_site (kyutai_stt/site/build.py): the static site's layout, its plans, atomic replacement; and a plan-level
check that matters only in browsers: no kernel reads a vector past the end of a buffer the plan binds."""
from __future__ import annotations

import hashlib
import json
import re

import pytest

from kyutai_stt.engine.plan import Plan
from kyutai_stt.models import variants
from kyutai_stt.models.stt import stt_plan
from kyutai_stt.site.build import KERNEL_DIR, WEB_DIR, SiteError, build_plans, export_site

ENGINE_MODULES = ("runtime.js", "package.js", "worker.js", "protocol.js", "errors.js", "audio-processor.js",
                  "stt-client.js")


def test_site_layout_plans_and_model(site, tiny_packages):
    package = tiny_packages("q4")
    for name in ENGINE_MODULES:
        assert (site / name).read_bytes() == (WEB_DIR / name).read_bytes(), name
    kernels = sorted(p.name for p in KERNEL_DIR.glob("*.wgsl"))
    assert sorted(p.name for p in (site / "kernels").iterdir()) == kernels
    assert all((site / "kernels" / k).read_bytes() == (KERNEL_DIR / k).read_bytes() for k in kernels)
    for f in ["manifest.json"] + [f["name"] for f in package.manifest["files"]]:
        assert (site / "model" / f).read_bytes() == (package.root / f).read_bytes(), f

    document = json.loads((site / "plans.json").read_text())
    assert document["package_sha"] == hashlib.sha256((package.root / "manifest.json").read_bytes()).hexdigest()
    tunings = variants.tunings()
    assert set(document["variants"]) == set(tunings) == {"gpu", "gpu-subgroup", "gpu-int8", "gpu-int8-subgroup",
                                                         "gpu-f16", "cpu"}
    for name, tuning in tunings.items():
        assert Plan.from_json(json.dumps(document["variants"][name])) == stt_plan(package, tuning), name
    assert document["rules"] == variants.rules() and document["host"]["readback_depth"] == 2
    assert document["variants"]["gpu-subgroup"]["required_features"] == ["subgroup"]
    assert document["variants"]["cpu"]["required_features"] == []
    assert document["variants"]["gpu-int8"]["required_language_features"] == ["packed_4x8_integer_dot_product"]
    assert document["variants"]["gpu-int8-subgroup"]["required_features"] == ["subgroup"]
    assert document["variants"]["gpu"]["required_language_features"] == []
    assert document["variants"]["gpu-f16"]["required_features"] == ["shader-f16"]


def test_reexport_replaces_atomically_and_strangers_are_left_alone(tmp_path, tiny_packages, monkeypatch):
    package = tiny_packages("q4")
    out = export_site(tmp_path / "site")                       # code only: no plans, no model
    assert (out / "runtime.js").is_file() and not (out / "plans.json").exists() and not (out / "model").exists()
    (out / "stale.txt").write_text("from an older export")
    export_site(out, package.root, copy_model=False)
    assert (out / "plans.json").is_file() and not (out / "model").exists() and not (out / "stale.txt").exists()

    from kyutai_stt.site import build as webapp

    def broken(site, *args):
        (site / "half-written").write_text("x")
        raise OSError("disk full")
    monkeypatch.setattr(webapp, "_write_site", broken)
    with pytest.raises(SiteError, match="writing the site failed .*disk full.*nothing was left behind"):
        export_site(out, package.root)
    assert (out / "plans.json").is_file() and not (out / "half-written").exists(), "the old export is intact"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"], "no partial directory left behind"

    stranger = tmp_path / "notes"
    stranger.mkdir()
    (stranger / "mine.txt").write_text("keep me")
    with pytest.raises(SiteError, match="not a kyutai-stt site export"):
        export_site(stranger, package.root)
    assert (stranger / "mine.txt").read_text() == "keep me"


# `var<storage, ...> name: array<vecN<...>>` at a binding: the kernel reads that buffer N elements at a time.
VECTOR_BINDING = re.compile(r"@binding\((\d+)\)\s*var<storage[^>]*>\s*\w+\s*:\s*array<vec(\d)<")


def test_vector_bindings_are_whole_vectors(tiny_packages):
    """A buffer read as array<vec4<f32>> must hold whole vec4s: a read of a vector that crosses the end is out of
    bounds; lavapipe happens to return the allocation's padding, Chrome's bounds checks clamp it to another vector
    (seen with a 37-float bias: tests/web/test_kernels_browser.py). Every variant's plan binds whole vectors."""
    widths = {p.stem: {int(b): int(n) for b, n in VECTOR_BINDING.findall(p.read_text())}
              for p in KERNEL_DIR.glob("*.wgsl")}
    assert widths["conv1d"][4] == 4, "the pattern finds the vec4 params binding it is meant to check"
    for variant, plan in build_plans(tiny_packages("q4")).items():
        sizes = {b.name: b.size for b in plan.buffers}
        kernel = {p.name: p.kernel for p in plan.pipelines}
        for d in plan.dispatches:
            for binding, buffer in d.bindings.items():
                width = widths[kernel[d.pipeline]].get(binding)
                assert not width or sizes[buffer] % (4 * width) == 0, \
                    f"{variant}: {d.label} binding {binding} ({buffer}, {sizes[buffer]} bytes) read as vec{width}"
