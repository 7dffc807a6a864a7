"""The browser app as a static site: the web/ modules, the shared kernels, the plans, and (optionally) a model package.

    site/
      *.js, *.html          kyutai_stt/web/* (the engine modules and the page)
      kernels/*.wgsl        kyutai_stt/kernels/*.wgsl: the very files the native engine runs
      plans.json            {"package_sha": sha256 of the package's manifest.json bytes, "variants": {name: plan},
                             "stream": the model's stream settings (config.stream_settings)}
      sw.js                 web/sw.js after one line naming the site's version and its app files (offline use)
      model/                the model package (manifest.json + GGUF shards), when one is copied in
      .kyutai-stt-site      marks the directory as an export (so a re-export may replace it)

export_npm() writes the embeddable client (stt-client.js, the modules it loads, the kernels, the TypeScript
declarations) as an npm package directory: `npm pack DIR` makes its tarball.

The browser never defines the network: the plans are built here, by the same code that builds the native engine's
plans (models/stt.py), once per kernel-tuning variant; web/runtime.js picks the variant from the adapter.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

from kyutai_stt import __version__
from kyutai_stt.atomic import SITE_MARKER, new_directory_for, replace_directory
from kyutai_stt.config import stream_settings
from kyutai_stt.engine import host
from kyutai_stt.engine.plan import Plan
from kyutai_stt.errors import UserError
from kyutai_stt.models import variants
from kyutai_stt.models.stt import stt_plan
from kyutai_stt.weights.package import MANIFEST, Package, open_package

WEB_DIR = Path(__file__).parents[1] / "web"
KERNEL_DIR = Path(__file__).parents[1] / "kernels"
PLANS_FILE = "plans.json"
MODEL_SUBDIR = "model"
SITE_FORMAT = {"format": "kyutai-stt-site", "version": 1}
SERVICE_WORKER = "sw.js"
# The service worker's first line: the site's version and the files it keeps for offline use (sw.js reads self.SITE).
SW_HEADER = "self.SITE = {site};  // written by kyutai_stt/site/build.py export_site\n"
NPM_NAME = "kyutai-stt"
NPM_ENTRY = "stt-client.js"
NPM_README = Path(__file__).parents[1] / "npm" / "README.md"
NPM_MARKER = ".kyutai-stt-npm"           # marks an export_npm directory (not in the tarball: "files" omits it)
# What a module of web/ loads of its siblings: static and dynamic imports, and new URL('./x.js', import.meta.url)
# (the worker, the AudioWorklet).
MODULE_REFERENCE = re.compile(r"""(?:from\s*|import\(\s*|new URL\(\s*)['"]\./([\w.-]+\.js)['"]""")


class SiteError(UserError, ValueError):
    pass


def build_plans(package: Package) -> dict[str, Plan]:
    """The whole-frame STT plan of an opened package, for every variant of data/variants.json."""
    return {name: stt_plan(package, tuning) for name, tuning in variants.tunings().items()}


def manifest_sha256(package_dir: str | Path) -> str:
    """The identity of a package as the browser checks it: SHA-256 of its manifest.json bytes."""
    return hashlib.sha256((Path(package_dir) / MANIFEST).read_bytes()).hexdigest()


def plans_document(package: Package) -> dict:
    """The content of plans.json for a package (a dev server can serve this without exporting). "host" and
    "rules": data/host.json and data/variants.json, as the native host reads them; "stream": the model's stream
    settings (config.stream_settings), the very values transcriber.py uses."""
    return {"package_sha": manifest_sha256(package.root), "host": host.document(), "rules": variants.rules(),
            "variants": {name: json.loads(plan.to_json()) for name, plan in build_plans(package).items()},
            "stream": stream_settings(package.config)}


def export_site(out_dir: str | Path, package_dir: str | Path | None = None, *, copy_model: bool = True) -> Path:
    """Write the static site into out_dir and return its path.

    package_dir: a model package (kyutai-stt convert's output). Its plans go into plans.json and, when copy_model,
    the package itself into site/model/ (hard links where the filesystem allows, else copies); with
    copy_model=False the page must be given the package's URL (the same package: plans.json names its manifest's
    SHA-256 and the page refuses any other). None: only the code and kernels, no plans.json (a page that needs
    a plans.json from elsewhere, e.g. a dev server calling plans_document()).

    Atomic: everything is written to a temporary directory next to out_dir and renamed into place, so a failure
    leaves out_dir as it was. out_dir may exist only if it is an earlier export (it is then replaced)."""
    out = Path(out_dir).resolve()
    if package_dir is not None and (out == Path(package_dir).resolve() or out in Path(package_dir).resolve().parents):
        raise SiteError(f"{out}: the site would replace the model package {package_dir} (it is the package or a "
                        "folder holding it): choose another directory")
    if out.exists() and not (out / SITE_MARKER).is_file() and not (out.is_dir() and not any(out.iterdir())):
        raise SiteError(f"{out} exists and is not a kyutai-stt site export: choose a new directory or remove it")
    package = open_package(package_dir) if package_dir is not None else None
    try:
        partial = new_directory_for(out)
    except OSError as e:
        raise SiteError(f"{out}: cannot write there ({e.strerror or e}); choose a writable directory") from None
    try:
        _write_site(partial, package, copy_model)
        replace_directory(partial, out)
    except OSError as e:                   # a full disk, a folder made read-only meanwhile
        raise SiteError(f"{out}: writing the site failed ({e.strerror or e}); nothing was left behind: free some "
                        "space or choose another directory") from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return out


def _write_site(site: Path, package: Package | None, copy_model: bool) -> None:
    os.chmod(site, 0o755)          # mkdtemp makes it 0700; a static server running as another user must read it
    for f in sorted(WEB_DIR.iterdir()):
        if f.is_dir():
            shutil.copytree(f, site / f.name, ignore=shutil.ignore_patterns("__pycache__"))
        elif f.is_file():
            shutil.copy2(f, site / f.name)
    (site / "kernels").mkdir()
    for f in sorted(KERNEL_DIR.glob("*.wgsl")):
        shutil.copy2(f, site / "kernels" / f.name)
    if package is not None:
        (site / PLANS_FILE).write_text(json.dumps(plans_document(package), separators=(",", ":")) + "\n")
        if copy_model:
            model = site / MODEL_SUBDIR
            model.mkdir()
            for name in [MANIFEST] + [f["name"] for f in package.manifest["files"]]:
                _link_or_copy(package.root / name, model / name)
    _write_service_worker(site)
    (site / SITE_MARKER).write_text(json.dumps(SITE_FORMAT) + "\n")


def app_files(site: Path) -> list[str]:
    """The files a page of the site needs, relative to the site (what the service worker keeps for offline use):
    everything but the model (package.js keeps it in its own cache: one copy), the service worker itself (the
    browser keeps it) and the export marker."""
    return sorted(p.relative_to(site).as_posix() for p in site.rglob("*")
                  if p.is_file() and p.name not in (SERVICE_WORKER, SITE_MARKER)
                  and p.relative_to(site).parts[0] != MODEL_SUBDIR)


def _write_service_worker(site: Path) -> None:
    # The version is a hash of every app file, so any change of the site (code, kernels, plans) is a new version;
    # a changed sw.js is what makes browsers install the new version and drop the old cache.
    files = app_files(site)
    digest = hashlib.sha256()
    for name in files:
        digest.update(name.encode() + b"\0" + hashlib.sha256((site / name).read_bytes()).digest())
    header = SW_HEADER.format(site=json.dumps({"version": digest.hexdigest()[:16], "files": files}))
    (site / SERVICE_WORKER).write_text(header + (WEB_DIR / SERVICE_WORKER).read_text())


def client_modules(entry: str = NPM_ENTRY) -> list[str]:
    """The web/ modules the embeddable client loads, following its imports from `entry` (nothing hard-coded)."""
    found, todo = set(), [entry]
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            todo += MODULE_REFERENCE.findall((WEB_DIR / name).read_text())
    return sorted(found)


def npm_package_json() -> dict:
    return {
        "name": NPM_NAME, "version": __version__,
        "description": "Private real-time speech-to-text (Kyutai STT) on WebGPU in a Web Worker: the embeddable "
                       "client",
        "license": "MIT", "type": "module", "sideEffects": False,
        "main": f"./{NPM_ENTRY}", "types": "./stt-client.d.ts",
        "exports": {".": {"types": "./stt-client.d.ts", "default": f"./{NPM_ENTRY}"},
                    "./package.json": "./package.json"},
        "files": ["*.js", "*.d.ts", "kernels/"],
    }


def export_npm(out_dir: str | Path) -> Path:
    """Write the embeddable client as an npm package directory (atomic as export_site; out_dir may exist only if it
    is an earlier export_npm). It holds no model and no plans: the page passes plansUrl and modelUrl of a site that
    `kyutai-stt export-web` wrote (or of a hosted package)."""
    out = Path(out_dir).resolve()
    if out.exists() and not (out / NPM_MARKER).is_file():
        raise SiteError(f"{out} exists and is not an npm package export: choose a new directory or remove it")
    partial = new_directory_for(out)
    try:
        os.chmod(partial, 0o755)
        for name in client_modules() + ["stt-client.d.ts"]:
            shutil.copy2(WEB_DIR / name, partial / name)
        (partial / "kernels").mkdir()
        for f in sorted(KERNEL_DIR.glob("*.wgsl")):
            shutil.copy2(f, partial / "kernels" / f.name)
        shutil.copy2(NPM_README, partial / "README.md")
        (partial / "package.json").write_text(json.dumps(npm_package_json(), indent=2) + "\n")
        (partial / NPM_MARKER).write_text(json.dumps({"format": "kyutai-stt-npm", "version": 1}) + "\n")
        replace_directory(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out


def _link_or_copy(src: Path, dst: Path) -> None:
    # Package files are never modified in place (convert writes a new directory), so a hard link is a safe copy.
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
