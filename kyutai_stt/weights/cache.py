"""Which model package a command uses: `--model` resolved to a package directory, converted or downloaded once.

    (none)               the official model (hub.DEFAULT_REPO): downloaded, converted to q4 once, then cached
    PACKAGE_DIR          a directory holding manifest.json: used as it is
    CHECKPOINT_DIR       an official-layout checkpoint (config.json + model.safetensors ...): converted once, cached
    https://.../         a package hosted on any static server (e.g. a Hugging Face repo's /resolve/main/):
                         manifest.json and its files downloaded once (resumable, SHA-256 checked), cached
    owner/name           a Hugging Face checkpoint repo: downloaded, converted once, cached

The cache lives in $KYUTAI_STT_CACHE, else $XDG_CACHE_HOME/kyutai-stt, else ~/.cache/kyutai-stt.
"""
from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from kyutai_stt.atomic import write_atomic
from kyutai_stt.config import LM_FILE
from kyutai_stt.errors import UserError
from kyutai_stt.weights import hub
from kyutai_stt.weights.convert import convert
from kyutai_stt.weights.package import MANIFEST, MAX_MANIFEST_BYTES, PackageError, parse_manifest, sha256_file

DEFAULT_QUANT = "q4"
DOWNLOAD_CHUNK = 1 << 20
DOWNLOAD_TIMEOUT_S = 30


class ModelError(UserError):
    pass


def cache_root() -> Path:
    if os.environ.get("KYUTAI_STT_CACHE"):
        return Path(os.environ["KYUTAI_STT_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kyutai-stt"


def resolve_model(spec: str | None, progress=None) -> Path:
    """--model SPEC -> a package directory (see the module docstring). progress(message) reports long steps."""
    say = progress or (lambda message: None)
    if spec is None:
        return _converted(hub.DEFAULT_REPO, say, default=True)
    if re.match(r"^https?://", spec):
        return _downloaded(spec, say)
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / MANIFEST).is_file():
            return path
        if (path / "config.json").is_file() and (path / LM_FILE).is_file():
            return _converted(str(path.resolve()), say)
        raise ModelError(f"{spec}: neither a model package (no {MANIFEST}) nor an official checkpoint directory "
                         f"(config.json + {LM_FILE}). Make a package with: kyutai-stt convert CHECKPOINT OUT_DIR")
    if path.exists():
        raise ModelError(f"{spec}: not a directory (--model takes a package directory, a URL or a repo id)")
    if not re.match(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$", spec) or spec.startswith((".", "/")):
        raise ModelError(f"{spec}: no such model package directory")
    return _converted(spec, say)


def _converted(source: str, say, default: bool = False) -> Path:
    """The q4 package of a checkpoint (directory or repo id), converting it into the cache the first time."""
    key = re.sub(r"[^\w.-]+", "--", source.strip("/"))[-80:]
    if Path(source).is_absolute():
        key += "-" + hashlib.sha256(source.encode()).hexdigest()[:8]
    out = cache_root() / "packages" / f"{key}-{DEFAULT_QUANT}"
    if (out / MANIFEST).is_file():
        return out
    say(f"getting and converting {source} into {out} (first use only)")
    try:
        convert(source, out, DEFAULT_QUANT)
    except hub.HubError as e:
        if not default:
            raise
        raise ModelError(
            f"the default model ({hub.DEFAULT_REPO}) is downloaded from the Hugging Face hub and converted once, "
            f"but that failed: {str(e).splitlines()[0]}\n"
            f"  Use a local model package instead: --model PACKAGE_DIR (kyutai-stt convert CHECKPOINT_DIR OUT_DIR "
            f"makes one from a downloaded checkpoint),\n"
            f"  or, to try the pipeline with random weights: kyutai-stt synth --size tiny ckpt && "
            f"kyutai-stt convert ckpt pkg && ... --model pkg") from None
    return out


def _downloaded(url: str, say) -> Path:
    """A package hosted at URL (the directory holding manifest.json), mirrored into the cache file by file."""
    base = url.removesuffix(MANIFEST)
    base = base if base.endswith("/") else base + "/"
    out = cache_root() / "downloads" / hashlib.sha256(base.encode()).hexdigest()[:16]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelError(f"cannot create the download cache {out} ({e.strerror or e}): set KYUTAI_STT_CACHE to "
                         "a writable folder") from None
    try:
        manifest_bytes = _fetch(base + MANIFEST)
    except (urllib.error.URLError, OSError, ValueError) as e:
        if (out / MANIFEST).is_file():
            say(f"{base} unreachable ({e}); using the cached copy")
            return out
        raise ModelError(f"could not download {base + MANIFEST}: {e}\n  Check the URL and the network, or "
                         f"download the package's files and pass their directory: --model PACKAGE_DIR") from None
    # Every field, file name and the config against the tensors are checked before anything is written: a name
    # is then a plain file name (package.SAFE_FILE_NAME), so out / name stays inside out.
    try:
        manifest = parse_manifest(manifest_bytes, base + MANIFEST)
    except PackageError as e:
        raise ModelError(f"{e}\n  This URL does not serve a usable kyutai-stt package; nothing was downloaded.") \
            from None
    files = [(f["name"], f["bytes"], f["sha256"]) for f in manifest["files"]]
    for name, size, sha in files:
        target = out / name
        if target.is_file() and target.stat().st_size == size and sha256_file(target) == sha:
            continue
        say(f"downloading {name} ({size / 1e6:.1f} MB)")
        _download_file(base + name, target, size, sha)
    write_atomic(out / MANIFEST, manifest_bytes)
    return out


def _fetch(url: str) -> bytes:
    """A manifest: at most MAX_MANIFEST_BYTES are read (a host streaming more is refused, not stored)."""
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as r:
        data = r.read(MAX_MANIFEST_BYTES + 1)
    if len(data) > MAX_MANIFEST_BYTES:
        raise ModelError(f"{url}: more than {MAX_MANIFEST_BYTES} bytes: not a kyutai-stt package manifest")
    return data


def _download_file(url: str, target: Path, size: int, sha: str) -> None:
    """Resumes a partial download (HTTP Range) and only renames the file into place once its SHA-256 matches.
    The size and hash are checked as the bytes stream in: a host sending more than the manifest declares is cut
    off at the first byte too many, and nothing of it is kept."""
    partial = target.with_name(target.name + ".partial")
    have = partial.stat().st_size if partial.is_file() else 0
    resume = 0 < have < size
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if resume else {})
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as r:
            if resume and r.status == 206 and r.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
                with open(partial, "rb") as f:
                    while block := f.read(DOWNLOAD_CHUNK):
                        digest.update(block)
                mode, written = "ab", have
            else:
                mode, written = "wb", 0
            with open(partial, mode) as f:
                while chunk := r.read(DOWNLOAD_CHUNK):
                    written += len(chunk)
                    if written > size:
                        raise _TooLong()
                    digest.update(chunk)
                    f.write(chunk)
    except _TooLong:
        partial.unlink(missing_ok=True)
        raise ModelError(f"{url}: the host sent more than the {size} bytes the manifest declares; the download "
                         "was stopped and deleted: check that the host serves the package unchanged") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise ModelError(f"download of {url} failed ({e}); run the command again to resume it") from None
    if written != size or digest.hexdigest() != sha:
        partial.unlink(missing_ok=True)
        raise ModelError(f"{url}: the downloaded file does not match the manifest ({written} of {size} bytes, "
                         f"or the SHA-256 differs); run again to retry, or check that the host serves the package "
                         f"unchanged")
    os.replace(partial, target)


class _TooLong(Exception):
    pass
