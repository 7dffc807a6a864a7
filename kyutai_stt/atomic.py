"""Writing without leaving anything half-written: a file through a temporary file and a rename, a directory
through a temporary directory and a rename. Both temporaries live next to the target (same filesystem)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from kyutai_stt.errors import UserError

# Marks a directory written by export_site (site/build.py): `--force` may replace it, as it may a model package.
SITE_MARKER = ".kyutai-stt-site"


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write text (UTF-8, newlines as given) or bytes to path: readers see the old file or the new, never a part."""
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise UserError(f"{path}: the folder {folder} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise UserError(f"{path}: cannot write in {folder} ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise UserError(f"{path}: cannot write it ({e.strerror or e})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def new_directory_for(target: Path) -> Path:
    """An empty temporary directory next to target, to fill and then hand to replace_directory()."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))


def replace_directory(new: Path, target: Path) -> None:
    """Put the finished directory `new` at `target`. An existing target is first moved aside (and deleted
    after), so the path always names a complete directory: the old one or the new one."""
    if not target.exists():
        os.replace(new, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, old / target.name)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)
