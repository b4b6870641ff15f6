"""`detect(path)`: which library saved the SAE checkpoint at `path`, decided from its files alone.

The one place that knows the checkpoint formats' file names, so the saescope loader
(`sae_core.checkpoint`), the foreign loaders (`sae_core.interop`) and `saescope info` agree on
what a path is. It reads at most a JSON header; loading is the loaders' job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sae_core.errors import FormatError

Format = Literal["saescope", "saelens", "sparsify", "saev", "dictionary_learning"]

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae.safetensors"  # saescope's and sparsify's weights file
SAELENS_WEIGHTS = "sae_weights.safetensors"
DICTIONARY_LEARNING_WEIGHTS = "ae.pt"

SUPPORTED_FORMATS = (
    "saescope (cfg.json + sae.safetensors), "
    "SAELens (cfg.json + sae_weights.safetensors), "
    "EleutherAI sparsify (cfg.json + sae.safetensors), "
    "saev (a .pt file that starts with a JSON header line), "
    "dictionary_learning (ae.pt, optionally with config.json)"
)


@dataclass(frozen=True)
class Detected:
    format: Format
    target: Path
    """What the format's loader reads: the checkpoint folder, or the weights file (saev,
    dictionary_learning)."""


def detect(path: str | Path) -> Detected | None:
    """The format of the checkpoint at `path` (a folder or one of its files), or None when no
    format matches. A folder holding several checkpoints is a FormatError asking for one."""
    path = Path(path)
    if not path.exists():
        raise FormatError(f"{path}: no such SAE checkpoint")
    if path.is_file():
        return _detect_file(path)
    return _detect_dir(path) if path.is_dir() else None


def _detect_file(path: Path) -> Detected | None:
    name = path.name
    if name in (CFG_FILE, WEIGHTS_FILE) and is_saescope_dir(path.parent):
        return Detected("saescope", path.parent)
    if name == SAELENS_WEIGHTS:
        return Detected("saelens", path.parent)
    if name == WEIGHTS_FILE:
        return Detected("sparsify", path.parent)
    if name == CFG_FILE:
        return _detect_dir(path.parent)
    if name == "config.json" and (path.parent / DICTIONARY_LEARNING_WEIGHTS).exists():
        return Detected("dictionary_learning", path.parent / DICTIONARY_LEARNING_WEIGHTS)
    if starts_with_json_line(path):
        return Detected("saev", path)
    if path.suffix in (".pt", ".pth"):
        return Detected("dictionary_learning", path)
    return None


def _detect_dir(path: Path) -> Detected | None:
    if is_saescope_dir(path):
        return Detected("saescope", path)
    if (path / SAELENS_WEIGHTS).exists():
        return Detected("saelens", path)
    if (path / WEIGHTS_FILE).exists() and (path / CFG_FILE).exists():
        return Detected("sparsify", path)
    if (path / DICTIONARY_LEARNING_WEIGHTS).exists():
        return Detected("dictionary_learning", path / DICTIONARY_LEARNING_WEIGHTS)
    pts = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".pt", ".pth") and starts_with_json_line(p))
    if len(pts) == 1:
        return Detected("saev", pts[0])
    candidates = pts or sorted(p for p in path.iterdir() if p.is_dir() and _looks_like_checkpoint(p))
    if candidates:
        names = ", ".join(p.name for p in candidates[:10])
        raise FormatError(f"{path}: holds several SAEs ({names}); pass one of them")
    return None


def is_saescope_dir(dpath: Path) -> bool:
    """A folder with a cfg.json of kind "sae"; a cfg.json that cannot be read or parsed (or is a
    folder), beside our weights file, counts as ours too, so the saescope reader can say what is wrong."""
    fpath = dpath / CFG_FILE
    if not fpath.exists():
        return False
    try:
        obj = json.loads(fpath.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return (dpath / WEIGHTS_FILE).exists()
    return isinstance(obj, dict) and obj.get("kind") == "sae"


def _looks_like_checkpoint(dpath: Path) -> bool:
    return any((dpath / n).exists() for n in (SAELENS_WEIGHTS, WEIGHTS_FILE, DICTIONARY_LEARNING_WEIGHTS))


def starts_with_json_line(fpath: Path) -> bool:
    """saev's files begin with one line of JSON (the header) before the torch payload."""
    try:
        with open(fpath, "rb") as f:
            if f.read(1) != b"{":
                return False
            f.seek(0)
            header = json.loads(f.readline())
    except (OSError, ValueError):
        return False
    return isinstance(header, dict)
