"""`hf://owner/repo[/subfolder]`: SAE checkpoints on the Hugging Face Hub, through huggingface_hub's cache.

SAELens, sparsify and saev releases keep one SAE per sub-folder (`hf://EleutherAI/sae-xyz/layers.6`).
Only that sub-folder is downloaded (or, with `HF_HUB_OFFLINE=1`, found in the local cache); the
local folder then goes through the ordinary format detection. huggingface_hub is imported only
for such paths.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from sae_core.errors import FormatError

PREFIX = "hf://"
_REPO = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def is_hub_path(path: str | Path) -> bool:
    return str(path).startswith(PREFIX)


def split_hub_path(path: str) -> tuple[str, str, str | None]:
    """`hf://owner/repo/sub/dir@rev` -> ("owner/repo", "sub/dir", "rev" or None)."""
    rest = str(path)[len(PREFIX):]
    rest, _, revision = rest.partition("@")
    parts = [p for p in rest.split("/") if p]
    repo = "/".join(parts[:2])
    if len(parts) < 2 or not _REPO.fullmatch(repo):
        raise FormatError(f"{path}: a hub SAE is hf://owner/repo[/subfolder][@revision], e.g. hf://EleutherAI/sae-pythia-70m-32k/layers.3")
    return repo, "/".join(parts[2:]), revision or None


def resolve_hub_path(path: str) -> Path:
    """The local folder holding the checkpoint `hf://...` names, downloading it when online."""
    repo, subfolder, revision = split_hub_path(path)
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise FormatError(f"{path}: hub SAEs need huggingface_hub (pip install huggingface_hub)") from None
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    try:
        root = snapshot_download(repo, revision=revision, allow_patterns=[f"{subfolder}/*"] if subfolder else None,
                                 cache_dir=os.environ.get("HF_HUB_CACHE") or None, local_files_only=offline)
    except Exception as e:  # huggingface_hub raises many kinds (offline, missing repo, no network)
        hint = "it is not in the local cache (HF_HUB_OFFLINE=1)" if offline else "check the name or your network"
        raise FormatError(f"{path}: cannot fetch {repo} from the Hugging Face Hub ({type(e).__name__}); {hint}") from None
    local = Path(root) / subfolder
    if not local.exists():
        raise FormatError(f"{path}: {repo} has no sub-folder {subfolder!r}")
    return local
