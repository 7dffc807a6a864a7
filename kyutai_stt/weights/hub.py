"""Where a checkpoint comes from: a local directory in the official layout, or a Hugging Face repo downloaded into
the Hugging Face cache (resumable, with progress bars) and then used as a local directory.

After `checkpoint_dir()` returns, conversion is the same code for both, so the local path (tested here on synthetic
checkpoints) is the path the real download takes.
"""
from __future__ import annotations

import re
import socket
from pathlib import Path
from urllib.parse import urlparse

from kyutai_stt.config import LM_FILE, LMConfig
from kyutai_stt.errors import UserError

DEFAULT_REPO = "kyutai/stt-1b-en_fr-candle"
CONFIG_FILE = "config.json"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
PROBE_TIMEOUT_S = 5.0       # huggingface_hub retries an unreachable host for ~25 s with noisy logs: probe first


class HubError(UserError):
    pass


def checkpoint_dir(source: str, revision: str | None = None) -> Path:
    """SOURCE (a directory, or a repo id such as kyutai/stt-1b-en_fr-candle) -> a directory holding config.json,
    model.safetensors, the Mimi file and the tokenizer named in the config."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise HubError(f"{source}: not a directory (SOURCE is a checkpoint directory or a Hugging Face repo id)")
    if not _REPO_ID.match(source):
        raise HubError(f"{source}: no such directory, and not a Hugging Face repo id (owner/name)")
    return download(source, revision)


def download(repo_id: str, revision: str | None = None) -> Path:
    """Fetch the four files of an official STT repo into the Hugging Face cache; return their snapshot directory."""
    try:
        import huggingface_hub
        from huggingface_hub import constants as hub_constants
    except ImportError:
        raise HubError("downloading from Hugging Face needs the huggingface-hub package "
                       "(pip install huggingface-hub), or convert a local checkpoint directory") from None
    # Offline (no route, no DNS, HF_HUB_OFFLINE): use the cache if it holds the files, else fail at once.
    offline = "HF_HUB_OFFLINE is set" if hub_constants.HF_HUB_OFFLINE else \
        None if _reachable(hub_constants.ENDPOINT) else f"{hub_constants.ENDPOINT} is unreachable"
    local_only = offline is not None
    try:
        def fetch(name: str) -> Path:
            return Path(huggingface_hub.hf_hub_download(repo_id, name, revision=revision,
                                                        local_files_only=local_only))
        config_path = fetch(CONFIG_FILE)
        config = LMConfig.load(config_path)    # checked first: the file names in it are plain names
        for name in (LM_FILE, config.mimi_name, config.tokenizer_name, config.mimi_config_name):
            if name:                   # mimi_config_name: only where the config names one
                fetch(name)
    except UserError:
        raise
    except Exception:            # offline, DNS, refused connection, 404, gated repo: all user-fixable
        if local_only:
            e = ConnectionError(f"{offline}, and the files are not in the Hugging Face cache")
        raise HubError(_unreachable_message(repo_id, e)) from None
    return config_path.parent         # every file of one revision lies in the same snapshot directory


def _reachable(endpoint: str) -> bool:
    """Whether a TCP connection to the hub's host opens within PROBE_TIMEOUT_S (DNS failures return at once)."""
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def _unreachable_message(repo_id: str, error: Exception) -> str:
    reason = f"{type(error).__name__}: {error}".splitlines()[0][:300]
    return (f"could not download {repo_id} from the Hugging Face hub ({reason}).\n"
            f"  Check the network (or HF_HUB_OFFLINE / HF_ENDPOINT), or download the files elsewhere "
            f"({CONFIG_FILE}, {LM_FILE}, the Mimi .safetensors and the tokenizer .model named in {CONFIG_FILE})\n"
            f"  and convert that directory instead: kyutai-stt convert /path/to/checkpoint OUT_DIR")
