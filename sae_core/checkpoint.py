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
from sae_core.errors import ConfigError, DataError, FormatError
from sae_core.model import SparseAutoencoder
from sae_core.validate import is_count, short_repr

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
    """cfg.json, with the objects that readers index into checked, so a hand-edited file is a
    one-line FormatError here instead of a KeyError or AttributeError in whatever reads it next."""
    fpath = Path(dpath) / CFG_FILE
    cfg = read_manifest(fpath, "sae")
    for key in ("sae", "train", "store", "metrics"):
        value = cfg.get(key)
        if not isinstance(value, dict) and (key == "sae" or value is not None):
            found = "it is missing" if key not in cfg else f"found {short_repr(value)}"
            want = "the SAE config object" if key == "sae" else "an object or null"
            raise FormatError(f"{fpath}: {key!r} must be {want}, {found}; fix it or retrain (see docs/data-contract.md)")
    n_tokens = cfg.get("n_tokens_trained", 0)
    if not is_count(n_tokens):
        raise FormatError(f"{fpath}: 'n_tokens_trained' must be an integer >= 0, found {short_repr(n_tokens)}; fix it or retrain")
    return cfg


def load(path: str | Path, device: str | torch.device = "cpu") -> SparseAutoencoder:
    """Load a saescope checkpoint, or one saved by SAELens, sparsify, saev or dictionary_learning."""
    path = Path(path)
    if not path.exists():
        raise FormatError(f"{path}: no such SAE checkpoint")
    if path.is_dir() and (path / CFG_FILE).exists() and _is_saescope_cfg(path / CFG_FILE):
        return _load_own(path).to(device)
    from sae_core.interop import load_foreign  # foreign formats only when needed

    sae = load_foreign(path)
    _check_finite(sae.state_dict(), path)
    return sae.to(device)


def _is_saescope_cfg(fpath: Path) -> bool:
    try:
        return json.loads(fpath.read_text()).get("kind") == "sae"
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        # A corrupt cfg.json beside our weights file is ours: let read_cfg say it is corrupt.
        return (fpath.parent / WEIGHTS_FILE).exists()


def _load_own(dpath: Path) -> SparseAutoencoder:
    cfg = read_cfg(dpath)
    try:
        sae_cfg = SAEConfig(**cfg["sae"])
        if min(sae_cfg.d_in, sae_cfg.d_sae) <= 0:
            raise ConfigError(f"d_in={sae_cfg.d_in} and d_sae={sae_cfg.d_sae} must be positive in a saved checkpoint")
        sae = SparseAutoencoder(sae_cfg)
    except (TypeError, ValueError, ConfigError) as e:
        raise FormatError(f"{dpath / CFG_FILE}: invalid SAE config ({e})") from None
    try:
        tensors = load_file(dpath / WEIGHTS_FILE)
    except (OSError, SafetensorError) as e:
        raise FormatError(f"{dpath / WEIGHTS_FILE}: missing or corrupt weights ({e})") from None
    _check_weights(sae, tensors, dpath / WEIGHTS_FILE)
    sae.load_state_dict(tensors, strict=False)
    return sae


def _check_weights(sae: SparseAutoencoder, tensors: dict[str, torch.Tensor], fpath: Path) -> None:
    """The weights must be exactly the tensors, with the shapes, that cfg.json's config needs (a
    cfg.json from another run would otherwise fail in load_state_dict), and finite: NaN/inf weights
    load fine but make every activation NaN in training, indexing and the explorer."""
    c = sae.cfg
    expected = {k: v for k, v in sae.state_dict().items() if k not in _RUNTIME_BUFFERS}
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise FormatError(f"{fpath}: weights do not match the {c.arch} config (missing {missing}, unexpected {unexpected}); "
                          "the two files come from different runs: retrain or restore the pair")
    for name, want in expected.items():
        if tensors[name].shape != want.shape:
            raise FormatError(f"{fpath}: {name} has shape {list(tensors[name].shape)} but cfg.json (d_in={c.d_in}, d_sae={c.d_sae}) "
                              f"needs {list(want.shape)}; the two files come from different runs: retrain or restore the pair")
    _check_finite(tensors, fpath)


def _check_finite(tensors: dict[str, torch.Tensor], fpath: Path) -> None:
    bad = [name for name, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise DataError(f"{fpath}: weights contain NaN or inf ({', '.join(bad)}); the run diverged — retrain with a lower --lr")
