"""What makes two extractions the same: the model's weights, not how its path was spelled.

A store's folder id hashes the model's identity. For `hf:` and `diffusers:` models that is
(canonical spec, weights revision): a local folder's spec is its resolved absolute path and its
revision a content hash of the folder's files, so re-saved weights get a new store and
`hf:clip` / `hf:/abs/clip` share one; a hub name's revision is the commit it resolved to.
`open_clip:` follows the same rules: a folder by its files' hash, an architecture by the
revision its `--pretrained` resolves to (a checkpoint file's hash, or `tag@commit`).
Packaged models (`efficientnet-lite0`, `minilm`) are pinned by their package versions.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

HUB_PREFIXES = ("hf:", "diffusers:", "open_clip:")
SKIPPED_SUFFIXES = (".md", ".txt.lock", ".lock")
"""Files that never change a model's outputs (model cards, download locks)."""


def split_spec(spec: str) -> tuple[str, str]:
    """`hf:clip` -> ("hf:", "clip"); a packaged model's spec has no prefix."""
    for prefix in HUB_PREFIXES:
        if spec.startswith(prefix):
            return prefix, spec[len(prefix):]
    return "", spec


def local_folder(spec: str) -> Path | None:
    """The folder an `hf:`/`diffusers:` spec names, resolved, or None for hub names and packaged models."""
    prefix, name = split_spec(spec)
    if not prefix or not name:
        return None
    path = Path(name).expanduser()
    return path.resolve() if path.is_dir() else None


def canonical_spec(spec: str) -> str:
    """Local folders by their absolute path; hub names and packaged models as given."""
    folder = local_folder(spec)
    return f"{split_spec(spec)[0]}{folder}" if folder is not None else spec


def folder_hash(folder: Path) -> str:
    """SHA-256 over the relative names and contents of every file under `folder` (hidden files
    and model cards excepted): weights, configs, processor and tokenizer files all change outputs."""
    digest = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not _skipped(p.relative_to(folder)))
    for path in files:
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        with open(path, "rb") as f:
            digest.update(hashlib.file_digest(f, "sha256").digest())
    return "sha256:" + digest.hexdigest()


def _skipped(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts) or rel.name.lower().endswith(SKIPPED_SUFFIXES)


def store_identity(spec: str, revision: str | None) -> dict:
    """The model's part of a store id: for hub-style specs `{"model", "model_revision"}` with
    the path left out of local folders (their content hash says it all); packaged models keep
    `{"model": spec}`, so their store ids stay what they were."""
    prefix, _ = split_spec(spec)
    if not prefix:
        return {"model": spec}
    folder = local_folder(spec)
    model = f"{prefix}<folder>" if folder is not None else spec
    return {"model": model, "model_revision": revision}


def model_revision(spec: str, resolved: str | None) -> str | None:
    """The revision a store records: a local folder's content hash, else what the loader
    resolved (a hub commit) or the --revision given."""
    folder = local_folder(spec)
    if folder is not None:
        return folder_hash(folder)
    return resolved

