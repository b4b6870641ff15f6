"""`--to hf://spaces/<owner>/<name>` or `hf://datasets/...`: upload a published site with huggingface_hub.

The plan (repository, kind, files, the Space card that makes a Space serve the folder statically) is
built offline and tested; only `upload` talks to the Hub, and only when a token is configured.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from precompute.publish_site import MANIFEST_NAME, read_site_manifest
from sae_core.errors import ConfigError

TARGET_RE = re.compile(r"hf://(spaces|datasets)/([\w.-]+)/([\w.-]+)/?")
SPACE_CARD = """---
title: {name}
sdk: static
app_file: index.html
pinned: false
---

A saescope explorer, published with `saescope publish`.
"""


@dataclass(frozen=True)
class HubTarget:
    repo_type: str  # "space" or "dataset"
    repo_id: str


@dataclass(frozen=True)
class UploadPlan:
    target: HubTarget
    files: tuple[str, ...]
    card: str | None  # README.md to add when the site has none (a Space needs `sdk: static`)


def parse_target(text: str) -> HubTarget:
    m = TARGET_RE.fullmatch(text.strip())
    if not m:
        raise ConfigError(f"--to {text!r}: expected hf://spaces/OWNER/NAME or hf://datasets/OWNER/NAME")
    return HubTarget(repo_type=m.group(1)[:-1], repo_id=f"{m.group(2)}/{m.group(3)}")


def plan_upload(site: Path, target: HubTarget) -> UploadPlan:
    """What an upload sends: the files the last publish wrote (its manifest), plus a Space card."""
    files = read_site_manifest(site).get("files")
    if not files:
        raise ConfigError(f"{site}: no published site here; run `saescope publish INDEX {site}` first")
    card = None
    if target.repo_type == "space" and "README.md" not in files:
        card = SPACE_CARD.format(name=target.repo_id.split("/")[1])
    return UploadPlan(target=target, files=tuple(sorted([*files, MANIFEST_NAME])), card=card)


def upload(site: Path, target: HubTarget) -> str:
    """Create the repository if needed and upload the folder in one commit; returns a one-line report."""
    plan = plan_upload(site, target)
    try:
        from huggingface_hub import HfApi, get_token
    except ImportError:
        raise ConfigError("--to hf://...: needs huggingface_hub (pip install huggingface_hub)") from None
    if not get_token():
        raise ConfigError("--to hf://...: no Hugging Face token; run `huggingface-cli login` or set HF_TOKEN")
    api = HfApi()
    kind = {"space_sdk": "static"} if target.repo_type == "space" else {}
    api.create_repo(target.repo_id, repo_type=target.repo_type, exist_ok=True, **kind)
    if plan.card:
        api.upload_file(path_or_fileobj=plan.card.encode(), path_in_repo="README.md", repo_id=target.repo_id,
                        repo_type=target.repo_type)
    api.upload_folder(folder_path=str(site), repo_id=target.repo_id, repo_type=target.repo_type,
                      allow_patterns=list(plan.files), commit_message="saescope publish")
    return f"uploaded {len(plan.files):,} files to https://huggingface.co/{target.repo_type}s/{target.repo_id}"
