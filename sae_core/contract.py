"""Constants and helpers of the on-disk contract (docs/data-contract.md).

Everything that writes or reads a saescope file goes through here for the schema version,
atomic writes and content-addressed folder names, so the three parts cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from sae_core.errors import FormatError

SCHEMA_VERSION = 6
"""Bump together with the version line of docs/data-contract.md on every format change."""

FORMAT_SINCE = {"dataset": 3, "activation_store": 3, "activation_store_part": 3, "sae": 3, "index": 6}
"""Per kind of file, the schema version that last changed its format. Readers accept any version
from there up to SCHEMA_VERSION and folder names hash it, so a change to one kind (say, the
index) neither orphans nor re-keys the others (stores can cost GPU hours)."""

SAESCOPE_VERSION = "0.1.0"


def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace: the text that content hashes are taken over."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def short_hash(obj: Any, n_chars: int = 12) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:n_chars]


def folder_id(slug: str, cfg: Any, kind: str) -> str:
    """`<slug>-<hash>`: readable; identical configs map to the same folder, and a new format of
    this kind to a new one (old folders stay readable by the version that wrote them)."""
    clean = "".join(c if c.isalnum() or c in "-_." else "-" for c in slug).strip("-")[:40]
    return f"{clean or 'run'}-{short_hash({'cfg': cfg, 'schema_version': FORMAT_SINCE[kind]})}"


def atomic_write_bytes(fpath: Path, data: bytes) -> None:
    """Write to a temp file in the same folder and rename, so readers never see half a file."""
    fpath = Path(fpath)
    fpath.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{fpath.name}.", suffix=".tmp", dir=fpath.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; files are shared like any other output
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, fpath)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process umask (only readable by setting it; restored at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_json(fpath: Path, obj: Any) -> None:
    atomic_write_bytes(fpath, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def read_manifest(fpath: Path, kind: str) -> dict:
    """Read a JSON manifest, checking its kind and schema version."""
    fpath = Path(fpath)
    if not fpath.is_file():
        raise FormatError(f"{fpath}: not found; is this a saescope {kind.replace('_', ' ')} folder?")
    try:
        obj = json.loads(fpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FormatError(f"{fpath}: corrupt JSON ({e.msg if hasattr(e, 'msg') else e})") from None
    if not isinstance(obj, dict) or obj.get("kind") != kind:
        raise FormatError(f"{fpath}: expected a saescope {kind!r} manifest, found kind={obj.get('kind') if isinstance(obj, dict) else None!r}")
    check_version(obj.get("schema_version"), kind, fpath, "re-run the job that wrote it")
    return obj


def check_version(version: Any, kind: str, where: Path, fix: str) -> None:
    """Refuse a file whose schema version this saescope cannot read: older than its kind's last
    format change (`fix` says how to rewrite it), newer than SCHEMA_VERSION, or not an integer."""
    oldest = FORMAT_SINCE[kind]
    if isinstance(version, int) and not isinstance(version, bool) and oldest <= version <= SCHEMA_VERSION:
        return
    newer = isinstance(version, int) and version > SCHEMA_VERSION
    raise FormatError(f"{where}: {'index ' if kind == 'index' else ''}schema version {version!r} is not supported "
                      f"(this saescope reads {kind.replace('_', ' ')} files of versions {oldest}..{SCHEMA_VERSION}); "
                      f"{'upgrade saescope' if newer else fix}")


DATA_ROOT_FOLDERS = ("datasets", "stores", "saes", "index")
"""The folders of a data root (docs/data-contract.md, Folder layout)."""


def data_root_of(dpath: Path) -> Path | None:
    """The data root that holds `dpath` (the folder above its `datasets/`, `stores/`, `saes/` or
    `index/` ancestor), or None when `dpath` is not inside one."""
    dpath = Path(os.path.abspath(dpath))
    for parent in [dpath, *dpath.parents]:
        if parent.name in DATA_ROOT_FOLDERS and parent.parent != parent:
            return parent.parent
    return None


def portable_path(target: str | Path, base_dpath: str | Path) -> str:
    """How a file in `base_dpath` records `target`: relative to `base_dpath` when both lie in the
    same data root (so a copied or moved `data/` folder still works), absolute otherwise."""
    target_abs = Path(os.path.abspath(target))
    root = data_root_of(base_dpath)
    if root is not None and target_abs.is_relative_to(root):
        return os.path.relpath(target_abs, os.path.abspath(base_dpath))
    return str(target_abs)


def resolve_recorded(recorded: str | Path, base_dpath: str | Path) -> Path:
    """The path a file in `base_dpath` recorded with `portable_path` (or an absolute one)."""
    recorded = Path(recorded)
    return recorded if recorded.is_absolute() else Path(os.path.normpath(Path(base_dpath) / recorded))


def sha256_file(fpath: Path, chunk_bytes: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in chunks (shards can be larger than memory)."""
    h = hashlib.sha256()
    with open(fpath, "rb") as f:
        while chunk := f.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()


def git_commit() -> str | None:
    """Commit of the saescope source tree, recorded in checkpoints for provenance."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
