"""The site folder a publish writes: content-compared writes, a manifest of file hashes, stale-file removal.

Re-publishing an unchanged index must rewrite nothing, so every file is hashed first and written only
when its hash differs from the manifest's (or the file is missing or has another size). Files a
previous publish wrote that this one did not are removed; files the manifest never listed (a
CNAME, a README the user added) are left alone.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from sae_core.contract import SCHEMA_VERSION, atomic_write_json
from sae_core.errors import ConfigError

MANIFEST_NAME = ".saescope-site.json"
SITE_KIND = "site"


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:24]


def read_site_manifest(out_dpath: Path) -> dict:
    """The previous publish's manifest ({} when there was none, or it is unreadable)."""
    fpath = out_dpath / MANIFEST_NAME
    try:
        doc = json.loads(fpath.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) and doc.get("kind") == SITE_KIND else {}


def check_out_dpath(out_dpath: Path) -> None:
    """Refuse to publish into a non-empty folder that no publish wrote: stale removal could surprise."""
    if out_dpath.exists() and not out_dpath.is_dir():
        raise ConfigError(f"{out_dpath}: is a file; pass a folder for the site")
    if out_dpath.is_dir() and any(out_dpath.iterdir()) and not (out_dpath / MANIFEST_NAME).is_file():
        raise ConfigError(f"{out_dpath}: folder is not empty and holds no saescope site; choose an empty or new folder")


def write_if_changed(root: Path, rel: str, data: bytes, old: dict[str, list]) -> tuple[str, bool]:
    """Write `root/rel` unless the manifest already records this content at this size there.

    Renamed into place from a temporary file (never half a page); not fsynced per file, because a
    site has ~100k small files and the manifest, written last and synced, is what marks a publish done.
    """
    digest = content_hash(data)
    fpath = root / rel
    prev = old.get(rel)
    if prev and prev[0] == digest and prev[1] == len(data):
        try:
            if fpath.stat().st_size == len(data):
                return digest, False
        except OSError:
            pass
    parent = str(fpath.parent)
    if parent not in _MADE:
        os.makedirs(parent, exist_ok=True)
        _MADE.add(parent)
    # one writer per path at a time (workers own disjoint pages), so a pid names the temporary file;
    # mkstemp's random names cost a third of a write on a site of 300k small files
    tmp = f"{parent}/.{fpath.name}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, fpath)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest, True


_MADE: set[str] = set()
"""Folders this process made or found: a publish writes ~4 files per folder and asks once.
SiteWriter.open and .finish forget them (folders may be removed between publishes)."""


@dataclass
class SiteWriter:
    """Collects what a publish writes; `finish` removes stale files and writes the manifest."""

    root: Path
    old: dict[str, list] = field(default_factory=dict)
    files: dict[str, list] = field(default_factory=dict)  # rel -> [hash, size]
    written: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, root: Path) -> SiteWriter:
        check_out_dpath(root)
        root.mkdir(parents=True, exist_ok=True)
        _MADE.clear()
        return cls(root=root, old=read_site_manifest(root).get("files", {}))

    def write(self, rel: str, data: bytes) -> None:
        digest, wrote = write_if_changed(self.root, rel, data, self.old)
        self.record(rel, digest, len(data), wrote)

    def record(self, rel: str, digest: str, size: int, wrote: bool) -> None:
        """Account for a file written elsewhere (by a worker process)."""
        self.files[rel] = [digest, size]
        if wrote:
            self.written.append(rel)

    def finish(self, meta: dict) -> list[str]:
        """Remove files the previous publish wrote and this one did not; returns their paths."""
        stale = sorted(set(self.old) - set(self.files))
        _MADE.clear()
        for rel in stale:
            (self.root / rel).unlink(missing_ok=True)
            _prune_empty(self.root, (self.root / rel).parent)
        atomic_write_json(self.root / MANIFEST_NAME, {
            "kind": SITE_KIND, "schema_version": SCHEMA_VERSION, **meta, "files": self.files})
        return stale

    @property
    def n_bytes(self) -> int:
        return sum(size for _, size in self.files.values())


def _prune_empty(root: Path, dpath: Path) -> None:
    while dpath != root and dpath.is_relative_to(root):
        try:
            dpath.rmdir()
        except OSError:
            return
        dpath = dpath.parent
