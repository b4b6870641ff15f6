"""Save and load SAE checkpoints: `cfg.json` + `sae.safetensors` (docs/data-contract.md)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_save

from sae_core.config import SAEConfig
from sae_core.contract import SAESCOPE_VERSION, SCHEMA_VERSION, atomic_write_bytes, atomic_write_json, git_commit, read_manifest
from sae_core.errors import ConfigError, FormatError
from sae_core.model import SparseAutoencoder

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae.safetensors"
_RUNTIME_BUFFERS = ("threshold_n",)


def save(
    sae: SparseAutoencoder,
    dpath: str | Path,
    *,
    train_cfg: object | None = None,
    store: dict | None = None,
    n_tokens_trained: int = 0,
    metrics: dict | None = None,
) -> Path:
    """Write the checkpoint folder; weights first, cfg.json last, so cfg.json marks completeness."""
    dpath = Path(dpath)
    tensors = {k: v.detach().float().contiguous().cpu() for k, v in sae.state_dict().items() if k not in _RUNTIME_BUFFERS}
    atomic_write_bytes(dpath / WEIGHTS_FILE, safetensors_save(tensors))
    cfg = {
        "schema_version": SCHEMA_VERSION,
        "kind": "sae",
        "sae": dataclasses.asdict(sae.cfg),
        "input_scale": float(sae.input_scale),
        "train": dataclasses.asdict(train_cfg) if dataclasses.is_dataclass(train_cfg) else train_cfg,
        "store": store,
        "n_tokens_trained": int(n_tokens_trained),
        "metrics": metrics or {},
        "saescope_version": SAESCOPE_VERSION,
        "git_commit": git_commit(),
    }
    atomic_write_json(dpath / CFG_FILE, cfg)
    return dpath


def read_cfg(dpath: str | Path) -> dict:
    return read_manifest(Path(dpath) / CFG_FILE, "sae")


def load(path: str | Path, device: str | torch.device = "cpu") -> SparseAutoencoder:
    """Load a saescope checkpoint, or one saved by SAELens, sparsify, saev or dictionary_learning."""
    path = Path(path)
    if not path.exists():
        raise FormatError(f"{path}: no such SAE checkpoint")
    if path.is_dir() and (path / CFG_FILE).exists() and _is_saescope_cfg(path / CFG_FILE):
        return _load_own(path).to(device)
    from sae_core.interop import load_foreign  # foreign formats only when needed

    return load_foreign(path).to(device)


def _is_saescope_cfg(fpath: Path) -> bool:
    try:
        return json.loads(fpath.read_text()).get("kind") == "sae"
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        # A corrupt cfg.json beside our weights file is ours: let read_cfg say it is corrupt.
        return (fpath.parent / WEIGHTS_FILE).exists()


def _load_own(dpath: Path) -> SparseAutoencoder:
    cfg = read_cfg(dpath)
    try:
        sae_cfg = SAEConfig(**cfg["sae"])
    except (TypeError, ConfigError) as e:
        raise FormatError(f"{dpath / CFG_FILE}: invalid SAE config ({e})") from None
    sae = SparseAutoencoder(sae_cfg)
    try:
        tensors = load_file(dpath / WEIGHTS_FILE)
    except (OSError, SafetensorError) as e:
        raise FormatError(f"{dpath / WEIGHTS_FILE}: missing or corrupt weights ({e})") from None
    missing, unexpected = sae.load_state_dict(tensors, strict=False)
    missing = [m for m in missing if m not in _RUNTIME_BUFFERS]
    if missing or unexpected:
        raise FormatError(f"{dpath / WEIGHTS_FILE}: weights do not match the {sae_cfg.arch} config (missing {missing}, unexpected {unexpected})")
    return sae
